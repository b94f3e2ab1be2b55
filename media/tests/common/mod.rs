//! Shared set-up for the transport tests: a participant and a server side built from real
//! payload and answer JSON, the way signalling would hand them over.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use groupcall_media::answer::{telegram_audio_info, telegram_video_info, Candidate, TransportInfo};
use groupcall_media::payload::DtlsFingerprint;
use groupcall_media::sim::Sim;
use groupcall_media::{
    Event, IceCredentials, JoinPayload, LocalEndpoint, LocalIdentity, RemotePeer, RtcAnswer,
    ServerAnswer, Setup, Transport, TransportConfig, VideoPublish,
};

pub struct Pair {
    pub client: Transport,
    pub server: Transport,
    pub client_identity: LocalIdentity,
    pub answer_json: String,
}

/// The server's answer JSON for a server with `creds`/`identity` listening on `addr`.
pub fn answer_json(creds: &IceCredentials, identity: &LocalIdentity, addr: SocketAddr) -> String {
    RtcAnswer {
        transport: TransportInfo {
            ufrag: creds.ufrag.clone(),
            pwd: creds.pwd.clone(),
            fingerprints: vec![DtlsFingerprint {
                fingerprint: identity.fingerprint.to_string(),
                hash: "sha-256".into(),
                setup: Setup::Active,
            }],
            candidates: vec![Candidate::udp_host(addr, "1", "c1")],
            xmlns: None,
            rtcp_mux: Some(true),
        },
        audio: Some(telegram_audio_info()),
        video: Some(telegram_video_info("endpoint-1", 12345)),
    }
    .to_json()
}

/// Builds both sides from JSON. `tamper_answer` may rewrite the answer the client sees;
/// `client_cert` may substitute the certificate the client really uses.
pub fn pair(
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    client_cfg: TransportConfig,
    server_cfg: TransportConfig,
    tamper_answer: impl FnOnce(String) -> String,
    client_cert: Option<LocalIdentity>,
    now: Instant,
) -> Pair {
    let client_identity = LocalIdentity::generate().unwrap();
    let payload_json = JoinPayload::new(&client_identity, VideoPublish::None).to_json();

    // Server side: parse the payload, answer. The server's transport uses the RTP parameters
    // it announced, as a real server does.
    let server_identity = LocalIdentity::generate().unwrap();
    let server_creds = IceCredentials::generate_with_len(16, 24);
    let payload = JoinPayload::parse(&payload_json).unwrap();
    let answer_json = tamper_answer(answer_json(&server_creds, &server_identity, server_addr));
    let answer = ServerAnswer::parse(&answer_json)
        .unwrap()
        .into_rtc()
        .unwrap();
    let mut from_payload = RemotePeer::from_payload(&payload).unwrap();
    from_payload.rtp = answer.rtp_params().unwrap();
    let server = Transport::new(
        server_cfg,
        LocalEndpoint {
            addr: server_addr,
            ice: server_creds.clone(),
            certificate: server_identity.certificate.clone(),
            setup: payload.fingerprints[0].setup.complement(),
        },
        from_payload,
        now,
    )
    .unwrap();

    // Client side: connect with what the answer says.
    let cert = client_cert.unwrap_or_else(|| client_identity.clone());
    let client = Transport::new(
        client_cfg,
        LocalEndpoint {
            addr: client_addr,
            ice: client_identity.ice.clone(),
            certificate: cert.certificate,
            setup: Setup::Passive,
        },
        RemotePeer::from_answer(&answer).unwrap(),
        now,
    )
    .unwrap();
    Pair {
        client,
        server,
        client_identity,
        answer_json,
    }
}

/// A participant (default settings) and a server side with `server_cfg`, connected on a
/// simulated network seeded with `seed`; panics if they do not connect within 10 s of virtual
/// time. Returns the events each side reported on the way.
pub fn connected_pair(seed: u64, server_cfg: TransportConfig) -> (Sim, Pair, [Vec<Event>; 2]) {
    connected_pair_answering(seed, server_cfg, |_| {})
}

/// [`connected_pair`] with the answer rewritten by `edit_answer` (a JSON value) for both sides.
pub fn connected_pair_answering(
    seed: u64,
    server_cfg: TransportConfig,
    edit_answer: impl FnOnce(&mut serde_json::Value),
) -> (Sim, Pair, [Vec<Event>; 2]) {
    connected_pair_configured(seed, TransportConfig::default(), server_cfg, edit_answer)
}

/// [`connected_pair_answering`] with the participant's settings too.
pub fn connected_pair_configured(
    seed: u64,
    client_cfg: TransportConfig,
    server_cfg: TransportConfig,
    edit_answer: impl FnOnce(&mut serde_json::Value),
) -> (Sim, Pair, [Vec<Event>; 2]) {
    let mut sim = Sim::new(seed);
    let mut p = pair(
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:32000".parse().unwrap(),
        client_cfg,
        server_cfg,
        |a| {
            let mut v: serde_json::Value = serde_json::from_str(&a).unwrap();
            edit_answer(&mut v);
            v.to_string()
        },
        None,
        sim.now,
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    let deadline = sim.now + Duration::from_secs(10);
    let ok = sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |ts, _| ts.iter().all(|t| t.is_connected()),
    );
    assert!(
        ok,
        "not connected: client {} server {}",
        p.client.state(),
        p.server.state()
    );
    (sim, p, ev)
}
