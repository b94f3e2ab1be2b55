//! The whole local server in one handle: the UDP media plane and the HTTP control API started
//! together, as `groupcall serve`, `groupcall demo` and the end-to-end tests run it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use groupcall_media::{SrtpProfile, TransportConfig};

use crate::api::{ControlServer, ServerConfig};
use crate::calls::CallId;
use crate::error::{Error, Result};
use crate::forwarder::{ForwarderStats, ParticipantStats, VideoOffer};
use crate::media::UdpMediaPlane;
use crate::plane::media_events;

/// Where and how to run a [`LocalServer`]. The defaults pick free loopback ports.
#[derive(Clone, Debug)]
pub struct LocalServerConfig {
    /// The HTTP control API; must be a loopback address (the API has no authentication).
    pub control_addr: SocketAddr,
    /// The UDP socket every participant connects to; it is the answer's only candidate.
    pub media_addr: SocketAddr,
    /// How long the server waits after a participant's first ICE check before its DTLS
    /// ClientHello: libwebrtc clients (ntgcalls) lose their CONNECTED event when a loopback
    /// server is faster than their own setup (docs/protocol.md §12.4).
    pub dtls_start_delay: Duration,
    /// SRTP profiles the server accepts, in its order of preference (libwebrtc clients pick
    /// AES_CM_128_HMAC_SHA1_80 when it is offered; limit this to test the GCM profiles).
    pub srtp_profiles: Vec<SrtpProfile>,
    /// What answers offer for video: codecs (libwebrtc clients send H.264 when it is offered,
    /// VP8 when only VP8 is) and the start bitrate.
    pub video: VideoOffer,
}

impl Default for LocalServerConfig {
    fn default() -> Self {
        LocalServerConfig {
            control_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            media_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dtls_start_delay: TransportConfig::server().dtls_start_delay,
            srtp_profiles: SrtpProfile::ALL.to_vec(),
            video: VideoOffer::default(),
        }
    }
}

/// A running local server. Dropping it stops the control API; [`shutdown`](Self::shutdown)
/// also waits for open requests to finish.
pub struct LocalServer {
    control: ControlServer,
    media: UdpMediaPlane,
}

impl LocalServer {
    /// Binds both sockets and starts serving. Must be called inside a tokio runtime.
    pub async fn start(config: LocalServerConfig) -> Result<LocalServer> {
        let (events, receiver) = media_events();
        let transport = TransportConfig {
            dtls_start_delay: config.dtls_start_delay,
            srtp_profiles: config.srtp_profiles.clone(),
            ..TransportConfig::server()
        };
        let media =
            UdpMediaPlane::start_with(config.media_addr, transport, config.video.clone(), events)
                .await
                .map_err(|source| Error::Bind {
                    addr: config.media_addr,
                    source,
                })?;
        let control = ControlServer::start(
            ServerConfig::new(config.control_addr, Arc::new(media.clone()))
                .with_media_events(receiver),
        )
        .await?;
        Ok(LocalServer { control, media })
    }

    /// The control API's address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.local_addr()
    }

    /// The control API's base URL, as the local signaling backend and other clients take it.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control.local_addr())
    }

    /// The UDP address participants send media to.
    pub fn media_addr(&self) -> SocketAddr {
        self.media.local_addr()
    }

    /// RTP counters of one participant's connection, `None` when it has none.
    pub async fn participant_stats(&self, call: i64, source: u32) -> Option<ParticipantStats> {
        self.media.participant_stats(CallId(call), source).await
    }

    /// Counters of the whole media plane.
    pub async fn media_totals(&self) -> Option<ForwarderStats> {
        self.media.totals().await
    }

    /// Stops accepting requests and waits (a few seconds at most) for open ones.
    pub async fn shutdown(self) {
        self.control.shutdown().await;
    }
}
