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

/// A crate's seed builder: named inputs for a target.
pub type Seeds = fn(&str) -> Vec<(String, Vec<u8>)>;

/// Every target's seeds pass through `run`, and each `fuzz_targets/<target>.rs` calls
/// `<krate>::fuzz::<target>(`, so a target cannot quietly fuzz something else.
pub fn check_seeds(krate: &str, targets: &[&str], seeds: Seeds, run: fn(&str, &[u8])) {
    for target in targets {
        let seeds = seeds(target);
        assert!(seeds.len() >= 2, "{target}: only {} seeds", seeds.len());
        for (name, data) in &seeds {
            eprintln!("seed {name}");
            run(target, data);
        }
        let src = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        let call = format!("{krate}::fuzz::{target}(");
        assert!(
            text.contains(&call),
            "{} does not call {call}",
            src.display()
        );
    }
}

/// Writes every target's seeds into its corpus directory.
pub fn write_seeds(targets: &[&str], seeds: Seeds) {
    for target in targets {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds(target) {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
