//! Video frames before encoding and after decoding (issue 13 builds the rest on these).
//!
//! Everything here is I420 (planar 4:2:0, 8 bits), the format Telegram's clients, ntgcalls'
//! raw inputs and the encoders speak, so no conversion sits between a source and an encoder.
//! [`Frame`] is one picture with its timestamp; [`y4m`] reads YUV4MPEG2 files (raw frames with
//! a header naming their size and rate) without ffmpeg; [`pattern`] draws a test picture with a
//! frame counter that survives lossy coding and reads it back, so a test on the far side of a
//! call can tell which frames arrived, in which order; [`h264`] (cargo feature `h264`, on by
//! default) and [`vp8`] (cargo feature `vp8`, off by default: it links the system's libvpx)
//! encode and decode them, both handing out a [`codec::EncodedFrame`].

pub mod codec;
pub mod constraints;
pub mod frame;
#[cfg(feature = "h264")]
pub mod h264;
pub mod pattern;
pub mod publish;
pub mod receive;
pub mod scale;
pub mod send;
pub mod simulcast;
pub mod source;
#[cfg(feature = "vp8")]
pub mod vp8;
pub mod y4m;

pub use constraints::VideoSubscription;
pub use frame::Frame;
pub use publish::VideoKind;
pub use receive::{ReceivedVideo, VideoReceiveStats, VideoSink};
pub use send::VideoSendStats;
pub use source::{VideoPusher, VideoSource};
