//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) on stable, through the same
//! functions the `cargo fuzz` targets call, so every input the fuzzer kept stays a regression
//! test. A missing or empty corpus fails: a replay that tests nothing must not pass.

use groupcall_media::fuzz;

#[path = "../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str) {
    shared::replay(target, fuzz::run);
}

#[test]
fn rtp_corpus() {
    replay("rtp");
}

#[test]
fn rtcp_corpus() {
    replay("rtcp");
}

#[test]
fn stun_corpus() {
    replay("stun");
}

#[test]
fn dtls_corpus() {
    replay("dtls");
}

#[test]
fn answer_corpus() {
    replay("answer");
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
        let src = shared::fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{target}.rs"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            text.contains(&format!("groupcall_media::fuzz::{target}(")),
            "{} does not call groupcall_media::fuzz::{target}",
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
        let dir = shared::fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in fuzz::seeds(target) {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
