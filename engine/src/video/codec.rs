//! One face for every codec this build has ([`super::h264`], [`super::vp8`]): what an encoder
//! hands out, and an encoder and a decoder chosen by [`VideoCodec`], so the sending and the
//! receiving side take either.

use std::time::Duration;

use groupcall_media::VideoCodec;

use super::frame::Frame;
use crate::error::{Error, Result};

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

/// An encoder of whichever codec this build has (simulcast runs one per layer).
pub enum VideoEncoder {
    // Boxed: OpenH264's encoder is 7 KB, libvpx's a pointer.
    #[cfg(feature = "h264")]
    H264(Box<super::h264::H264Encoder>),
    #[cfg(feature = "vp8")]
    Vp8(super::vp8::Vp8Encoder),
}

impl VideoEncoder {
    pub fn new(
        codec: VideoCodec,
        width: u32,
        height: u32,
        fps: f32,
        bitrate_bps: u32,
        screen: bool,
    ) -> Result<Self> {
        let _ = (width, height, fps, bitrate_bps, screen);
        match codec {
            #[cfg(feature = "h264")]
            VideoCodec::H264 => Ok(VideoEncoder::H264(Box::new(
                super::h264::H264Encoder::new(width, height, fps, bitrate_bps, screen)?,
            ))),
            #[cfg(feature = "vp8")]
            VideoCodec::Vp8 => Ok(VideoEncoder::Vp8(super::vp8::Vp8Encoder::new(
                width,
                height,
                fps,
                bitrate_bps,
                screen,
            )?)),
            other => Err(Error::Codec {
                codec: other.name(),
                reason: "this build cannot encode it: build groupcall-engine with the feature `h264` (H.264) or `vp8` (VP8)".into(),
            }),
        }
    }

    pub fn request_keyframe(&mut self) {
        match self {
            #[cfg(feature = "h264")]
            VideoEncoder::H264(e) => e.request_keyframe(),
            #[cfg(feature = "vp8")]
            VideoEncoder::Vp8(e) => e.request_keyframe(),
            // A build without encoders makes none (`new` refuses).
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    pub fn encode(&mut self, frame: &Frame) -> Result<Option<EncodedFrame>> {
        match self {
            #[cfg(feature = "h264")]
            VideoEncoder::H264(e) => e.encode(frame),
            #[cfg(feature = "vp8")]
            VideoEncoder::Vp8(e) => e.encode(frame),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = frame;
                Ok(None)
            }
        }
    }
}

/// A decoder of whichever codec a stream carries (H.264 with the feature `h264`, VP8 with `vp8`).
pub enum VideoDecoder {
    #[cfg(feature = "h264")]
    H264(super::h264::H264Decoder),
    #[cfg(feature = "vp8")]
    Vp8(super::vp8::Vp8Decoder),
}

impl VideoDecoder {
    pub fn new(codec: VideoCodec) -> Result<Self> {
        match codec {
            #[cfg(feature = "h264")]
            VideoCodec::H264 => Ok(VideoDecoder::H264(super::h264::H264Decoder::new()?)),
            #[cfg(feature = "vp8")]
            VideoCodec::Vp8 => Ok(VideoDecoder::Vp8(super::vp8::Vp8Decoder::new()?)),
            other => Err(Error::Codec {
                codec: other.name(),
                reason: "this build does not decode it (H.264 needs the feature `h264`, VP8 `vp8`; VP9 is not implemented)".into(),
            }),
        }
    }

    /// One frame as the codec's packetization carries it. `None` while there is nothing to show
    /// yet; an error for data that cannot be decoded (ask the sender for a keyframe).
    pub fn decode(&mut self, data: &[u8], timestamp: Duration) -> Result<Option<Frame>> {
        match self {
            #[cfg(feature = "h264")]
            VideoDecoder::H264(d) => d.decode(data, timestamp),
            #[cfg(feature = "vp8")]
            VideoDecoder::Vp8(d) => d.decode(data, timestamp),
            // A build without decoders makes none (`new` refuses).
            #[allow(unreachable_patterns)]
            _ => {
                let _ = (data, timestamp);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern;
    use crate::video::simulcast::encodable;
    use groupcall_media::video::depacketize::{AssemblerConfig, AssemblerEvent, FrameAssembler};
    use groupcall_media::video::packetize::{Packetizer, DEFAULT_MAX_PAYLOAD};
    use std::time::Instant;

    /// The whole video path but the network, for every codec this build has: pattern → encoder
    /// → RTP payloads → frame assembly → decoder → the counter read back, for every frame, at
    /// the picture's size, each quadrant's colour, and keyframes at the start and on request.
    #[test]
    fn pattern_frames_survive_encoding_packetizing_and_decoding_with_their_counters() {
        let (w, h) = (640, 360);
        for codec in encodable() {
            let mut enc = VideoEncoder::new(codec, w, h, 30.0, 800_000, false).unwrap();
            let mut dec = VideoDecoder::new(codec).unwrap();
            let mut pack = Packetizer::new(codec, DEFAULT_MAX_PAYLOAD, 1000, 0).unwrap();
            let mut asm = FrameAssembler::new(codec, AssemblerConfig::default());
            let now = Instant::now();
            let (mut read, mut keyframes) = (Vec::new(), Vec::new());
            for i in 0..60u32 {
                if i == 30 {
                    enc.request_keyframe();
                }
                let ts = Duration::from_millis(i as u64 * 33);
                let frame = pattern::draw(w, h, i, ts).unwrap();
                let Some(encoded) = enc.encode(&frame).unwrap() else {
                    continue;
                };
                if encoded.keyframe {
                    keyframes.push(i);
                }
                for p in pack.packetize(i * 3000, &encoded.data).unwrap() {
                    asm.push(now, p);
                }
                while let Some(ev) = asm.poll_event() {
                    let AssemblerEvent::Frame(f) = ev else {
                        panic!("{codec:?}: nothing is lost here: {ev:?}");
                    };
                    assert_eq!(f.keyframe, encoded.keyframe, "{codec:?} frame {i}");
                    let out = dec
                        .decode(&f.data, ts)
                        .unwrap()
                        .expect("a picture per frame");
                    assert_eq!((out.width, out.height), (w, h));
                    read.push(pattern::read_counter(&out).expect("the counter reads"));
                    // Each quadrant, away from the counter row and the moving bar. The first
                    // frames, while rate control finds its quantizer, are off by up to 6 in
                    // chroma.
                    for (want, (x, y)) in pattern::QUADRANTS.into_iter().zip([
                        (40, 60),
                        (480, 60),
                        (40, 260),
                        (480, 260),
                    ]) {
                        let (my, mu, mv) = out.mean_yuv(x, y, 100, 40).unwrap();
                        assert!(
                            (my - want.0 as f64).abs() < 6.0
                                && (mu - want.1 as f64).abs() < 8.0
                                && (mv - want.2 as f64).abs() < 8.0,
                            "{codec:?} frame {i} at ({x}, {y}): ({my:.0}, {mu:.0}, {mv:.0}) for {want:?}"
                        );
                    }
                }
            }
            assert_eq!(
                read,
                (0..60).collect::<Vec<u32>>(),
                "{codec:?}: every frame, in order"
            );
            assert_eq!(
                keyframes,
                [0, 30],
                "{codec:?}: the first frame and the one asked for"
            );
        }
    }
}
