//! Simulcast encoding: one encoder per layer, of whichever codec the server takes (H.264
//! through OpenH264, feature `h264`; VP8 through libvpx, feature `vp8`).

use groupcall_media::VideoCodec;

use super::codec::EncodedFrame;
use super::frame::Frame;
use super::scale::halve;
use crate::error::{Error, Result};

/// One layer's encoder.
enum LayerEncoder {
    // Boxed: OpenH264's encoder is 7 KB, libvpx's a pointer.
    #[cfg(feature = "h264")]
    H264(Box<super::h264::H264Encoder>),
    #[cfg(feature = "vp8")]
    Vp8(super::vp8::Vp8Encoder),
}

impl LayerEncoder {
    fn new(
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
            VideoCodec::H264 => Ok(LayerEncoder::H264(Box::new(
                super::h264::H264Encoder::new(width, height, fps, bitrate_bps, screen)?,
            ))),
            #[cfg(feature = "vp8")]
            VideoCodec::Vp8 => Ok(LayerEncoder::Vp8(super::vp8::Vp8Encoder::new(
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

    fn request_keyframe(&mut self) {
        match self {
            #[cfg(feature = "h264")]
            LayerEncoder::H264(e) => e.request_keyframe(),
            #[cfg(feature = "vp8")]
            LayerEncoder::Vp8(e) => e.request_keyframe(),
            // A build without encoders makes none (`new` refuses).
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn encode(&mut self, frame: &Frame) -> Result<Option<EncodedFrame>> {
        match self {
            #[cfg(feature = "h264")]
            LayerEncoder::H264(e) => e.encode(frame),
            #[cfg(feature = "vp8")]
            LayerEncoder::Vp8(e) => e.encode(frame),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = frame;
                Ok(None)
            }
        }
    }
}

/// The codecs this build encodes, the one to prefer first.
pub fn encodable() -> Vec<VideoCodec> {
    [
        (cfg!(feature = "h264"), VideoCodec::H264),
        (cfg!(feature = "vp8"), VideoCodec::Vp8),
    ]
    .into_iter()
    .filter_map(|(built, c)| built.then_some(c))
    .collect()
}

/// A camera (three layers: quarter, half and full size) or a screen (two: half and full) as
/// simulcast, one encoder per layer, lowest first (docs/protocol.md §1.2, §5.2). Which layers run
/// is the caller's choice each frame, from the bandwidth estimate
/// (`groupcall_media::bwe::active_layers`) and the receivers' `SenderVideoConstraints`; a layer
/// that comes back on starts with a keyframe.
pub struct SimulcastEncoder {
    layers: Vec<(u32, LayerEncoder)>,
    was_active: Vec<bool>,
}

impl SimulcastEncoder {
    /// Layers for a `width` x `height` source: `count` of them, each half the size of the next,
    /// with bitrates `bitrates_bps` (lowest first).
    pub fn new(
        codec: VideoCodec,
        width: u32,
        height: u32,
        fps: f32,
        bitrates_bps: &[u32],
        screen: bool,
    ) -> Result<Self> {
        let count = bitrates_bps.len() as u32;
        let mut layers = Vec::new();
        for (i, bps) in bitrates_bps.iter().enumerate() {
            let halvings = count - 1 - i as u32;
            let (w, h) = ((width >> halvings).max(2), (height >> halvings).max(2));
            layers.push((halvings, LayerEncoder::new(codec, w, h, fps, *bps, screen)?));
        }
        Ok(SimulcastEncoder {
            was_active: vec![false; layers.len()],
            layers,
        })
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Every layer's next frame is a keyframe.
    pub fn request_keyframe(&mut self) {
        for (_, e) in &mut self.layers {
            e.request_keyframe();
        }
    }

    /// Encodes `frame` on the lowest `active` layers; returns (layer, encoded) for each.
    pub fn encode(&mut self, frame: &Frame, active: usize) -> Result<Vec<(usize, EncodedFrame)>> {
        let mut out = Vec::new();
        // Each layer's picture is made from the next larger one, not from the source again:
        // the quarter from the half.
        let mut scaled: Option<(u32, Frame)> = None;
        for (i, (halvings, enc)) in self.layers.iter_mut().enumerate().rev() {
            let on = i < active;
            if on && !self.was_active[i] {
                enc.request_keyframe();
            }
            self.was_active[i] = on;
            if !on {
                continue;
            }
            let input = if *halvings == 0 {
                frame
            } else {
                let next = match scaled.take() {
                    Some((h, f)) if h < *halvings => (*halvings, halve(&f, *halvings - h)?),
                    Some(same) if same.0 == *halvings => same,
                    _ => (*halvings, halve(frame, *halvings)?),
                };
                &scaled.insert(next).1
            };
            if let Some(e) = enc.encode(input)? {
                out.push((i, e));
            }
        }
        out.reverse();
        Ok(out)
    }
}
