//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) on stable, through the same
//! functions the `cargo fuzz` targets call, so every input the fuzzer kept stays a regression
//! test. A missing or empty corpus fails: a replay that tests nothing must not pass.

use groupcall_signaling::fuzz;

#[path = "../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str) {
    shared::replay(target, fuzz::run);
}

#[test]
fn stdio_line_corpus() {
    replay("stdio_line");
}

#[test]
fn sse_event_corpus() {
    replay("sse_event");
}

#[test]
fn tl_updates_corpus() {
    replay("tl_updates");
}

#[test]
fn seeds_pass_their_targets_and_each_target_calls_its_function() {
    shared::check_seeds("groupcall_signaling", fuzz::TARGETS, all_seeds, fuzz::run);
}

/// Writes the seeds into the corpora: `cargo test -p groupcall-signaling --test fuzz_corpus --
/// --ignored write_seeds`, before fuzzing from scratch (fuzz/README.md).
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seeds() {
    shared::write_seeds(fuzz::TARGETS, all_seeds);
}

/// The crate's seeds, plus the SSE ones: event streams as the local server encodes them (its
/// own update type, framed as axum frames server-sent events), which only this test can build
/// since the server is a dev-dependency.
fn all_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut seeds = fuzz::seeds(target);
    if target == "sse_event" {
        seeds.extend(
            sse_seeds()
                .into_iter()
                .enumerate()
                .map(|(i, d)| (format!("seed-sse_event-{i}"), d)),
        );
    }
    seeds
}

fn sse_seeds() -> Vec<Vec<u8>> {
    use groupcall_sfu::calls::{Calls, CreateCall, JoinRequest, Update};
    let id = groupcall_media::LocalIdentity::generate().unwrap();
    let payload = groupcall_media::JoinPayload::new(&id, groupcall_media::VideoPublish::Camera);
    let mut calls = Calls::new();
    let call = calls
        .create(
            0,
            &CreateCall {
                peer: 1,
                title: Some("fuzz".into()),
                schedule_date: None,
                rtmp_stream: false,
            },
        )
        .unwrap();
    let answer = groupcall_media::ServerAnswer::parse(
        std::str::from_utf8(&groupcall_media::fuzz::seeds("answer")[0].1).unwrap(),
    )
    .unwrap()
    .into_rtc()
    .unwrap();
    let mut updates = vec![Update::Call { call: call.clone() }];
    for (peer, ssrc) in [(1_i64, payload.audio_ssrc()), (2, 0x8000_0001)] {
        let mut p = payload.clone();
        p.ssrc = groupcall_media::payload::WireSsrc(ssrc);
        p.ssrc_groups.clear();
        let req = JoinRequest {
            peer,
            params: p.to_json(),
            ..JoinRequest::default()
        };
        let out = calls
            .join(1, call.id, &req, |_| Ok(answer.clone()))
            .unwrap();
        updates.extend(out.updates);
    }
    let out = calls.leave(call.id, 2, 0x8000_0001).unwrap();
    updates.extend(out.updates);
    let frame = |u: &Update| format!("data: {}\n\n", serde_json::to_string(u).unwrap());
    let mut seeds: Vec<Vec<u8>> = updates.iter().map(|u| frame(u).into_bytes()).collect();
    // A whole stream: keep-alive comments, CRLF line ends, an event over two data lines.
    let mut stream = String::from(":\n\n");
    for u in &updates {
        stream.push_str(&frame(u).replace('\n', "\r\n"));
    }
    stream.push_str("event: update\ndata: {\"type\":\"call\",\ndata: \"call\":{\"id\":1,\"access_hash\":2}}\n\n");
    seeds.push(stream.into_bytes());
    seeds
}
