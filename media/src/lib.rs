//! # groupcall-media: the sans-IO media core
//!
//! Where it sits: `engine` asks this crate for a fresh [`LocalIdentity`] and its [`JoinPayload`],
//! `signaling` carries the payload to the server and brings back the [`ServerAnswer`], and a
//! [`Transport`] built from the two runs ICE, DTLS and SRTP against the server. The engine's
//! driver feeds it `(now, datagram)` and sends what it hands back; decrypted RTP from every
//! speaker comes out as events. The local server (`sfu`) uses the same transport in ICE-lite mode
//! for each participant.
//!
//! Nothing here opens a socket, reads the clock or spawns a task, so every protocol behaviour is
//! testable on virtual time over a simulated network ([`sim`]). [`video`] holds the same kind of
//! building blocks for video RTP: packetizing, reassembly, NACK and RTX.

pub mod answer;
pub mod bwe;
pub mod datachannel;
pub mod demux;
mod dtls;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod ice;
pub mod identity;
pub mod pacer;
pub mod payload;
pub mod rtp;
pub mod sim;
pub mod srtp;
pub mod stats;
pub mod transport;
pub mod twcc;
pub mod video;

#[cfg(feature = "driver")]
pub mod driver;

pub use answer::{RtcAnswer, ServerAnswer, VideoCodec};
pub use datachannel::{
    ChannelRole, CloseReason, DataChannel, DataChannelEvent, DataChannelStats, SctpRole,
};
pub use error::{Error, FailureCause, Result};
pub use ice::IceTimeouts;
pub use identity::{Fingerprint, IceCredentials, LocalIdentity};
pub use payload::{JoinPayload, Setup, VideoPublish};
pub use rtp::{AudioLevel, ExtensionIds, OutgoingRtp, PayloadKind, RtpPacket, RtpParams};
pub use srtp::SrtpProfile;
pub use stats::TransportStats;
pub use transport::{
    ntp_time, rtcp, Deadlines, Event, IceRole, LocalEndpoint, RemotePeer, SenderInfo, State,
    Transmit, Transport, TransportConfig,
};
