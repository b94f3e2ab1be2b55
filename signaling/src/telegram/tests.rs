//! Golden byte tests of the seed requests, and flow tests of the Telegram backend against a
//! scripted invoker that replays TL-serialized replies and RPC errors.
//!
//! Expected constructor ids are written out as little-endian byte literals, not taken from
//! grammers, so a wrong constructor or flag bit in the generated code (or in our use of it)
//! would show.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grammers_client::sender::{InvocationError, RpcError};
use grammers_client::tl::{self, Deserializable, Serializable};
use groupcall_media::payload::{DtlsFingerprint, Setup, WireSsrc};
use groupcall_media::{JoinPayload, ServerAnswer};

use super::invoker::{BoxFuture, Invoker};
use super::{convert, read_reply, requests, TelegramSignaling};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::signaling::Signaling;
use crate::types::*;

// ---- byte helpers, written by hand ----

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}
fn le64(v: i64) -> [u8; 8] {
    v.to_le_bytes()
}
/// A TL `string`/`bytes` of fewer than 254 bytes: length byte, data, zero padding to 4.
fn tl_str(s: &[u8]) -> Vec<u8> {
    assert!(s.len() < 254);
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

const JOIN_GROUP_CALL: [u8; 4] = [0x57, 0x30, 0xb5, 0x8f]; // phone.joinGroupCall#8fb53057
const CREATE_GROUP_CALL: [u8; 4] = [0xd8, 0xc6, 0xcd, 0x48]; // phone.createGroupCall#48cdc6d8
const START_SCHEDULED: [u8; 4] = [0x42, 0xe3, 0x80, 0x56]; // phone.startScheduledGroupCall#5680e342
const GET_JOIN_AS: [u8; 4] = [0x3a, 0x21, 0x7c, 0xef]; // phone.getGroupCallJoinAs#ef7c213a
const INVITE: [u8; 4] = [0x60, 0x31, 0x39, 0x7b]; // phone.inviteToGroupCall#7b393160
const LEAVE: [u8; 4] = [0xf9, 0x77, 0x03, 0x50]; // phone.leaveGroupCall#500377f9
const EDIT: [u8; 4] = [0xbf, 0x3a, 0x27, 0xa5]; // phone.editGroupCallParticipant#a5273abf
const GET_PARTICIPANTS: [u8; 4] = [0xab, 0xd8, 0x58, 0xc5]; // phone.getGroupParticipants#c558d8ab
const INPUT_GROUP_CALL: [u8; 4] = [0x0f, 0x84, 0xaa, 0xd8]; // inputGroupCall#d8aa840f
const INPUT_GROUP_CALL_SLUG: [u8; 4] = [0x3f, 0x82, 0x06, 0xfe]; // inputGroupCallSlug#fe06823f
const INPUT_PEER_SELF: [u8; 4] = [0xc9, 0x7e, 0xa0, 0x7d]; // inputPeerSelf#7da07ec9
const INPUT_PEER_CHAT: [u8; 4] = [0xb9, 0x5c, 0xa9, 0x35]; // inputPeerChat#35a95cb9
const INPUT_PEER_CHANNEL: [u8; 4] = [0xfc, 0xbb, 0xbc, 0x27]; // inputPeerChannel#27bcbbfc
const INPUT_USER: [u8; 4] = [0xc6, 0x58, 0x11, 0xf2]; // inputUser#f21158c6
const DATA_JSON: [u8; 4] = [0x04, 0x8d, 0x74, 0x7d]; // dataJSON#7d748d04
const VECTOR: [u8; 4] = [0x15, 0xc4, 0xb5, 0x1c]; // vector#1cb5c415
const BOOL_TRUE: [u8; 4] = [0xb5, 0x75, 0x72, 0x99]; // boolTrue#997275b5

const CALL: CallId = CallId {
    id: 0x0102_0304_0506_0708,
    access_hash: -2,
};

fn call_bytes() -> Vec<u8> {
    [
        &INPUT_GROUP_CALL[..],
        &le64(CALL.id),
        &le64(CALL.access_hash),
    ]
    .concat()
}

// ---- golden tests ----

#[test]
fn join_and_leave_group_call_presentation() {
    let req = requests::join_presentation(&CallRef::Id(CALL), "{}".into());
    let want = [
        &[0xc4, 0x6b, 0xea, 0xcb][..], // phone.joinGroupCallPresentation#cbea6bc4
        &call_bytes(),
        &DATA_JSON,
        &tl_str(b"{}"),
    ]
    .concat();
    assert_eq!(req.to_bytes(), want);
    let req = requests::leave_presentation(&CallRef::Id(CALL));
    let want = [
        &[0x44, 0xd1, 0x50, 0x1c][..], // phone.leaveGroupCallPresentation#1c50d144
        &call_bytes(),
    ]
    .concat();
    assert_eq!(req.to_bytes(), want);
}

#[test]
fn join_group_call_muted_with_invite_hash() {
    let options = JoinOptions {
        muted: true,
        video_stopped: false,
        join_as: None,
        invite_hash: Some("abc".into()),
        conference: None,
    };
    let req = requests::join_group_call(
        &CallRef::Id(CALL),
        tl::enums::InputPeer::PeerSelf,
        "{}".into(),
        &options,
    );
    let want = [
        &JOIN_GROUP_CALL[..],
        &[0x03, 0, 0, 0], // flags: muted (bit 0) | invite_hash (bit 1)
        &call_bytes(),
        &INPUT_PEER_SELF,
        &tl_str(b"abc"),
        &DATA_JSON,
        &tl_str(b"{}"),
    ]
    .concat();
    assert_eq!(req.to_bytes(), want);
}

#[test]
fn join_group_call_unmuted_camera_off_as_channel_with_conference_key() {
    let options = JoinOptions {
        muted: false,
        video_stopped: true,
        join_as: None,
        invite_hash: None,
        conference: Some(ConferenceKey {
            public_key: [0xaa; 32],
            block: vec![1, 2, 3],
        }),
    };
    let join_as = tl::types::InputPeerChannel {
        channel_id: 77,
        access_hash: 99,
    }
    .into();
    let req = requests::join_group_call(&CallRef::Id(CALL), join_as, "{}".into(), &options);
    let want = [
        &JOIN_GROUP_CALL[..],
        &[0x0c, 0, 0, 0], // flags: video_stopped (bit 2) | public_key+block (bit 3)
        &call_bytes(),
        &INPUT_PEER_CHANNEL,
        &le64(77),
        &le64(99),
        &[0xaa; 32], // int256, raw
        &tl_str(&[1, 2, 3]),
        &DATA_JSON,
        &tl_str(b"{}"),
    ]
    .concat();
    assert_eq!(req.to_bytes(), want);
}

#[test]
fn join_group_call_every_flag_and_by_slug() {
    let options = JoinOptions {
        muted: true,
        video_stopped: true,
        join_as: None,
        invite_hash: Some("h".into()),
        conference: Some(ConferenceKey {
            public_key: [7; 32],
            block: vec![],
        }),
    };
    let req = requests::join_group_call(
        &CallRef::Slug("s1".into()),
        tl::enums::InputPeer::PeerSelf,
        "x".into(),
        &options,
    );
    let want = [
        &JOIN_GROUP_CALL[..],
        &[0x0f, 0, 0, 0], // bits 0, 1, 2, 3
        &INPUT_GROUP_CALL_SLUG,
        &tl_str(b"s1"),
        &INPUT_PEER_SELF,
        &tl_str(b"h"),
        &[7; 32],
        &tl_str(b""),
        &DATA_JSON,
        &tl_str(b"x"),
    ]
    .concat();
    assert_eq!(req.to_bytes(), want);
}

#[test]
fn create_group_call_flags_follow_the_parameters() {
    let peer = || tl::types::InputPeerChat { chat_id: 4321 }.into();
    let all = CreateCall {
        title: Some("Standup".into()),
        schedule_date: Some(0x6000_0000),
        rtmp_stream: true,
    };
    let want = [
        &CREATE_GROUP_CALL[..],
        &[0x07, 0, 0, 0], // title (bit 0) | schedule_date (bit 1) | rtmp_stream (bit 2)
        &INPUT_PEER_CHAT,
        &le64(4321),
        &le32(0x1234_5678), // random_id
        &tl_str(b"Standup"),
        &le32(0x6000_0000),
    ]
    .concat();
    assert_eq!(
        requests::create_group_call(peer(), 0x1234_5678, &all).to_bytes(),
        want
    );

    let none = CreateCall::default();
    let want = [
        &CREATE_GROUP_CALL[..],
        &[0, 0, 0, 0],
        &INPUT_PEER_CHAT,
        &le64(4321),
        &le32(5),
    ]
    .concat();
    assert_eq!(
        requests::create_group_call(peer(), 5, &none).to_bytes(),
        want
    );

    let only_schedule = CreateCall {
        schedule_date: Some(9),
        ..Default::default()
    };
    let bytes = requests::create_group_call(peer(), 5, &only_schedule).to_bytes();
    assert_eq!(&bytes[4..8], &[0x02, 0, 0, 0]);
}

#[test]
fn start_scheduled_join_as_and_invite() {
    assert_eq!(
        requests::start_scheduled(&CallRef::Id(CALL)).to_bytes(),
        [&START_SCHEDULED[..], &call_bytes()].concat()
    );

    let chat = tl::types::InputPeerChannel {
        channel_id: 77,
        access_hash: -99,
    };
    assert_eq!(
        requests::get_join_as(chat.into()).to_bytes(),
        [&GET_JOIN_AS[..], &INPUT_PEER_CHANNEL, &le64(77), &le64(-99)].concat()
    );

    let users = vec![tl::types::InputUser {
        user_id: 42,
        access_hash: 4242,
    }
    .into()];
    assert_eq!(
        requests::invite(&CallRef::Id(CALL), users).to_bytes(),
        [
            &INVITE[..],
            &call_bytes(),
            &VECTOR,
            &le32(1),
            &INPUT_USER,
            &le64(42),
            &le64(4242)
        ]
        .concat()
    );
}

#[test]
fn sources_go_back_on_the_wire_signed_and_edit_flags_are_per_field() {
    // 0xFFFF_FFFB is -5 as Telegram's `int`.
    assert_eq!(
        requests::leave(&CallRef::Id(CALL), 0xFFFF_FFFB).to_bytes(),
        [&LEAVE[..], &call_bytes(), &[0xfb, 0xff, 0xff, 0xff]].concat()
    );
    let edit = ParticipantEdit {
        volume: Some(15000),
        raise_hand: Some(true),
        ..Default::default()
    };
    assert_eq!(
        requests::edit_participant(&CallRef::Id(CALL), tl::enums::InputPeer::PeerSelf, &edit)
            .to_bytes(),
        [
            &EDIT[..],
            &[0x06, 0, 0, 0], // volume (bit 1) | raise_hand (bit 2)
            &call_bytes(),
            &INPUT_PEER_SELF,
            &le32(15000),
            &BOOL_TRUE,
        ]
        .concat()
    );
}

// ---- the scripted invoker ----

enum Reply {
    /// A TL-serialized result.
    Ok(Vec<u8>),
    /// A TL-serialized `rpc_error`, as it arrives in an `rpc_result`.
    Rpc(Vec<u8>),
}

struct Step {
    /// The constructor id the request must start with (little-endian bytes).
    expect: [u8; 4],
    reply: Reply,
}

#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    sent: Mutex<Vec<Vec<u8>>>,
    hashes: HashMap<PeerId, i64>,
}

impl Script {
    fn push(&self, expect: [u8; 4], reply: Reply) {
        self.steps.lock().unwrap().push_back(Step { expect, reply });
    }
    fn sent(&self) -> Vec<Vec<u8>> {
        self.sent.lock().unwrap().clone()
    }
    fn assert_done(&self) {
        assert!(
            self.steps.lock().unwrap().is_empty(),
            "scripted replies left unused"
        );
    }
}

impl Invoker for Arc<Script> {
    fn invoke(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, InvocationError>> {
        Box::pin(async move {
            self.sent.lock().unwrap().push(request.clone());
            let step = self
                .steps
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected request {:02x?}", &request[..4]));
            assert_eq!(
                request[..4],
                step.expect,
                "request constructor differs from the script"
            );
            match step.reply {
                Reply::Ok(bytes) => Ok(bytes),
                // What grammers does with an rpc_error it receives.
                Reply::Rpc(bytes) => {
                    let tl::enums::RpcError::Error(e) =
                        tl::enums::RpcError::from_bytes(&bytes).expect("scripted rpc_error");
                    Err(InvocationError::Rpc(RpcError::from(e)))
                }
            }
        })
    }

    fn cached_access_hash(&self, peer: PeerId) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move { self.hashes.get(&peer).copied() })
    }
}

fn backend(script: &Arc<Script>) -> TelegramSignaling {
    TelegramSignaling::from_invoker(Arc::new(Arc::clone(script)), RetryPolicy::default())
}

fn rpc(code: i32, message: &str) -> Reply {
    Reply::Rpc(
        tl::enums::RpcError::Error(tl::types::RpcError {
            error_code: code,
            error_message: message.into(),
        })
        .to_bytes(),
    )
}

fn updates(list: Vec<tl::enums::Update>) -> Reply {
    Reply::Ok(
        tl::enums::Updates::Updates(tl::types::Updates {
            updates: list,
            users: vec![],
            chats: vec![],
            date: 1_700_000_000,
            seq: 0,
        })
        .to_bytes(),
    )
}

const ANSWER: &str = r#"{"transport":{"ufrag":"srvufrag","pwd":"srvpwdsrvpwdsrvpwd","fingerprints":[{"hash":"sha-256","setup":"active","fingerprint":"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F"}],"candidates":[{"generation":"0","component":"1","protocol":"udp","port":"32000","ip":"91.108.9.103","foundation":"2","id":"c1","priority":"2130706431","type":"host","network":"0"}]}}"#;

fn connection(json: &str) -> tl::enums::Update {
    tl::types::UpdateGroupCallConnection {
        presentation: false,
        params: tl::types::DataJson { data: json.into() }.into(),
    }
    .into()
}

fn tl_participant(
    peer: tl::enums::Peer,
    source: i32,
    left: bool,
    is_self: bool,
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
        is_self,
        video_joined: false,
        peer,
        date: 1_700_000_000,
        active_date: None,
        source,
        volume: None,
        about: None,
        raise_hand_rating: None,
        video: None,
        presentation: None,
        paid_stars_total: None,
    }
    .into()
}

fn user_peer(id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id: id }.into()
}

fn participants_update(
    version: i32,
    list: Vec<tl::enums::GroupCallParticipant>,
) -> tl::enums::Update {
    tl::types::UpdateGroupCallParticipants {
        call: tl::types::InputGroupCall {
            id: CALL.id,
            access_hash: CALL.access_hash,
        }
        .into(),
        participants: list,
        version,
    }
    .into()
}

fn payload(ssrc: u32) -> JoinPayload {
    JoinPayload {
        fingerprints: vec![DtlsFingerprint {
            fingerprint: "AA:".repeat(31) + "AA",
            hash: "sha-256".into(),
            setup: Setup::Passive,
        }],
        pwd: "p".repeat(24),
        ssrc: WireSsrc(ssrc),
        ssrc_groups: vec![],
        ufrag: "uf01".into(),
    }
}

/// A factory that hands out SSRCs 1000, 1001, … and counts its calls.
fn counting_factory(
    calls: &Arc<Mutex<u32>>,
) -> impl FnMut() -> Result<JoinPayload, groupcall_media::Error> + Send + 'static {
    let calls = Arc::clone(calls);
    move || {
        let mut n = calls.lock().unwrap();
        let p = payload(1000 + *n);
        *n += 1;
        Ok(p)
    }
}

fn sent_payload_ssrc(request: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(request);
    let at = text
        .find("\"ssrc\":")
        .expect("the payload JSON travels in the request");
    text[at + 7..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect::<String>()
        .parse::<i64>()
        .unwrap() as u32
}

// ---- flow tests ----

#[tokio::test(start_paused = true)]
async fn join_finds_the_answer_in_the_returned_updates_and_the_stream_does_not_repeat_it() {
    let script = Arc::new(Script::default());
    script.push(
        JOIN_GROUP_CALL,
        updates(vec![
            participants_update(3, vec![tl_participant(user_peer(5), 1000, false, true)]),
            connection(ANSWER),
        ]),
    );
    let sig = backend(&script);
    let mut stream = sig.updates();
    let calls = Arc::new(Mutex::new(0));
    let joined = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap();
    script.assert_done();

    let ServerAnswer::Rtc(rtc) = &joined.answer else {
        panic!("expected an RTC answer, got {:?}", joined.answer)
    };
    assert_eq!(rtc.transport.ufrag, "srvufrag");
    assert_eq!(joined.answer_json, ANSWER);
    assert_eq!(joined.attempts, 1);
    assert_eq!(joined.payload.audio_ssrc(), 1000);
    assert_eq!(joined.call, Some(CALL));
    assert_eq!(
        joined.participant.as_ref().map(|p| p.peer),
        Some(PeerId::User(5))
    );
    // The payload JSON went out as `params`, and the default flags say muted + camera off.
    let sent = script.sent();
    assert_eq!(&sent[0][4..8], &[0x05, 0, 0, 0]);
    assert_eq!(sent_payload_ssrc(&sent[0]), 1000);

    // The same updates also come through the MTProto update loop.
    convert::dispatch(&sig.inner.hub, &connection(ANSWER));
    assert!(
        stream.try_next().is_none(),
        "the answer join returned must not come again as a new connection update"
    );
    // A different answer later (e.g. moved to stream mode) does come through.
    convert::dispatch(&sig.inner.hub, &connection(r#"{"stream":true}"#));
    assert!(matches!(
        stream.try_next(),
        Some(SignalingUpdate::Connection { answer, .. }) if *answer == ServerAnswer::Stream
    ));
}

#[tokio::test(start_paused = true)]
async fn join_takes_the_answer_from_the_update_stream_when_the_reply_lacks_it() {
    let script = Arc::new(Script::default());
    script.push(JOIN_GROUP_CALL, updates(vec![]));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let mut factory = counting_factory(&calls);
    let call = CallRef::Id(CALL);
    let options = JoinOptions::default();
    let join = sig.join(&call, &mut factory, &options);
    let deliver = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        convert::dispatch(&sig.inner.hub, &connection(ANSWER));
    };
    let (joined, ()) = tokio::join!(join, deliver);
    let joined = joined.unwrap();
    assert_eq!(joined.answer_json, ANSWER);

    // Nothing at all: a clear error after the policy's timeout, on virtual time.
    script.push(JOIN_GROUP_CALL, updates(vec![]));
    let start = tokio::time::Instant::now();
    let e = sig.join(&call, &mut factory, &options).await.unwrap_err();
    assert!(matches!(e, Error::NoAnswer { .. }), "{e}");
    assert_eq!(start.elapsed(), RetryPolicy::default().answer_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_conference_join_is_refused_before_anything_is_sent() {
    // Nothing is scripted: any request at all would panic in the invoker.
    let script = Arc::new(Script::default());
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    for join_as in [None, Some(PeerId::Channel(77))] {
        let options = JoinOptions {
            join_as,
            conference: Some(ConferenceKey {
                public_key: [0xaa; 32],
                block: vec![1, 2, 3],
            }),
            ..JoinOptions::default()
        };
        for call in [CallRef::Id(CALL), CallRef::Slug("s1".into())] {
            let e = sig
                .join(&call, &mut counting_factory(&calls), &options)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::ConferenceUnsupported), "{e:?}");
            assert!(
                e.to_string()
                    .contains("E2E conference calls are not supported yet"),
                "{e}"
            );
        }
    }
    assert!(script.sent().is_empty(), "a request went out");
    assert_eq!(*calls.lock().unwrap(), 0, "no payload was even made");
}

#[tokio::test(start_paused = true)]
async fn ssrc_duplicate_retries_with_a_new_payload() {
    let script = Arc::new(Script::default());
    script.push(JOIN_GROUP_CALL, rpc(400, "GROUPCALL_SSRC_DUPLICATE_MUCH"));
    script.push(JOIN_GROUP_CALL, updates(vec![connection(ANSWER)]));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let joined = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap();
    script.assert_done();
    assert_eq!(joined.attempts, 2);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        joined.payload.audio_ssrc(),
        1001,
        "the accepted payload is the fresh one"
    );
    let sent = script.sent();
    assert_eq!(sent_payload_ssrc(&sent[0]), 1000);
    assert_eq!(sent_payload_ssrc(&sent[1]), 1001);
}

#[tokio::test(start_paused = true)]
async fn ssrc_duplicate_retries_are_bounded() {
    let script = Arc::new(Script::default());
    let attempts = RetryPolicy::default().join_attempts;
    for _ in 0..attempts {
        script.push(JOIN_GROUP_CALL, rpc(400, "GROUPCALL_SSRC_DUPLICATE_MUCH"));
    }
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let e = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap_err();
    script.assert_done();
    assert!(
        matches!(e, Error::SsrcDuplicate { attempts: n, .. } if n == attempts),
        "{e:?}"
    );
    assert_eq!(*calls.lock().unwrap(), attempts);
    assert!(e.to_string().contains("fresh random SSRC"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn flood_wait_is_waited_out_not_hammered() {
    let script = Arc::new(Script::default());
    script.push(JOIN_GROUP_CALL, rpc(420, "FLOOD_WAIT_30"));
    script.push(JOIN_GROUP_CALL, updates(vec![connection(ANSWER)]));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let start = tokio::time::Instant::now();
    let joined = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap();
    let waited = start.elapsed();
    script.assert_done();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(32),
        "waited {waited:?}"
    );
    // A flood wait is about the request rate, not the payload: the same payload is resent.
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(joined.attempts, 1);
    let sent = script.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1]);
}

#[tokio::test(start_paused = true)]
async fn a_flood_wait_longer_than_the_policy_allows_is_returned_at_once() {
    let script = Arc::new(Script::default());
    script.push(JOIN_GROUP_CALL, rpc(420, "FLOOD_WAIT_3600"));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let start = tokio::time::Instant::now();
    let e = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(e, Error::FloodWait { seconds: 3600, .. }), "{e:?}");
    assert!(e.to_string().contains("3600 s"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn groupcall_forbidden_ends_the_join_with_its_message() {
    let script = Arc::new(Script::default());
    script.push(JOIN_GROUP_CALL, rpc(403, "GROUPCALL_FORBIDDEN"));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let e = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap_err();
    script.assert_done();
    assert!(matches!(e, Error::GroupCallForbidden { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("phone.joinGroupCall:"), "{msg}");
    assert!(
        msg.contains("GROUPCALL_FORBIDDEN") && msg.contains("has ended"),
        "{msg}"
    );
    assert!(e.is_call_over());
    assert_eq!(script.sent().len(), 1, "no retry after a fatal error");
}

#[tokio::test(start_paused = true)]
async fn a_transient_server_error_is_retried_after_a_pause() {
    let script = Arc::new(Script::default());
    script.push(
        JOIN_GROUP_CALL,
        rpc(500, "GROUPCALL_ADD_PARTICIPANTS_FAILED"),
    );
    script.push(JOIN_GROUP_CALL, updates(vec![connection(ANSWER)]));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let start = tokio::time::Instant::now();
    let joined = sig
        .join(
            &CallRef::Id(CALL),
            &mut counting_factory(&calls),
            &JoinOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(joined.attempts, 2);
    assert_eq!(start.elapsed(), RetryPolicy::default().transient_backoff);
}

#[test]
fn every_listed_error_gets_its_own_variant_and_message() {
    let names = [
        "CHAT_ADMIN_REQUIRED",
        "CHAT_WRITE_FORBIDDEN",
        "DATA_JSON_INVALID",
        "GROUPCALL_ADD_PARTICIPANTS_FAILED",
        "GROUPCALL_FORBIDDEN",
        "GROUPCALL_INVALID",
        "GROUPCALL_SSRC_DUPLICATE_MUCH",
        "JOIN_AS_PEER_INVALID",
        "PUBLIC_KEY_INVALID",
        "GROUPCALL_ALREADY_STARTED",
        "CHANNEL_INVALID",
        "PEER_ID_INVALID",
        "SCHEDULE_DATE_INVALID",
        "CHAT_TYPE_INVALID",
        "INVITE_FORBIDDEN_WITH_JOINAS",
        "USER_ALREADY_INVITED",
        "USER_NOT_PARTICIPANT",
    ];
    for name in names {
        let e = super::map_invocation(
            "phone.x",
            InvocationError::Rpc(RpcError {
                code: 400,
                name: name.into(),
                value: None,
                caused_by: None,
            }),
        );
        assert!(
            !matches!(e, Error::Rpc { .. }),
            "{name} fell through to the generic variant"
        );
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains(';'), "{name}: {msg}");
    }
    let e = super::map_invocation(
        "phone.x",
        InvocationError::Rpc(RpcError {
            code: 400,
            name: "SOMETHING_NEW".into(),
            value: None,
            caused_by: None,
        }),
    );
    assert!(matches!(e, Error::Rpc { ref name, .. } if name == "SOMETHING_NEW"));
}

#[tokio::test(start_paused = true)]
async fn participant_updates_map_sources_to_peers_and_flag_self_events() {
    let script = Arc::new(Script::default());
    script.push(JOIN_GROUP_CALL, updates(vec![connection(ANSWER)]));
    let sig = backend(&script);
    let calls = Arc::new(Mutex::new(0));
    let options = JoinOptions::default();
    sig.join(&CallRef::Id(CALL), &mut counting_factory(&calls), &options)
        .await
        .unwrap();
    let mut stream = sig.updates();

    let tl::enums::GroupCallParticipant::Participant(mut camera) = tl_participant(
        tl::types::PeerChannel { channel_id: 77 }.into(),
        123,
        false,
        false,
    );
    camera.video = Some(
        tl::types::GroupCallParticipantVideo {
            paused: false,
            endpoint: "ep".into(),
            source_groups: vec![tl::types::GroupCallParticipantVideoSourceGroup {
                semantics: "FID".into(),
                sources: vec![124, -3],
            }
            .into()],
            audio_source: None,
        }
        .into(),
    );
    convert::dispatch(
        &sig.inner.hub,
        &participants_update(
            8,
            vec![
                tl_participant(user_peer(42), -5, false, false),
                camera.into(),
                // This process's own source, reported gone: the server dropped it.
                tl_participant(user_peer(5), 1000, true, true),
            ],
        ),
    );

    let Some(SignalingUpdate::Participants {
        call,
        version,
        participants,
    }) = stream.next().await
    else {
        panic!("expected a participants update")
    };
    assert_eq!((call, version), (CALL, 8));
    let by_source: HashMap<u32, PeerId> = participants.iter().map(|p| (p.source, p.peer)).collect();
    assert_eq!(
        by_source[&0xFFFF_FFFB],
        PeerId::User(42),
        "signed -5 is SSRC 4294967291"
    );
    assert_eq!(by_source[&123], PeerId::Channel(77));
    let cam = participants.iter().find(|p| p.source == 123).unwrap();
    assert!(!cam.video_stopped);
    assert_eq!(cam.all_sources(), vec![123, 124, 0xFFFF_FFFD]);
    assert_eq!(
        stream.next().await,
        Some(SignalingUpdate::SelfRemoved {
            call: CALL,
            source: 1000
        })
    );

    // After leaving, the server's "left" entry is expected and not a removal.
    script.push(LEAVE, updates(vec![]));
    sig.leave(&CallRef::Id(CALL), 1000).await.unwrap();
    convert::dispatch(
        &sig.inner.hub,
        &participants_update(9, vec![tl_participant(user_peer(5), 1000, true, true)]),
    );
    assert!(matches!(
        stream.next().await,
        Some(SignalingUpdate::Participants { .. })
    ));
    assert!(stream.try_next().is_none());
}

#[tokio::test]
async fn participants_by_source_sends_signed_sources_and_maps_the_page() {
    let script = Arc::new(Script::default());
    let page =
        tl::enums::phone::GroupParticipants::Participants(tl::types::phone::GroupParticipants {
            count: 12,
            participants: vec![tl_participant(user_peer(42), -5, false, false)],
            next_offset: String::new(),
            chats: vec![],
            users: vec![],
            version: 4,
        });
    script.push(GET_PARTICIPANTS, Reply::Ok(page.to_bytes()));
    let sig = backend(&script);
    let page = sig
        .participants(
            &CallRef::Id(CALL),
            &ParticipantQuery::by_sources([0xFFFF_FFFB]),
        )
        .await
        .unwrap();
    assert_eq!(page.count, 12);
    assert_eq!(page.next_offset, None);
    assert_eq!(page.participants[0].peer, PeerId::User(42));
    assert_eq!(page.participants[0].source, 0xFFFF_FFFB);
    let sent = &script.sent()[0];
    let want_tail = [
        &call_bytes()[..],
        &VECTOR,
        &le32(0), // no peers
        &VECTOR,
        &le32(1),
        &[0xfb, 0xff, 0xff, 0xff],
        &tl_str(b""),
        &le32(100),
    ]
    .concat();
    assert_eq!(&sent[4..], &want_tail[..]);
}

#[tokio::test]
async fn check_reads_join_missing_as_nothing_joined() {
    let script = Arc::new(Script::default());
    script.push([0x77, 0xf9, 0x9c, 0xb5], rpc(400, "GROUPCALL_JOIN_MISSING")); // phone.checkGroupCall#b59cf977
    script.push(
        [0x77, 0xf9, 0x9c, 0xb5],
        Reply::Ok(vec![2i32, 9].to_bytes()),
    );
    let sig = backend(&script);
    assert_eq!(
        sig.check(&CallRef::Id(CALL), &[1, 2]).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        sig.check(&CallRef::Id(CALL), &[2, 9]).await.unwrap(),
        vec![2, 9]
    );
}

#[tokio::test]
async fn edits_are_validated_before_anything_is_sent() {
    let script = Arc::new(Script::default());
    let sig = backend(&script);
    for edit in [
        ParticipantEdit::default(),
        ParticipantEdit {
            volume: Some(0),
            ..Default::default()
        },
        ParticipantEdit {
            volume: Some(20001),
            ..Default::default()
        },
    ] {
        let e = sig.edit_self(&CallRef::Id(CALL), &edit).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    }
    assert!(script.sent().is_empty());
}

#[tokio::test]
async fn unknown_peers_are_refused_without_guessing_an_access_hash() {
    let script = Arc::new(Script::default());
    let sig = backend(&script);
    let e = sig
        .invite(&CallRef::Id(CALL), &[PeerId::User(42)])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownPeer(PeerId::User(42))), "{e:?}");

    // With the hash in the session cache the invite goes out with it.
    let script = Arc::new(Script {
        hashes: HashMap::from([(PeerId::User(42), 4242)]),
        ..Default::default()
    });
    script.push(INVITE, updates(vec![]));
    let sig = backend(&script);
    sig.invite(&CallRef::Id(CALL), &[PeerId::User(42)])
        .await
        .unwrap();
    assert!(script.sent()[0].ends_with(&[&INPUT_USER[..], &le64(42), &le64(4242)].concat()));
}

fn tl_user(id: i64, bot: bool) -> tl::enums::User {
    tl::types::User {
        is_self: true,
        contact: false,
        mutual_contact: false,
        deleted: false,
        bot,
        bot_chat_history: false,
        bot_nochats: false,
        verified: false,
        restricted: false,
        min: false,
        bot_inline_geo: false,
        support: false,
        scam: false,
        apply_min_photo: false,
        fake: false,
        bot_attach_menu: false,
        premium: false,
        attach_menu_enabled: false,
        bot_can_edit: false,
        close_friend: false,
        stories_hidden: false,
        stories_unavailable: false,
        contact_require_premium: false,
        bot_business: false,
        bot_has_main_app: false,
        bot_forum_view: false,
        bot_forum_can_manage_topics: false,
        bot_can_manage_bots: false,
        bot_guestchat: false,
        bot_guard: false,
        id,
        access_hash: Some(1),
        first_name: Some("x".into()),
        last_name: None,
        username: None,
        phone: None,
        photo: None,
        status: None,
        bot_info_version: bot.then_some(1),
        restriction_reason: None,
        bot_inline_placeholder: None,
        lang_code: None,
        emoji_status: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        bot_active_users: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_community_id: None,
    }
    .into()
}

const GET_USERS: [u8; 4] = [0x48, 0xa5, 0x91, 0x0d]; // users.getUsers#0d91a548

#[tokio::test]
async fn a_bot_session_is_refused_and_a_user_one_is_remembered() {
    let script = Arc::new(Script::default());
    script.push(GET_USERS, Reply::Ok(vec![tl_user(9, true)].to_bytes()));
    let e = backend(&script).check_account().await.unwrap_err();
    assert!(matches!(e, Error::BotAccount), "{e:?}");
    assert!(e.to_string().contains("bots"), "{e}");

    let script = Arc::new(Script::default());
    script.push(GET_USERS, Reply::Ok(vec![tl_user(9, false)].to_bytes()));
    let sig = backend(&script);
    assert_eq!(sig.check_account().await.unwrap(), PeerId::User(9));
    assert_eq!(sig.me(), Some(PeerId::User(9)));

    let script = Arc::new(Script::default());
    script.push(GET_USERS, rpc(401, "AUTH_KEY_UNREGISTERED"));
    let e = backend(&script).check_account().await.unwrap_err();
    assert!(matches!(e, Error::NotAuthorized), "{e:?}");
}

#[tokio::test]
async fn resolve_finds_the_call_of_a_chat_and_refuses_users() {
    // A basic group by id: messages.getFullChat -> chatFull.call.
    let script = Arc::new(Script::default());
    let full = tl::enums::messages::ChatFull::Full(tl::types::messages::ChatFull {
        full_chat: tl::types::ChatFull {
            can_set_username: false,
            has_scheduled: false,
            translations_disabled: false,
            has_welcome_messages: false,
            id: 4321,
            about: String::new(),
            participants: tl::types::ChatParticipantsForbidden {
                chat_id: 4321,
                self_participant: None,
            }
            .into(),
            chat_photo: None,
            notify_settings: tl::types::PeerNotifySettings {
                show_previews: None,
                silent: None,
                mute_until: None,
                ios_sound: None,
                android_sound: None,
                other_sound: None,
                stories_muted: None,
                stories_hide_sender: None,
                stories_ios_sound: None,
                stories_android_sound: None,
                stories_other_sound: None,
            }
            .into(),
            exported_invite: None,
            bot_info: None,
            pinned_msg_id: None,
            folder_id: None,
            call: Some(
                tl::types::InputGroupCall {
                    id: CALL.id,
                    access_hash: CALL.access_hash,
                }
                .into(),
            ),
            ttl_period: None,
            groupcall_default_join_as: None,
            theme_emoticon: None,
            requests_pending: None,
            recent_requesters: None,
            available_reactions: None,
            reactions_limit: None,
        }
        .into(),
        chats: vec![],
        users: vec![],
    });
    script.push([0x34, 0x0b, 0xb0, 0xae], Reply::Ok(full.to_bytes())); // messages.getFullChat#aeb00b34
    let sig = backend(&script);
    let r = sig.resolve("-4321").await.unwrap();
    assert_eq!(r.call, CallRef::Id(CALL));
    assert_eq!(r.chat, Some(PeerId::Chat(4321)));

    // A username that is a user: refused with the reason.
    let script = Arc::new(Script::default());
    let resolved = tl::enums::contacts::ResolvedPeer::Peer(tl::types::contacts::ResolvedPeer {
        peer: user_peer(42),
        chats: vec![],
        users: vec![],
    });
    script.push([0xbc, 0xfb, 0x5a, 0x72], Reply::Ok(resolved.to_bytes())); // contacts.resolveUsername#725afbbc
    let e = backend(&script).resolve("@someone").await.unwrap_err();
    assert!(e.to_string().contains("is a user"), "{e}");

    // A channel by username: its access hash from the reply is used for the full-info request.
    let script = Arc::new(Script::default());
    let resolved = tl::enums::contacts::ResolvedPeer::Peer(tl::types::contacts::ResolvedPeer {
        peer: tl::types::PeerChannel { channel_id: 77 }.into(),
        chats: vec![tl::types::ChannelForbidden {
            broadcast: false,
            megagroup: true,
            monoforum: false,
            id: 77,
            access_hash: 555,
            title: "t".into(),
            until_date: None,
        }
        .into()],
        users: vec![],
    });
    script.push([0xbc, 0xfb, 0x5a, 0x72], Reply::Ok(resolved.to_bytes()));
    script.push([0x09, 0x6a, 0x73, 0x08], rpc(400, "CHANNEL_PRIVATE")); // channels.getFullChannel#08736a09
    let e = backend(&script)
        .resolve("https://t.me/somegroup?videochat=abc")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ChannelInvalid { .. }), "{e:?}");
    let sent = script.sent();
    assert_eq!(
        &sent[1][4..],
        &[&[0x28, 0xec, 0x5a, 0xf3][..], &le64(77), &le64(555)].concat()[..] // inputChannel#f35aec28
    );
}

#[test]
fn a_join_reply_and_a_screen_share_reply_each_take_their_own_connection() {
    let main = connection(ANSWER);
    let share = tl::types::UpdateGroupCallConnection {
        presentation: true,
        params: tl::types::DataJson {
            data: "{\"screen\":1}".into(),
        }
        .into(),
    }
    .into();
    let updates = vec![share, main];
    assert_eq!(
        read_reply(&updates, 1, false).answer_json.as_deref(),
        Some(ANSWER)
    );
    assert_eq!(
        read_reply(&updates, 1, true).answer_json.as_deref(),
        Some("{\"screen\":1}")
    );
}
