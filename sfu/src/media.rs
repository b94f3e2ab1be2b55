//! The real media plane: one UDP socket, one task, a [`Forwarder`] inside.
//!
//! The control plane talks to it through [`UdpMediaPlane`], which answers joins on the caller's
//! thread (the answer only needs the server's certificate and address) and hands the new
//! participant to the task over a channel, so the packet path owns its state and takes no lock.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use groupcall_media::{IceCredentials, JoinPayload, RtcAnswer, TransportConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::calls::CallId;
use crate::error::{Error, Result};
use crate::forwarder::{
    Answerer, Forwarder, ForwarderStats, Key, MediaEvent as FwdEvent, ParticipantStats, Role,
    VideoOffer,
};
use crate::plane::{MediaEvent, MediaEvents, MediaPlane};

/// What the media socket asks the kernel for: room for a burst from a few hundred senders.
const RECV_BUFFER_BYTES: usize = 4 << 20;

enum Command {
    Add {
        key: Key,
        payload: Box<JoinPayload>,
        ice: IceCredentials,
        role: Role,
    },
    Remove(Key),
    Stats(Key, oneshot::Sender<Option<ParticipantStats>>),
    Totals(oneshot::Sender<ForwarderStats>),
}

/// Handle to the media task. The task stops when the last handle is dropped.
#[derive(Clone)]
pub struct UdpMediaPlane {
    commands: mpsc::UnboundedSender<Command>,
    answerer: Answerer,
    local_addr: SocketAddr,
}

impl UdpMediaPlane {
    /// Binds `addr` (port 0 picks one) and starts the media task. `events` receives participants
    /// that went silent or failed. Must be called inside a tokio runtime.
    pub async fn start(
        addr: SocketAddr,
        config: TransportConfig,
        events: MediaEvents,
    ) -> io::Result<Self> {
        Self::start_with(addr, config, VideoOffer::default(), events).await
    }

    /// [`start`](Self::start) with answers whose `video` is `video`.
    pub async fn start_with(
        addr: SocketAddr,
        config: TransportConfig,
        video: VideoOffer,
        events: MediaEvents,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        // Every participant of this server sends on the same 20 ms grid, so their packets
        // arrive at one socket in bursts; at 200 calls a burst outgrew Linux's default 208 KiB
        // receive buffer and about 1 % of packets were dropped before the server read them.
        // The kernel caps the size at net.core.rmem_max.
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER_BYTES) {
            tracing::debug!("receive buffer stays at the system's default: {e}");
        }
        let local_addr = socket.local_addr()?;
        let forwarder = Forwarder::new(local_addr, config)
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_video_offer(video);
        let answerer = forwarder.answerer();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(socket, forwarder, rx, events));
        Ok(UdpMediaPlane {
            commands: tx,
            answerer,
            local_addr,
        })
    }

    /// The UDP address participants connect to (the answer's candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// RTP counters of one participant, or `None` if it has no connection.
    pub async fn participant_stats(&self, call: CallId, source: u32) -> Option<ParticipantStats> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(
                Key {
                    call: call.0,
                    source,
                },
                tx,
            ))
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Counters of the whole media plane.
    pub async fn totals(&self) -> Option<ForwarderStats> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Totals(tx)).ok()?;
        rx.await.ok()
    }
}

impl UdpMediaPlane {
    fn add(&self, call: CallId, payload: &JoinPayload, role: Role) -> Result<RtcAnswer> {
        let (ice, answer) = self.answerer.answer(payload, role);
        let key = Key {
            call: call.0,
            source: payload.audio_ssrc(),
        };
        self.commands
            .send(Command::Add {
                key,
                payload: Box::new(payload.clone()),
                ice,
                role,
            })
            .map_err(|_| Error::media("the media plane has stopped; restart the server"))?;
        Ok(answer)
    }
}

impl MediaPlane for UdpMediaPlane {
    fn add_participant(&self, call: CallId, payload: &JoinPayload) -> Result<RtcAnswer> {
        self.add(call, payload, Role::Main)
    }

    fn add_presentation(&self, call: CallId, payload: &JoinPayload) -> Result<RtcAnswer> {
        self.add(call, payload, Role::Presentation)
    }

    fn remove_participant(&self, call: CallId, source: u32) {
        let _ = self.commands.send(Command::Remove(Key {
            call: call.0,
            source,
        }));
    }
}

async fn run(
    socket: UdpSocket,
    mut fwd: Forwarder,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: MediaEvents,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some((to, data)) = fwd.poll_transmit() {
            if let Err(e) = socket.send_to(&data, to).await {
                tracing::debug!("media send to {to} failed: {e}");
            }
        }
        while let Some(e) = fwd.poll_event() {
            match e {
                FwdEvent::Gone { key, cause } => {
                    tracing::info!(
                        call = key.call,
                        source = key.source,
                        "participant gone: {cause}"
                    );
                    fwd.remove(Instant::now(), key);
                    events.report(MediaEvent::Silent {
                        call: CallId(key.call),
                        source: key.source,
                    });
                }
                FwdEvent::Connected { key, profile } => {
                    tracing::info!(
                        call = key.call,
                        source = key.source,
                        "participant connected, SRTP {profile}"
                    );
                }
                FwdEvent::DataChannelOpen { key } => {
                    tracing::info!(
                        call = key.call,
                        source = key.source,
                        "participant's data channel open"
                    );
                }
                FwdEvent::VideoCodec { key, codec } => {
                    tracing::info!(
                        call = key.call,
                        source = key.source,
                        "participant sends {} video",
                        codec.name()
                    );
                }
            }
        }
        let wake = fwd
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            // Commands first: a join's Add is queued before its client can know the answer, so
            // the client's first check must find the participant already there.
            biased;
            c = commands.recv() => match c {
                Some(Command::Add { key, payload, ice, role }) => {
                    if let Err(e) = fwd.add(Instant::now(), key, &payload, ice, role) {
                        tracing::warn!(call = key.call, source = key.source, "could not add participant: {e}");
                    }
                }
                Some(Command::Remove(key)) => fwd.remove(Instant::now(), key),
                Some(Command::Stats(key, reply)) => { let _ = reply.send(fwd.participant_stats(key)); }
                Some(Command::Totals(reply)) => { let _ = reply.send(fwd.stats()); }
                None => return,
            },
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => fwd.handle_datagram(Instant::now(), from, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::error!("media socket failed: {e}; the media plane stops");
                    return;
                }
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                fwd.handle_timeout(Instant::now());
            }
        }
    }
}
