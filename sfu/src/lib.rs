//! # groupcall-sfu: a local Telegram-compatible group-call server
//!
//! Where it sits: it plays Telegram's part, so that the engine, its tests, demos and bots in any
//! language run a group call offline. Clients call the `phone.*` look-alike methods of the
//! control API ([`api`], contract in this crate's README) with the join payload `media` built
//! for them; the [`calls`] state machine validates them as Telegram does; a join asks the media
//! plane ([`plane::MediaPlane`]: ICE-lite, DTLS, SRTP and RTP forwarding over UDP, from
//! `groupcall-media`) for the connection whose answer goes back as `params`; participants'
//! changes stream out as server-sent events.
//!
//! ```no_run
//! # async fn run(media: std::sync::Arc<dyn groupcall_sfu::MediaPlane>) -> groupcall_sfu::Result<()> {
//! use groupcall_sfu::{media_events, ControlServer, ServerConfig};
//! let (events, receiver) = media_events(); // `events` goes to the media plane
//! let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), media).with_media_events(receiver);
//! let server = ControlServer::start(config).await?;
//! println!("control API on http://{}", server.local_addr());
//! server.shutdown().await;
//! # drop(events); Ok(()) }
//! ```

pub mod api;
pub mod calls;
pub mod constraints;
pub mod error;
pub mod feedback;
pub mod forwarder;
#[doc(hidden)]
pub mod fuzz;
pub mod impair;
pub mod media;
pub mod plane;
pub mod server;
pub mod simulcast;

pub use api::{ControlServer, ServerConfig};
pub use calls::{Call, CallId, Calls, Participant, ParticipantVideo, PeerId, Update};
pub use error::{Error, Result};
pub use forwarder::{ForwarderStats, ParticipantStats, VideoOffer};
pub use media::UdpMediaPlane;
pub use plane::{
    media_events, MediaEvent, MediaEventReceiver, MediaEvents, MediaPlane, SilenceTracker,
    STUN_SILENCE_TIMEOUT,
};
pub use server::{LocalServer, LocalServerConfig};
