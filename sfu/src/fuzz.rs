//! Fuzz target bodies, shared by the `cargo fuzz` target in `fuzz/` and the stable replay test
//! (`tests/fuzz_corpus.rs`), so that the two cannot drift. Not part of the API.

use std::cell::RefCell;
use std::time::Instant;

use groupcall_media::{JoinPayload, LocalIdentity, RemotePeer, ServerAnswer, VideoPublish};

use crate::calls::{Calls, CreateCall, JoinRequest};
use crate::forwarder::{Forwarder, Key};
use crate::Error;

/// The fuzz targets this crate implements, as named in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["join_payload", "constraints"];

/// Runs `target` on `data`. Unknown names panic: a replay must not silently test nothing.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "join_payload" => join_payload(data),
        "constraints" => constraints(data),
        other => panic!("no fuzz target {other:?} in groupcall-sfu"),
    }
}

thread_local! {
    /// Sans-IO: building one binds nothing. Its certificate is the slow part, so it is kept.
    static FORWARDER: RefCell<Forwarder> = RefCell::new(
        Forwarder::new("127.0.0.1:40000".parse().expect("an address"), groupcall_media::TransportConfig::server())
            .expect("a forwarder"),
    );
}

/// A join payload (`joinGroupCall.params`, a JSON string in the control API, so UTF-8) through
/// a real join on a fresh call: the control plane's parse and checks, then, as the media plane
/// does, an answer and a transport for the participant. A payload the control plane accepts
/// must connect, re-serialise to itself, and get an answer a client can use.
pub fn join_payload(data: &[u8]) {
    let Ok(params) = std::str::from_utf8(data) else {
        return;
    };
    let mut calls = Calls::new();
    let call = calls
        .create(
            0,
            &CreateCall {
                peer: 1,
                title: None,
                schedule_date: None,
                rtmp_stream: false,
            },
        )
        .expect("a call");
    let req = JoinRequest {
        peer: 2,
        params: params.to_owned(),
        ..JoinRequest::default()
    };
    FORWARDER.with(|f| {
        let mut f = f.borrow_mut();
        let now = Instant::now();
        let mut accepted = None;
        let joined = calls.join(0, call.id, &req, |p| {
            accepted = Some(p.clone());
            let (ice, answer) = f.prepare_answer(p, crate::forwarder::Role::Main);
            let key = Key {
                call: call.id.0,
                source: p.audio_ssrc(),
            };
            f.add(now, key, p, ice, crate::forwarder::Role::Main)
                .map_err(|e| Error::media(format!("{e}")))?;
            Ok(answer)
        });
        let Ok(joined) = joined else {
            f.remove_call(now, call.id.0);
            return;
        };
        f.remove_call(now, call.id.0);
        let p = accepted.expect("an accepted join connected");
        assert_eq!(joined.value.participant.source, p.audio_ssrc());
        assert_eq!(
            JoinPayload::parse(&p.to_json()).expect("a written payload parses"),
            p
        );
        let answer = ServerAnswer::parse(&joined.value.params)
            .and_then(ServerAnswer::into_rtc)
            .expect("the answer parses");
        RemotePeer::from_answer(&answer).expect("a client can use the answer");
    });
}

/// Starting inputs: join payloads as the engine writes them (audio only, camera, screen).
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    if target == "constraints" {
        return [
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"endpoint-7":{"maxHeight":720,"minHeight":180}},"defaultConstraints":{"maxHeight":0},"onStageEndpoints":[]}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{},"defaultConstraints":{"maxHeight":360},"onStageEndpoints":["a"]}"#,
            r#"{"colibriClass":"EndpointStats","x":1}"#,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("seed-constraints-{i}"), t.as_bytes().to_vec()))
        .collect();
    }
    if target != "join_payload" {
        return Vec::new();
    }
    let id = LocalIdentity::generate().expect("an identity");
    [
        VideoPublish::None,
        VideoPublish::Camera,
        VideoPublish::Screen,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, v)| {
        (
            format!("seed-join_payload-{i}"),
            JoinPayload::new(&id, v).to_json().into_bytes(),
        )
    })
    .collect()
}

/// A data-channel message (UTF-8 text, as the channel hands them over) through the server's
/// constraints parser and the layer choice. What parses stays within the parser's limits and
/// picks a layer that exists.
pub fn constraints(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(crate::constraints::ClientMessage::Receiver(c)) = crate::constraints::parse(text) {
        assert!(c.max_heights.len() <= crate::constraints::MAX_ENDPOINTS);
        for (endpoint, height) in &c.max_heights {
            assert!(endpoint.len() <= crate::constraints::MAX_ENDPOINT_LEN);
            assert_eq!(c.max_height(endpoint), *height);
            for layers in 1..=4 {
                if let Some(l) = crate::constraints::layer_for_height(*height, layers) {
                    assert!(l < layers);
                }
            }
        }
    }
}
