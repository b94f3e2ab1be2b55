//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) on stable, through the same
//! functions the `cargo fuzz` targets call, so every input the fuzzer kept stays a regression
//! test. A missing or empty corpus fails: a replay that tests nothing must not pass.

use std::path::{Path, PathBuf};

use groupcall_sfu::fuzz;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
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

fn replay(target: &str) {
    let files = corpus(target);
    for (path, data) in &files {
        // Shown only if the run below panics: which input broke it.
        eprintln!("replaying {}", path.display());
        fuzz::run(target, data);
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn join_payload_corpus() {
    replay("join_payload");
}

#[test]
fn seeds_pass_their_targets_and_each_target_calls_its_function() {
    for target in fuzz::TARGETS {
        let seeds = fuzz::seeds(target);
        assert!(seeds.len() >= 2, "{target}: only {} seeds", seeds.len());
        for (name, data) in &seeds {
            eprintln!("seed {name}");
            fuzz::run(target, data);
        }
        let src = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            text.contains(&format!("groupcall_sfu::fuzz::{target}(")),
            "{} does not call groupcall_sfu::fuzz::{target}",
            src.display()
        );
    }
}

/// Writes the seeds into the corpora: `cargo test -p groupcall-media --test fuzz_corpus --
/// --ignored write_seeds`, before fuzzing from scratch (fuzz/README.md).
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seeds() {
    for target in fuzz::TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in fuzz::seeds(target) {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
