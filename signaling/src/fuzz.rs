//! Fuzz target bodies, shared by the `cargo fuzz` targets in `fuzz/` and the stable replay test
//! (`tests/fuzz_corpus.rs`), so that the two cannot drift. Each takes arbitrary bytes, must not
//! panic, and panics only when an invariant the backends rely on is broken. Not part of the
//! API.

use grammers_client::tl::{self, Serializable};
use serde_json::{json, Value};

/// The fuzz targets this crate implements, as named in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["stdio_line", "sse_event", "tl_updates"];

/// Runs `target` on `data`. Unknown names panic: a replay must not silently test nothing.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "stdio_line" => stdio_line(data),
        "sse_event" => sse_event(data),
        "tl_updates" => tl_updates(data),
        other => panic!("no fuzz target {other:?} in groupcall-signaling"),
    }
}

/// The stdio backend's input: `data` split into lines as its reader splits them, each through
/// the line handler (answers, errors, rosters, commands).
pub fn stdio_line(data: &[u8]) {
    crate::stdio::fuzz_lines(data);
}

/// The local backend's server-sent-event stream: the SSE parser, then each event's JSON as an
/// update.
pub fn sse_event(data: &[u8]) {
    crate::local::fuzz_event_stream(data);
}

/// The Telegram backend's updates: TL bytes to grammers' `Updates`, then the conversion into
/// `SignalingUpdate`s and the join-reply reading.
pub fn tl_updates(data: &[u8]) {
    crate::telegram::fuzz_updates(data);
}

/// Starting inputs for `target` built with the real writers: `(name, bytes)`. The SSE seeds
/// come from the local server's own update encoder and are built by the replay test, which
/// may depend on `groupcall-sfu`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "stdio_line" => stdio_seeds(),
        "tl_updates" => tl_seeds(),
        _ => Vec::new(),
    }
    .into_iter()
    .enumerate()
    .map(|(i, d)| (format!("seed-{target}-{i}"), d))
    .collect()
}

fn real_answer() -> String {
    let seeds = groupcall_media::fuzz::seeds("answer");
    let (_, json) = seeds.first().expect("groupcall-media has answer seeds");
    String::from_utf8(json.clone()).expect("answer JSON is UTF-8")
}

fn stdio_seeds() -> Vec<Vec<u8>> {
    let answer = real_answer();
    let answer_value: Value = serde_json::from_str(&answer).expect("answer JSON");
    let participants = json!({"participants": [
        {"source": 1111, "peer": 5, "left": false, "muted": true, "self": true},
        {"source": -5, "peer": -1_001_234_567_890_i64, "left": false},
        {"source": 4_294_967_295_u32, "peer": -42, "left": true},
    ]});
    let lines = [
        json!({ "answer": answer_value }),
        json!({ "answer": answer }),
        json!({"error": "GROUPCALL_SSRC_DUPLICATE_MUCH"}),
        json!({"error": {"type": "GROUPCALL_FORBIDDEN", "code": 403, "message": "no"}}),
        participants,
        json!({"discarded": true}),
        json!({"leave": true}),
        json!({"mute": false}),
    ];
    let mut out: Vec<Vec<u8>> = lines.iter().map(|l| l.to_string().into_bytes()).collect();
    // A session: several lines, CRLF and a blank one, as a bot might write them.
    let session = format!(
        "{}\r\n\n{}\n{}\n",
        lines[4],
        lines[1],
        json!({"participants": [{"source": 1111, "left": true}]})
    );
    out.push(session.into_bytes());
    out
}

fn tl_participant(
    peer: tl::enums::Peer,
    source: i32,
    left: bool,
) -> tl::enums::GroupCallParticipant {
    tl::types::GroupCallParticipant {
        muted: true,
        left,
        can_self_unmute: true,
        just_joined: !left,
        versioned: true,
        min: false,
        muted_by_you: false,
        volume_by_admin: false,
        is_self: source == 1111,
        video_joined: false,
        peer,
        date: 1_700_000_000,
        active_date: None,
        source,
        volume: Some(10_000),
        about: None,
        raise_hand_rating: None,
        video: Some(
            tl::types::GroupCallParticipantVideo {
                paused: false,
                endpoint: "endpoint-1".into(),
                source_groups: vec![tl::types::GroupCallParticipantVideoSourceGroup {
                    semantics: "SIM".into(),
                    sources: vec![source.wrapping_add(1), source.wrapping_add(3)],
                }
                .into()],
                audio_source: Some(source),
            }
            .into(),
        ),
        presentation: None,
        paid_stars_total: None,
    }
    .into()
}

fn tl_seeds() -> Vec<Vec<u8>> {
    let call: tl::enums::InputGroupCall = tl::types::InputGroupCall {
        id: 77,
        access_hash: 88,
    }
    .into();
    let participants: tl::enums::Update = tl::types::UpdateGroupCallParticipants {
        call,
        participants: vec![
            tl_participant(tl::types::PeerUser { user_id: 5 }.into(), 1111, false),
            tl_participant(tl::types::PeerChannel { channel_id: 99 }.into(), -7, true),
        ],
        version: 3,
    }
    .into();
    let connection: tl::enums::Update = tl::types::UpdateGroupCallConnection {
        presentation: false,
        params: tl::types::DataJson {
            data: real_answer(),
        }
        .into(),
    }
    .into();
    let discarded: tl::enums::Update = tl::types::UpdateGroupCall {
        live_story: false,
        peer: Some(tl::types::PeerChat { chat_id: 12 }.into()),
        call: tl::types::GroupCallDiscarded {
            id: 77,
            access_hash: 88,
            duration: 60,
        }
        .into(),
    }
    .into();
    let chats = vec![tl::types::ChannelForbidden {
        broadcast: false,
        megagroup: true,
        monoforum: false,
        id: 99,
        access_hash: 1234,
        title: "chat".into(),
        until_date: None,
    }
    .into()];
    let full = tl::enums::Updates::Updates(tl::types::Updates {
        updates: vec![participants, connection.clone()],
        users: vec![],
        chats,
        date: 1_700_000_000,
        seq: 0,
    });
    let short = tl::enums::Updates::UpdateShort(tl::types::UpdateShort {
        update: discarded,
        date: 1_700_000_001,
    });
    let single = tl::enums::Updates::UpdateShort(tl::types::UpdateShort {
        update: connection,
        date: 1_700_000_002,
    });
    vec![full.to_bytes(), short.to_bytes(), single.to_bytes()]
}
