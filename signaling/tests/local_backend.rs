//! The local backend end to end against the local server's real control API
//! (`groupcall_sfu::ControlServer`): HTTP+JSON requests, Telegram-named errors, and the per-call
//! server-sent-event stream. The media plane is a stub that answers joins with a fixed RTC
//! answer: signaling never touches media, so nothing here needs UDP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use groupcall_media::answer::{
    telegram_audio_info, telegram_video_info, Candidate, RtcAnswer, TransportInfo,
};
use groupcall_media::payload::{DtlsFingerprint, Setup, WireSsrc};
use groupcall_media::{JoinPayload, ServerAnswer};
use groupcall_sfu::{CallId as SfuCallId, ControlServer, MediaPlane, ServerConfig};
use groupcall_signaling::local::LocalSignaling;
use groupcall_signaling::{
    CallRef, CreateCall, Error, JoinOptions, ParticipantEdit, ParticipantQuery, PeerId, Signaling,
    SignalingUpdate, UpdateStream,
};

struct StubPlane;

impl MediaPlane for StubPlane {
    fn add_participant(
        &self,
        _call: SfuCallId,
        _payload: &JoinPayload,
    ) -> groupcall_sfu::Result<RtcAnswer> {
        Ok(RtcAnswer {
            transport: TransportInfo {
                ufrag: "localufrag".into(),
                pwd: "localpwdlocalpwdlocalpwd".into(),
                fingerprints: vec![DtlsFingerprint {
                    fingerprint: "0A:".repeat(31) + "0A",
                    hash: "sha-256".into(),
                    setup: Setup::Active,
                }],
                candidates: vec![Candidate::udp_host(
                    "127.0.0.1:32000".parse().unwrap(),
                    "1",
                    "c1",
                )],
                xmlns: None,
                rtcp_mux: Some(true),
            },
            audio: Some(telegram_audio_info()),
            video: Some(telegram_video_info("ep", 42)),
        })
    }

    fn remove_participant(&self, _call: SfuCallId, _source: u32) {}
}

fn payload(ssrc: u32) -> JoinPayload {
    JoinPayload {
        fingerprints: vec![DtlsFingerprint {
            fingerprint: "AB:".repeat(31) + "AB",
            hash: "sha-256".into(),
            setup: Setup::Passive,
        }],
        pwd: "p".repeat(24),
        ssrc: WireSsrc(ssrc),
        ssrc_groups: vec![],
        ufrag: "uf01".into(),
    }
}

/// A factory handing out the given SSRCs in order, recording how many it handed out.
fn factory(
    ssrcs: Vec<u32>,
    used: Arc<Mutex<Vec<u32>>>,
) -> impl FnMut() -> Result<JoinPayload, groupcall_media::Error> + Send {
    let mut it = ssrcs.into_iter();
    move || {
        let s = it.next().expect("the factory ran out of SSRCs");
        used.lock().unwrap().push(s);
        Ok(payload(s))
    }
}

async fn start_server() -> ControlServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ControlServer::start(ServerConfig::new(addr, Arc::new(StubPlane)))
        .await
        .expect("the local server starts")
}

/// The next update that `pick` accepts, skipping others; fails after a few seconds.
async fn next_matching<T>(
    stream: &mut UpdateStream,
    mut pick: impl FnMut(&SignalingUpdate) -> Option<T>,
) -> T {
    let deadline = Duration::from_secs(5);
    tokio::time::timeout(deadline, async {
        loop {
            let u = stream.next().await.expect("the update stream ended");
            if let Some(t) = pick(&u) {
                return t;
            }
        }
    })
    .await
    .expect("the expected update did not arrive")
}

const ALICE: PeerId = PeerId::User(1001);
const BOB: PeerId = PeerId::User(1002);

#[tokio::test]
async fn local_backend_end_to_end() {
    let server = start_server().await;
    let base = format!("http://{}", server.local_addr());
    let alice = LocalSignaling::new(&base, ALICE).unwrap();
    let bob = LocalSignaling::new(&base, BOB).unwrap();

    // Create: the acting user becomes the admin.
    let info = alice
        .create_call(
            None,
            &CreateCall {
                title: Some("standup".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(info.started && !info.discarded);
    assert_eq!(info.title.as_deref(), Some("standup"));
    let call = CallRef::Id(info.id);

    // Alice joins and gets the server's answer.
    let mut alice_updates = alice.updates();
    let used = Arc::new(Mutex::new(Vec::new()));
    let joined = alice
        .join(
            &call,
            &mut factory(vec![1000], used.clone()),
            &JoinOptions::default(),
        )
        .await
        .unwrap();
    let ServerAnswer::Rtc(rtc) = &joined.answer else {
        panic!("expected an RTC answer")
    };
    assert_eq!(rtc.transport.ufrag, "localufrag");
    assert_eq!(joined.call, Some(info.id));
    let me = joined.participant.as_ref().unwrap();
    assert_eq!((me.peer, me.source, me.is_self), (ALICE, 1000, true));

    // Bob's first payload reuses Alice's SSRC: the server refuses it as a duplicate and the
    // join is retried with the factory's next payload, whose SSRC has the top bit set.
    let high = 0xFFFF_FF00;
    let bob_used = Arc::new(Mutex::new(Vec::new()));
    let mut bob_updates = bob.updates();
    let bob_joined = bob
        .join(
            &call,
            &mut factory(vec![1000, high], bob_used.clone()),
            &JoinOptions {
                muted: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(bob_joined.attempts, 2);
    assert_eq!(*bob_used.lock().unwrap(), vec![1000, high]);
    assert_eq!(bob_joined.payload.audio_ssrc(), high);

    // Alice sees Bob join, his signed source mapped back to the unsigned SSRC.
    let (peer, muted) = next_matching(&mut alice_updates, |u| match u {
        SignalingUpdate::Participants { participants, .. } => participants
            .iter()
            .find(|p| p.source == high && !p.left)
            .map(|p| (p.peer, p.muted)),
        _ => None,
    })
    .await;
    assert_eq!((peer, muted), (BOB, false));

    // Naming an unknown SSRC, as the engine does for incoming RTP.
    let page = alice
        .participants(&call, &ParticipantQuery::by_sources([high]))
        .await
        .unwrap();
    assert_eq!(page.participants.len(), 1);
    assert_eq!(page.participants[0].peer, BOB);
    assert_eq!(page.next_offset, None);
    let everyone = alice
        .participants(&call, &ParticipantQuery::default())
        .await
        .unwrap();
    assert_eq!(everyone.count, 2);

    // check: the sources still joined.
    assert_eq!(alice.check(&call, &[1000, 4242]).await.unwrap(), vec![1000]);
    assert_eq!(bob.check(&call, &[high]).await.unwrap(), vec![high]);

    // Edits: Alice (admin) mutes Bob, then Bob raises his hand to ask to speak (the server
    // refuses a raised hand from someone who may unmute himself); both show up as updates.
    alice
        .edit_participant(
            &call,
            Some(BOB),
            &ParticipantEdit {
                muted: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    bob.edit_self(
        &call,
        &ParticipantEdit {
            raise_hand: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    next_matching(&mut alice_updates, |u| match u {
        SignalingUpdate::Participants { participants, .. } => participants
            .iter()
            .any(|p| p.peer == BOB && p.muted && p.raise_hand_rating.is_some())
            .then_some(()),
        _ => None,
    })
    .await;

    // Errors come back typed, with the server's names.
    let e = bob.discard(&call).await.unwrap_err();
    assert!(matches!(e, Error::ChatAdminRequired { .. }), "{e:?}");
    let e = alice.start_scheduled(&call).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyStarted { .. }), "{e:?}");
    let nowhere = CallRef::Id(groupcall_signaling::CallId {
        id: 999_999,
        access_hash: 0,
    });
    let e = alice.get_call(&nowhere).await.unwrap_err();
    assert!(matches!(e, Error::GroupCallInvalid { .. }), "{e:?}");
    assert_eq!(
        alice.join_as_candidates(&call, None).await.unwrap(),
        vec![ALICE]
    );

    // Bob joins again from "another device" (a second backend for the same user): the server
    // replaces his entry, and Bob's first backend is told.
    let bob_other_device = LocalSignaling::new(&base, BOB).unwrap();
    bob_other_device
        .join(
            &call,
            &mut factory(vec![2000], Arc::default()),
            &JoinOptions::default(),
        )
        .await
        .unwrap();
    let source = next_matching(&mut bob_updates, |u| match u {
        SignalingUpdate::JoinedElsewhere { source, .. } => Some(*source),
        _ => None,
    })
    .await;
    assert_eq!(source, 2000);

    // The state as a whole.
    let state = alice.get_call(&call).await.unwrap();
    let mut sources: Vec<u32> = state.participants.iter().map(|p| p.source).collect();
    sources.sort_unstable();
    assert_eq!(sources, vec![1000, 2000]);

    // Alice leaves: the server's "left" entry is not mistaken for a removal.
    alice.leave(&call, 1000).await.unwrap();
    next_matching(&mut alice_updates, |u| match u {
        SignalingUpdate::SelfRemoved { .. } => panic!("leaving is not being removed"),
        SignalingUpdate::Participants { participants, .. } => participants
            .iter()
            .any(|p| p.peer == ALICE && p.left)
            .then_some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        alice.check(&call, &[1000]).await.unwrap(),
        Vec::<u32>::new()
    );

    // Discard: every watcher is told, then the call's stream ends.
    alice.discard(&call).await.unwrap();
    next_matching(&mut bob_updates, |u| match u {
        SignalingUpdate::CallDiscarded { call } => Some(*call),
        _ => None,
    })
    .await;
    next_matching(&mut bob_updates, |u| match u {
        SignalingUpdate::Ended { call: Some(c), .. } if *c == info.id => Some(()),
        _ => None,
    })
    .await;
    let e = bob
        .join(
            &call,
            &mut factory(vec![3000], Arc::default()),
            &JoinOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GroupCallForbidden { .. }), "{e:?}");

    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_is_not_there_is_a_clear_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sig = LocalSignaling::new(format!("http://127.0.0.1:{port}"), ALICE).unwrap();
    let e = sig
        .create_call(None, &CreateCall::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Http { .. }), "{e:?}");
    assert!(e.to_string().contains("groupcall serve"), "{e}");
    assert!(LocalSignaling::new("127.0.0.1:1", ALICE).is_err());
    assert!(LocalSignaling::new("http://127.0.0.1:1", PeerId::Channel(5)).is_err());
}

/// A server whose event stream carries events over the parser's bound (one line of 3 MiB; an
/// event of 1.5 MB in short lines) followed by a valid one. The stream is served by a
/// hand-written HTTP/1.1 responder on 127.0.0.1, because the real server never sends such
/// events: this is what a broken or hostile server looks like.
#[tokio::test]
async fn oversized_events_are_skipped_and_counted_and_the_next_one_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0 && head.len() < 16 * 1024, "request head incomplete");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(
            head.starts_with("GET /calls/7/updates HTTP/1.1\r\n"),
            "{head}"
        );
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        // One line of 3 MiB, sent in 64 KiB pieces.
        sock.write_all(b": hello\n\ndata: {\"type\":\"participants\",\"version\":1,\"participants\":[],\"pad\":\"")
            .await
            .unwrap();
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..48 {
            sock.write_all(&piece).await.unwrap();
        }
        sock.write_all(b"\"}\n\n").await.unwrap();
        // 1.5 MB of data in 1500 short lines.
        sock.write_all(b"data: {\"type\":\"participants\",\"version\":2,\"participants\":[]}\n")
            .await
            .unwrap();
        let line = format!("data: {}\n", " ".repeat(994));
        for _ in 0..1500 {
            sock.write_all(line.as_bytes()).await.unwrap();
        }
        sock.write_all(b"\n").await.unwrap();
        // The valid one.
        sock.write_all(
            b"data: {\"type\":\"participants\",\"version\":9,\"participants\":[{\"peer\":1002,\"source\":1234}]}\n\n",
        )
        .await
        .unwrap();
        sock.flush().await.unwrap();
        // Keep the stream open: its end would be an `Ended` update.
        let _ = stop_rx.await;
    });

    let sig = LocalSignaling::new(format!("http://{addr}"), ALICE).unwrap();
    let mut updates = sig.updates();
    let call = groupcall_signaling::CallId {
        id: 7,
        access_hash: 0,
    };
    sig.watch(&CallRef::Id(call)).await.unwrap();
    let (version, participants) = next_matching(&mut updates, |u| match u {
        SignalingUpdate::Participants {
            version,
            participants,
            ..
        } => Some((*version, participants.clone())),
        SignalingUpdate::Ended { reason, .. } => panic!("the stream ended: {reason}"),
        _ => None,
    })
    .await;
    assert_eq!(version, 9, "the oversized events were not delivered");
    assert_eq!(
        participants
            .iter()
            .map(|p| (p.peer, p.source))
            .collect::<Vec<_>>(),
        [(BOB, 1234)]
    );
    assert_eq!(sig.dropped_events(), 2);
    let _ = stop_tx.send(());
    server.await.unwrap();
}
