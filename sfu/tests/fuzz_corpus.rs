//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) on stable, through the same
//! functions the `cargo fuzz` targets call, so every input the fuzzer kept stays a regression
//! test. A missing or empty corpus fails: a replay that tests nothing must not pass.

use groupcall_sfu::fuzz;

#[path = "../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str) {
    shared::replay(target, fuzz::run);
}

#[test]
fn join_payload_corpus() {
    replay("join_payload");
}

#[test]
fn constraints_corpus() {
    replay("constraints");
}

#[test]
fn seeds_pass_their_targets_and_each_target_calls_its_function() {
    shared::check_seeds("groupcall_sfu", fuzz::TARGETS, fuzz::seeds, fuzz::run);
}

/// Writes the seeds into the corpora: `cargo test -p groupcall-sfu --test fuzz_corpus --
/// --ignored write_seeds`, before fuzzing from scratch (fuzz/README.md).
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seeds() {
    shared::write_seeds(fuzz::TARGETS, fuzz::seeds);
}
