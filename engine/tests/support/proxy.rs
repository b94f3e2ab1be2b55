//! A loopback UDP impairment proxy between a bot and the local server, and a signaling wrapper
//! that points the bot's answer at the proxy instead of the server.
//!
//! The proxy drops a share of the datagrams, delays each by a random time (which also reorders
//! them), and can be switched off altogether ("the server's media goes away").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use groupcall_engine::media::ServerAnswer;
use groupcall_engine::signaling::{
    CallInfo, CallRef, CallState, CreateCall, JoinOptions, Joined, ParticipantEdit,
    ParticipantPage, ParticipantQuery, PayloadFactory, PeerId, Result, Signaling, UpdateStream,
};
use tokio::net::UdpSocket;

use super::Rng;

/// How the proxy treats datagrams, both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Share of datagrams dropped (0.0..1.0).
    pub loss: f64,
    /// Each datagram is delayed by a uniform random time in `0..jitter`.
    pub jitter: Duration,
}

pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    pub dropped: Arc<AtomicU64>,
    pub passed: Arc<AtomicU64>,
    /// STUN datagrams passed towards the server (the client's checks and keepalives).
    pub stun_to_server: Arc<AtomicU64>,
    /// STUN datagrams passed towards the client (the server's answers).
    pub stun_to_client: Arc<AtomicU64>,
}

impl Proxy {
    /// Relays datagrams between clients that send to [`Proxy::addr`] and `server`.
    pub async fn start(server: SocketAddr, impairment: Impairment, seed: u64) -> Proxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let passed = Arc::new(AtomicU64::new(0));
        let stun_to_server = Arc::new(AtomicU64::new(0));
        let stun_to_client = Arc::new(AtomicU64::new(0));
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        let (d, dr, pa) = (down.clone(), dropped.clone(), passed.clone());
        let (up, downstream) = (stun_to_server.clone(), stun_to_client.clone());
        tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        // One server-facing socket per client, relaying the server's answers.
                        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        backs.insert(client, b.clone());
                        let (front, b2) = (front.clone(), b.clone());
                        let (d, dr, pa, rng) = (d.clone(), dr.clone(), pa.clone(), rng.clone());
                        let stun = downstream.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 2048];
                            while let Ok((n, _)) = b2.recv_from(&mut buf).await {
                                let counts = (pa.as_ref(), stun.as_ref());
                                relay(&front, client, &buf[..n], impairment, &d, &dr, counts, &rng);
                            }
                        });
                        b
                    }
                };
                let counts = (pa.as_ref(), up.as_ref());
                relay(&back, server, &buf[..n], impairment, &d, &dr, counts, &rng);
            }
        });
        Proxy {
            addr,
            down,
            dropped,
            passed,
            stun_to_server,
            stun_to_client,
        }
    }

    /// While down, every datagram is dropped.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[allow(clippy::too_many_arguments)]
fn relay(
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    data: &[u8],
    imp: Impairment,
    down: &AtomicBool,
    dropped: &AtomicU64,
    (passed, stun): (&AtomicU64, &AtomicU64),
    rng: &Mutex<Rng>,
) {
    let (lose, delay) = {
        let mut r = rng.lock().unwrap();
        (r.unit() < imp.loss, imp.jitter.mul_f64(r.unit()))
    };
    if down.load(Ordering::SeqCst) || lose {
        dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    passed.fetch_add(1, Ordering::Relaxed);
    // RFC 7983: a first byte of 0..=3 is STUN.
    if data.first().is_some_and(|&b| b <= 3) {
        stun.fetch_add(1, Ordering::Relaxed);
    }
    let socket = socket.clone();
    let data = data.to_vec();
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = socket.send_to(&data, to).await;
    });
}

/// A backend whose answers name the proxy as the server's only candidate.
pub struct ViaProxy {
    pub inner: Arc<dyn Signaling>,
    pub proxy: SocketAddr,
}

#[async_trait]
impl Signaling for ViaProxy {
    async fn join(
        &self,
        call: &CallRef,
        payloads: &mut PayloadFactory<'_>,
        options: &JoinOptions,
    ) -> Result<Joined> {
        let mut joined = self.inner.join(call, payloads, options).await?;
        if let ServerAnswer::Rtc(rtc) = &mut joined.answer {
            for c in &mut rtc.transport.candidates {
                c.ip = self.proxy.ip();
                c.port = self.proxy.port();
            }
        }
        Ok(joined)
    }
    async fn leave(&self, call: &CallRef, source: u32) -> Result<()> {
        self.inner.leave(call, source).await
    }
    async fn check(&self, call: &CallRef, sources: &[u32]) -> Result<Vec<u32>> {
        self.inner.check(call, sources).await
    }
    async fn participants(&self, call: &CallRef, q: &ParticipantQuery) -> Result<ParticipantPage> {
        self.inner.participants(call, q).await
    }
    async fn edit_participant(
        &self,
        call: &CallRef,
        p: Option<PeerId>,
        edit: &ParticipantEdit,
    ) -> Result<()> {
        self.inner.edit_participant(call, p, edit).await
    }
    fn updates(&self) -> UpdateStream {
        self.inner.updates()
    }
    async fn watch(&self, call: &CallRef) -> Result<()> {
        self.inner.watch(call).await
    }
    async fn get_call(&self, call: &CallRef) -> Result<CallState> {
        self.inner.get_call(call).await
    }
    async fn create_call(&self, chat: Option<PeerId>, c: &CreateCall) -> Result<CallInfo> {
        self.inner.create_call(chat, c).await
    }
    async fn start_scheduled(&self, call: &CallRef) -> Result<()> {
        self.inner.start_scheduled(call).await
    }
    async fn join_as_candidates(
        &self,
        call: &CallRef,
        chat: Option<PeerId>,
    ) -> Result<Vec<PeerId>> {
        self.inner.join_as_candidates(call, chat).await
    }
    async fn invite(&self, call: &CallRef, users: &[PeerId]) -> Result<()> {
        self.inner.invite(call, users).await
    }
    async fn discard(&self, call: &CallRef) -> Result<()> {
        self.inner.discard(call).await
    }
}
