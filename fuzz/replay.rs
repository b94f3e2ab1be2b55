//! The corpus replay shared by the crates' `tests/fuzz_corpus.rs` (included with `#[path]`):
//! every committed input of a target goes through the same function the `cargo fuzz` target
//! calls. A missing or empty corpus fails: a replay that tests nothing must not pass.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "cannot read the corpus {}: {e}; it is committed with the fuzz targets (fuzz/README.md)",
            dir.display()
        )
    });
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus {} is empty: run the target and `cargo fuzz cmin` (fuzz/README.md)",
        dir.display()
    );
    files
}

/// Runs every input of `target`'s corpus through `run` (the crate's `fuzz::run`).
pub fn replay(target: &str, run: fn(&str, &[u8])) {
    let files = corpus(target);
    for (path, data) in &files {
        // Shown only if the run below panics: which input broke it.
        eprintln!("replaying {}", path.display());
        run(target, data);
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}
