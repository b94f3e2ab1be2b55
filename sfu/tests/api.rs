//! The control API over real HTTP on 127.0.0.1, with a test double for the media plane.
//! Every test is bounded in time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use groupcall_media::answer::{telegram_audio_info, telegram_video_info, Candidate, TransportInfo};
use groupcall_media::payload::DtlsFingerprint;
use groupcall_media::{JoinPayload, RtcAnswer, ServerAnswer};
use groupcall_sfu::{
    media_events, CallId, ControlServer, Error, MediaEvent, MediaEvents, MediaPlane, ServerConfig,
};
use serde_json::{json, Value};

const FP: &str = "00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F";
const LIMIT: Duration = Duration::from_secs(20);

/// A stand-in for the media plane in these tests only: it records what the control plane asks
/// and answers with a well-formed transport that nothing listens on. No media flows.
#[derive(Default)]
struct RecordingMediaPlane {
    log: Mutex<Vec<String>>,
}

impl RecordingMediaPlane {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl MediaPlane for RecordingMediaPlane {
    fn add_participant(
        &self,
        call: CallId,
        payload: &JoinPayload,
    ) -> groupcall_sfu::Result<RtcAnswer> {
        let source = payload.audio_ssrc();
        self.log
            .lock()
            .unwrap()
            .push(format!("add {call} {source}"));
        Ok(RtcAnswer {
            transport: TransportInfo {
                ufrag: "srvu".into(),
                pwd: "server-password-0123456".into(),
                fingerprints: vec![DtlsFingerprint {
                    fingerprint: FP.into(),
                    hash: "sha-256".into(),
                    setup: payload.fingerprints[0].setup.complement(),
                }],
                candidates: vec![Candidate::udp_host(
                    "127.0.0.1:9".parse().unwrap(),
                    "1",
                    "1",
                )],
                xmlns: None,
                rtcp_mux: Some(true),
            },
            audio: Some(telegram_audio_info()),
            video: Some(telegram_video_info(&format!("endpoint-{source}"), 1)),
        })
    }

    fn remove_participant(&self, call: CallId, source: u32) {
        self.log
            .lock()
            .unwrap()
            .push(format!("remove {call} {source}"));
    }
}

/// A media plane whose every connection fails.
struct BrokenMediaPlane;

impl MediaPlane for BrokenMediaPlane {
    fn add_participant(&self, _: CallId, _: &JoinPayload) -> groupcall_sfu::Result<RtcAnswer> {
        Err(Error::media("no UDP port left"))
    }

    fn remove_participant(&self, _: CallId, _: u32) {}
}

fn payload(ssrc: i64) -> String {
    json!({
        "fingerprints": [{"fingerprint": FP, "hash": "sha-256", "setup": "passive"}],
        "pwd": "0123456789abcdefghijklmn", "ssrc": ssrc, "ufrag": "abcd",
    })
    .to_string()
}

struct Harness {
    server: ControlServer,
    media: Arc<RecordingMediaPlane>,
    events: MediaEvents,
    http: reqwest::Client,
    base: String,
}

impl Harness {
    async fn start() -> Harness {
        let media = Arc::new(RecordingMediaPlane::default());
        let (events, receiver) = media_events();
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), media.clone())
            .with_media_events(receiver);
        let server = ControlServer::start(config).await.expect("server starts");
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        Harness {
            base: format!("http://{addr}"),
            server,
            media,
            events,
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` and returns the status and JSON answer.
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        (r.status().as_u16(), r.json().await.expect("JSON answer"))
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .expect("request sent");
        (r.status().as_u16(), r.json().await.expect("JSON answer"))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        (r.status().as_u16(), r.json().await.expect("JSON answer"))
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }

    async fn create(&self, admin: i64) -> i64 {
        let call = self
            .ok("/calls", json!({"peer": admin, "title": "test"}))
            .await;
        call["id"].as_i64().expect("call id")
    }

    async fn join(&self, call: i64, peer: i64, ssrc: i64) -> Value {
        self.ok(
            &format!("/calls/{call}/join"),
            json!({"peer": peer, "params": payload(ssrc)}),
        )
        .await
    }

    async fn updates(&self, call: i64) -> Updates {
        let r = self
            .http
            .get(format!("{}/calls/{call}/updates", self.base))
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Updates {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }
}

/// Reads a server-sent-event stream one `data` object at a time.
struct Updates {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    buf: String,
}

impl Updates {
    /// The next event's data, or `None` when the stream ended. Fails the test after 5 s.
    async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let data: Vec<&str> = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    return Some(
                        serde_json::from_str(&data.join("\n")).expect("event data is JSON"),
                    );
                }
                match self.body.next().await {
                    Some(chunk) => self
                        .buf
                        .push_str(std::str::from_utf8(&chunk.expect("stream chunk")).unwrap()),
                    None => return None,
                }
            }
        })
        .await
        .expect("an update within 5 s")
    }

    async fn participants(&mut self) -> (i64, Vec<Value>) {
        let e = self.next().await.expect("a participants update");
        assert_eq!(e["type"], "participants", "{e}");
        (
            e["version"].as_i64().unwrap(),
            e["participants"].as_array().unwrap().clone(),
        )
    }
}

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test finished in time");
}

fn error_type(v: &Value) -> &str {
    v["error"]["type"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[tokio::test]
async fn a_call_from_creation_to_discard() {
    bounded(async {
        let h = Harness::start().await;
        let call = h.create(1).await;

        let joined = h.join(call, 10, 1000).await;
        let p = &joined["participant"];
        assert_eq!(
            (p["peer"].as_i64(), p["source"].as_i64()),
            (Some(10), Some(1000))
        );
        assert_eq!(p["just_joined"], true);
        // `params` is updateGroupCallConnection.params: a client's answer parser takes it as is.
        let answer = ServerAnswer::parse(joined["params"].as_str().unwrap())
            .expect("params parse as a server answer")
            .into_rtc()
            .unwrap();
        assert_eq!(
            answer.transport.udp_addresses(),
            ["127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap()]
        );
        h.join(call, 11, 2000).await;
        h.join(call, 1, 3_000_000_000).await;

        let (status, page) = h.get(&format!("/calls/{call}/participants")).await;
        assert_eq!(status, 200);
        assert_eq!(page["count"], 3);
        assert_eq!(page["version"], 4);
        let (_, page) = h
            .get(&format!(
                "/calls/{call}/participants?sources=2000,-1294967296&limit=1"
            ))
            .await;
        assert_eq!(page["count"], 2);
        assert_eq!(page["participants"][0]["peer"], 11);
        let next = page["next_offset"].as_str().unwrap().to_owned();
        assert!(!next.is_empty());
        let (_, page) = h
            .get(&format!(
                "/calls/{call}/participants?sources=2000&sources=-1294967296&offset={next}"
            ))
            .await;
        assert_eq!(page["participants"][0]["peer"], 1);
        assert_eq!(page["participants"][0]["source"], -1_294_967_296i64);
        assert_eq!(page["next_offset"], "");

        let v = h
            .ok(
                &format!("/calls/{call}/check"),
                json!({"peer": 10, "sources": [1000, 2000]}),
            )
            .await;
        assert_eq!(v, json!({"sources": [1000]}));

        let v = h
            .ok(
                &format!("/calls/{call}/participants/edit"),
                json!({"peer": 1, "participant": 10, "muted": true, "volume": 5000}),
            )
            .await;
        assert_eq!(
            (v["muted"].as_bool(), v["can_self_unmute"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(v["volume"], 5000);

        assert_eq!(
            h.ok(
                &format!("/calls/{call}/invite"),
                json!({"peer": 1, "users": [20]})
            )
            .await,
            json!({})
        );
        let (status, v) = h
            .post(
                &format!("/calls/{call}/invite"),
                json!({"peer": 1, "users": [20]}),
            )
            .await;
        assert_eq!((status, error_type(&v)), (400, "USER_ALREADY_INVITED"));
        let (status, v) = h.get(&format!("/calls/{call}/join-as?peer=10")).await;
        assert_eq!((status, v), (200, json!({"peers": [10]})));

        assert_eq!(
            h.ok(
                &format!("/calls/{call}/leave"),
                json!({"peer": 11, "source": 2000})
            )
            .await,
            json!({})
        );
        let (status, v) = h
            .post(
                &format!("/calls/{call}/check"),
                json!({"peer": 11, "sources": [2000]}),
            )
            .await;
        assert_eq!((status, error_type(&v)), (400, "GROUPCALL_JOIN_MISSING"));

        let (status, v) = h
            .post(&format!("/calls/{call}/discard"), json!({"peer": 10}))
            .await;
        assert_eq!((status, error_type(&v)), (400, "CHAT_ADMIN_REQUIRED"));
        assert_eq!(
            h.ok(&format!("/calls/{call}/discard"), json!({"peer": 1}))
                .await,
            json!({})
        );
        let (status, v) = h.get(&format!("/calls/{call}")).await;
        assert_eq!(status, 200);
        assert_eq!(v["call"]["discarded"], true);
        assert_eq!(v["participants"], json!([]));
        let (status, v) = h
            .post(
                &format!("/calls/{call}/join"),
                json!({"peer": 12, "params": payload(5)}),
            )
            .await;
        assert_eq!((status, error_type(&v)), (403, "GROUPCALL_FORBIDDEN"));
        assert_eq!(v["error"]["code"], 403);

        assert_eq!(
            h.media.log(),
            [
                format!("add {call} 1000"),
                format!("add {call} 2000"),
                format!("add {call} 3000000000"),
                format!("remove {call} 2000"),
                format!("remove {call} 1000"),
                format!("remove {call} 3000000000"),
            ]
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn scheduled_calls_start_before_anyone_joins() {
    bounded(async {
        let h = Harness::start().await;
        let (status, v) = h
            .post("/calls", json!({"peer": 1, "schedule_date": 1000}))
            .await;
        assert_eq!((status, error_type(&v)), (400, "SCHEDULE_DATE_INVALID"));
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let call = h
            .ok("/calls", json!({"peer": 1, "schedule_date": later}))
            .await;
        assert_eq!(
            (call["started"].as_bool(), call["schedule_date"].as_u64()),
            (Some(false), Some(later))
        );
        let id = call["id"].as_i64().unwrap();
        let (status, v) = h
            .post(
                &format!("/calls/{id}/join"),
                json!({"peer": 10, "params": payload(5)}),
            )
            .await;
        assert_eq!((status, error_type(&v)), (400, "GROUPCALL_NOT_STARTED"));
        let started = h
            .ok(&format!("/calls/{id}/start"), json!({"peer": 1}))
            .await;
        assert_eq!(started["started"], true);
        let (status, v) = h
            .post(&format!("/calls/{id}/start"), json!({"peer": 1}))
            .await;
        assert_eq!((status, error_type(&v)), (403, "GROUPCALL_ALREADY_STARTED"));
        h.join(id, 10, 5).await;
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_update_stream_reports_joins_leaves_and_the_discard() {
    bounded(async {
        let h = Harness::start().await;
        let call = h.create(1).await;
        let mut updates = h.updates(call).await;
        // The stream opens with the call as it is: from here on no update is missed.
        let first = updates.next().await.unwrap();
        assert_eq!(first["type"], "call");
        assert_eq!(first["call"]["version"], 1);

        h.join(call, 10, 1000).await;
        h.join(call, 11, 2000).await;
        let (v1, ps) = updates.participants().await;
        assert_eq!(
            (v1, ps[0]["peer"].as_i64(), ps[0]["left"].as_bool()),
            (2, Some(10), Some(false))
        );
        assert_eq!(ps[0]["just_joined"], true);
        let (v2, ps) = updates.participants().await;
        assert_eq!((v2, ps[0]["source"].as_i64()), (3, Some(2000)));

        // A rejoin with a new source: the old source is reported left in the same update.
        h.join(call, 10, 1001).await;
        let (v3, ps) = updates.participants().await;
        assert_eq!(v3, 4);
        assert_eq!(
            ps.iter()
                .map(|p| (p["source"].as_i64().unwrap(), p["left"].as_bool().unwrap()))
                .collect::<Vec<_>>(),
            [(1000, true), (1001, false)]
        );

        h.ok(
            &format!("/calls/{call}/leave"),
            json!({"peer": 11, "source": 2000}),
        )
        .await;
        let (v4, ps) = updates.participants().await;
        assert_eq!(
            (v4, ps[0]["peer"].as_i64(), ps[0]["left"].as_bool()),
            (5, Some(11), Some(true))
        );

        // A second subscriber starts from the current version.
        let mut late = h.updates(call).await;
        assert_eq!(late.next().await.unwrap()["call"]["version"], 5);

        h.ok(&format!("/calls/{call}/discard"), json!({"peer": 1}))
            .await;
        for stream in [&mut updates, &mut late] {
            let e = stream.next().await.unwrap();
            assert_eq!(
                (e["type"].as_str(), e["call"]["discarded"].as_bool()),
                (Some("call"), Some(true))
            );
            assert_eq!(
                stream.next().await,
                None,
                "the stream ends after the discard"
            );
        }
        // Subscribing to a discarded call: its state, then the end.
        let mut after = h.updates(call).await;
        assert_eq!(after.next().await.unwrap()["call"]["discarded"], true);
        assert_eq!(after.next().await, None);
        let (status, v) = h.get("/calls/999/updates").await;
        assert_eq!((status, error_type(&v)), (400, "GROUPCALL_INVALID"));
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_participant_silent_on_stun_is_removed_with_an_update() {
    bounded(async {
        let h = Harness::start().await;
        let call = h.create(1).await;
        h.join(call, 10, 1000).await;
        h.join(call, 11, 2000).await;
        let mut updates = h.updates(call).await;
        updates.next().await.unwrap();

        assert!(h.events.report(MediaEvent::Silent {
            call: CallId(call),
            source: 1000
        }));
        let (_, ps) = updates.participants().await;
        assert_eq!(
            (ps[0]["peer"].as_i64(), ps[0]["left"].as_bool()),
            (Some(10), Some(true))
        );
        let (_, page) = h.get(&format!("/calls/{call}/participants")).await;
        assert_eq!(page["count"], 1);
        assert!(h.media.log().contains(&format!("remove {call} 1000")));
        let (status, v) = h
            .post(
                &format!("/calls/{call}/check"),
                json!({"peer": 10, "sources": [1000]}),
            )
            .await;
        assert_eq!((status, error_type(&v)), (400, "GROUPCALL_JOIN_MISSING"));
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_join_payloads_are_data_json_invalid_naming_the_field() {
    bounded(async {
        let h = Harness::start().await;
        let call = h.create(1).await;
        let cases = [
            (payload(5).replace("\"ssrc\":5", "\"ssrc\":\"5\""), "ssrc"),
            (
                payload(5).replace("\"pwd\":\"0123456789abcdefghijklmn\",", ""),
                "pwd",
            ),
            (
                payload(5).replace("passive", "sideways"),
                "fingerprints[0].setup",
            ),
            (payload(5).replace("0A:", "0Z:"), "fingerprints[0]"),
            (payload(0), "ssrc"),
            ("{not json".to_owned(), "not JSON"),
        ];
        for (params, field) in cases {
            let (status, v) = h
                .post(
                    &format!("/calls/{call}/join"),
                    json!({"peer": 10, "params": params}),
                )
                .await;
            assert_eq!(
                (status, error_type(&v)),
                (400, "DATA_JSON_INVALID"),
                "{params}"
            );
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{field} not named in {message:?}");
        }
        assert!(h.media.log().is_empty(), "no connection for a refused join");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_source_already_taken_is_groupcall_ssrc_duplicate_much() {
    bounded(async {
        let h = Harness::start().await;
        let call = h.create(1).await;
        h.join(call, 10, 1000).await;
        h.join(call, 11, 3_000_000_000).await;
        for (peer, ssrc) in [(12, 1000), (12, -1_294_967_296), (12, 3_000_000_000)] {
            let (status, v) = h
                .post(
                    &format!("/calls/{call}/join"),
                    json!({"peer": peer, "params": payload(ssrc)}),
                )
                .await;
            assert_eq!(
                (status, error_type(&v)),
                (400, "GROUPCALL_SSRC_DUPLICATE_MUCH"),
                "{ssrc}"
            );
        }
        // With fresh SSRCs the retry succeeds, as a client does after this error.
        h.join(call, 12, 4000).await;
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_are_bad_request_and_the_server_carries_on() {
    bounded(async {
        let h = Harness::start().await;
        let call = h.create(1).await;
        let join = format!("/calls/{call}/join");
        let cases: [(&str, &'static str, &str); 6] = [
            ("/calls", "{not json", "request body"),
            ("/calls", "", "empty"),
            ("/calls", "{\"title\": \"x\"}", "missing field `peer`"),
            ("/calls", "{\"peer\": \"me\"}", "`peer`"),
            ("/calls", "{\"peer\": 1} trailing", "trailing"),
            (&join, "{\"peer\": 10, \"params\": 5}", "`params`"),
        ];
        for (path, body, named) in cases {
            let (status, v) = h.post_raw(path, body).await;
            assert_eq!((status, error_type(&v)), (400, "BAD_REQUEST"), "{body}");
            assert_eq!(v["error"]["code"], 400);
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{named} not in {message:?}");
        }
        let (status, v) = h.get("/calls/abc").await;
        assert_eq!((status, error_type(&v)), (400, "BAD_REQUEST"));
        assert!(v["error"]["message"].as_str().unwrap().contains("abc"));
        let (status, v) = h.get(&format!("/calls/{call}/participants?limit=-1")).await;
        assert_eq!((status, error_type(&v)), (400, "BAD_REQUEST"));
        let (status, v) = h
            .get(&format!("/calls/{call}/participants?sources=x"))
            .await;
        assert_eq!((status, error_type(&v)), (400, "BAD_REQUEST"));
        let (status, v) = h.get(&format!("/calls/{call}/join-as")).await;
        assert_eq!((status, error_type(&v)), (400, "BAD_REQUEST"));
        let (status, v) = h.get("/nowhere").await;
        assert_eq!((status, error_type(&v)), (404, "NOT_FOUND"));
        let (status, v) = h.get(&format!("/calls/{call}/join")).await;
        assert_eq!((status, error_type(&v)), (405, "METHOD_NOT_ALLOWED"));
        let (status, v) = h.get("/calls/77").await;
        assert_eq!((status, error_type(&v)), (400, "GROUPCALL_INVALID"));

        h.join(call, 10, 1000).await;
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_media_plane_refuses_the_join_with_a_500() {
    bounded(async {
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Arc::new(BrokenMediaPlane));
        let server = ControlServer::start(config).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let http = reqwest::Client::new();
        let call: Value = http
            .post(format!("{base}/calls"))
            .json(&json!({"peer": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = http
            .post(format!("{base}/calls/{}/join", call["id"]))
            .json(&json!({"peer": 10, "params": payload(5)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_type(&v), "GROUPCALL_ADD_PARTICIPANTS_FAILED");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no UDP port left"));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_server_listens_on_loopback_only_and_shuts_down_with_streams_open() {
    bounded(async {
        let media = Arc::new(RecordingMediaPlane::default());
        let e = ControlServer::start(ServerConfig::new(
            "0.0.0.0:0".parse().unwrap(),
            media.clone(),
        ))
        .await
        .err()
        .expect("non-loopback refused");
        assert!(matches!(e, Error::NotLoopback(_)), "{e}");

        let h = Harness::start().await;
        let call = h.create(1).await;
        let mut updates = h.updates(call).await;
        updates.next().await.unwrap();
        let addr = h.server.local_addr();
        // Shutting down ends the open stream instead of waiting for it.
        let started = std::time::Instant::now();
        h.server.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(updates.next().await, None);
        assert!(
            h.http
                .get(format!("http://{addr}/calls/1"))
                .send()
                .await
                .is_err(),
            "nothing listens any more"
        );

        // The port can be bound again, by a new server.
        let again = ControlServer::start(ServerConfig::new(addr, media))
            .await
            .expect("port free again");
        again.shutdown().await;
    })
    .await;
}
