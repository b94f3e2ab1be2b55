//! What every video encoder here hands out, whichever codec made it ([`super::h264`],
//! [`super::vp8`]), so the sending side takes either.

use std::time::Duration;

/// One encoded picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The codec's bitstream for one picture: for H.264 an Annex B access unit (NAL units behind
    /// start codes; a keyframe carries SPS and PPS first), for VP8 one frame as RFC 7741
    /// packetizes it.
    pub data: Vec<u8>,
    pub keyframe: bool,
    pub timestamp: Duration,
}
