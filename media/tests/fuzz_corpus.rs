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
fn datachannel_corpus() {
    replay("datachannel");
}

#[test]
fn seeds_pass_their_targets_and_each_target_calls_its_function() {
    shared::check_seeds("groupcall_media", fuzz::TARGETS, fuzz::seeds, fuzz::run);
}

/// Writes the seeds into the corpora: `cargo test -p groupcall-media --test fuzz_corpus --
/// --ignored write_seeds`, before fuzzing from scratch (fuzz/README.md).
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seeds() {
    shared::write_seeds(fuzz::TARGETS, fuzz::seeds);
}
