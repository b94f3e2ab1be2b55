//! Video over RTP without I/O: the pieces a camera or screen stream needs between an encoder and
//! a [`crate::Transport`], and between a transport and a decoder.
//!
//! Sending: [`packetize::Packetizer`] cuts each encoded frame into RTP payloads small enough that
//! a protected packet stays within 1,200 bytes (VP8, RFC 7741; H.264 packetization-mode 1, RFC
//! 6184), and [`history::SendHistory`] keeps the last sent packets so that a receiver's NACK is
//! answered with an RTX retransmission (RFC 4588) on the stream's FID partner.
//!
//! Receiving: [`nack::NackGenerator`] watches one SSRC's sequence numbers and says which to ask
//! for again (RFC 4585 generic NACK) or when to ask for a keyframe instead, and
//! [`depacketize::FrameAssembler`] puts the packets (original or unwrapped RTX) back into whole
//! frames, in order, dropping and reporting the ones that cannot be completed.
//!
//! [`keyframe`] reads from a packet's first bytes whether it starts a keyframe; the local server
//! uses it to switch simulcast layers.
//!
//! Every type here is fed packets and an [`std::time::Instant`] by its caller and answers with
//! what to send or deliver; none reads a clock, owns a socket or grows without bound. Telegram's
//! payload types (VP8 100, H.264 104, each with RTX on the next number) are in
//! [`crate::VideoCodec`]; VP9 is recognised by [`keyframe`] but not packetized.

pub mod depacketize;
pub mod history;
pub mod keyframe;
pub mod layers;
pub mod nack;
pub mod packetize;
mod seq;

pub use depacketize::{
    AssemblerConfig, AssemblerEvent, AssemblerStats, DropReason, Frame, FrameAssembler,
};
pub use history::{unwrap_rtx, HistoryConfig, HistoryStats, RtxPacket, SendHistory};
pub use nack::{NackConfig, NackFeedback, NackGenerator, NackStats};
pub use packetize::{Packetizer, VideoPacket, DEFAULT_MAX_PAYLOAD};
