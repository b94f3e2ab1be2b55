//! Simulcast encoding: one encoder per layer, of whichever codec the server takes (H.264
//! through OpenH264, feature `h264`; VP8 through libvpx, feature `vp8`).

use groupcall_media::VideoCodec;

use super::codec::{EncodedFrame, VideoEncoder};
use super::frame::Frame;
use super::scale::halve;
use crate::error::Result;

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
    layers: Vec<(u32, VideoEncoder)>,
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
            layers.push((halvings, VideoEncoder::new(codec, w, h, fps, *bps, screen)?));
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
