//! H.264 through OpenH264, built from the source the `openh264` crate bundles (a C++ compiler,
//! no system library), so a fresh machine needs nothing more. Telegram's clients prefer H.264
//! when the server offers it (docs/protocol.md §5.2), and the local server offers it.
//!
//! The encoder takes [`Frame`]s and gives Annex B access units (what
//! `groupcall_media::video::packetize` takes); the decoder takes what the frame assembler hands
//! out and gives [`Frame`]s back. Both are synchronous and CPU-bound: the caller runs them off
//! the call's task.

use std::time::Duration;

use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType, UsageType};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

pub use super::codec::EncodedFrame;
use super::frame::Frame;
use crate::error::{Error, Result};

fn codec_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Codec {
        codec: "H.264",
        reason: format!("{what}: {e}"),
    }
}

/// A [`Frame`] as OpenH264 reads it.
struct I420<'a>(&'a Frame);

impl YUVSource for I420<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width as usize, self.0.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let cw = (self.0.width as usize).div_ceil(2);
        (self.0.width as usize, cw, cw)
    }

    fn y(&self) -> &[u8] {
        self.0.y()
    }

    fn u(&self) -> &[u8] {
        let (w, h) = (self.0.width as usize, self.0.height as usize);
        let c = w.div_ceil(2) * h.div_ceil(2);
        &self.0.data()[w * h..w * h + c]
    }

    fn v(&self) -> &[u8] {
        let (w, h) = (self.0.width as usize, self.0.height as usize);
        let c = w.div_ceil(2) * h.div_ceil(2);
        &self.0.data()[w * h + c..]
    }
}

/// A camera- or screen-tuned H.264 encoder for one picture size.
pub struct H264Encoder {
    encoder: Encoder,
    width: u32,
    height: u32,
    keyframe_next: bool,
}

impl H264Encoder {
    /// An encoder for `width` x `height` at up to `fps` frames a second, aiming at `bitrate_bps`.
    pub fn new(width: u32, height: u32, fps: f32, bitrate_bps: u32, screen: bool) -> Result<Self> {
        Frame::check_size(width, height)?;
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_bps.max(10_000)))
            .max_frame_rate(FrameRate::from_hz(fps.clamp(1.0, 60.0)))
            .usage_type(if screen {
                UsageType::ScreenContentRealTime
            } else {
                UsageType::CameraVideoRealTime
            })
            // As libwebrtc: without frame skipping OpenH264 cannot hold the bitrate (and says so
            // on standard error for every encoder).
            .skip_frames(true)
            // OpenH264 has neither for screen content (it turns them off with a warning).
            .adaptive_quantization(!screen)
            .background_detection(!screen)
            // Measured on a textured 720p picture at 2.2 Mbit/s: 39 % less CPU than the default
            // (Medium) for the same quality (35.3 dB luma PSNR both, 2.06 against 2.01 Mbit/s;
            // `cargo bench -p groupcall-engine --bench video`).
            .complexity(openh264::encoder::Complexity::Low);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| codec_error("cannot create the encoder", e))?;
        Ok(H264Encoder {
            encoder,
            width,
            height,
            keyframe_next: true,
        })
    }

    /// The next frame is a keyframe (a receiver asked with PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_next = true;
    }

    /// Encodes `frame`, which must have this encoder's size. `None` when the encoder skipped it.
    pub fn encode(&mut self, frame: &Frame) -> Result<Option<EncodedFrame>> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(codec_error(
                "wrong picture size",
                format!(
                    "{}x{} given to a {}x{} encoder",
                    frame.width, frame.height, self.width, self.height
                ),
            ));
        }
        if std::mem::take(&mut self.keyframe_next) {
            self.encoder.force_intra_frame();
        }
        let out = self
            .encoder
            .encode(&I420(frame))
            .map_err(|e| codec_error("encoding failed", e))?;
        let keyframe = matches!(out.frame_type(), FrameType::IDR | FrameType::I);
        let data = out.to_vec();
        if data.is_empty() || matches!(out.frame_type(), FrameType::Skip) {
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            data,
            keyframe,
            timestamp: frame.timestamp,
        }))
    }
}

/// An H.264 decoder.
pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self> {
        let decoder = Decoder::new().map_err(|e| codec_error("cannot create the decoder", e))?;
        Ok(H264Decoder { decoder })
    }

    /// Decodes one access unit (Annex B). `None` while the decoder has no picture to show (it
    /// waits for a keyframe); an error for data it cannot decode (ask the sender for a keyframe).
    pub fn decode(&mut self, access_unit: &[u8], timestamp: Duration) -> Result<Option<Frame>> {
        let Some(yuv) = self
            .decoder
            .decode(access_unit)
            .map_err(|e| codec_error("decoding failed", e))?
        else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (ys, us, vs) = yuv.strides();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = Vec::with_capacity(Frame::size(w as u32, h as u32));
        for row in 0..h {
            data.extend_from_slice(&yuv.y()[row * ys..row * ys + w]);
        }
        for row in 0..ch {
            data.extend_from_slice(&yuv.u()[row * us..row * us + cw]);
        }
        for row in 0..ch {
            data.extend_from_slice(&yuv.v()[row * vs..row * vs + cw]);
        }
        Frame::from_i420(w as u32, h as u32, timestamp, data).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern;
    use groupcall_media::VideoCodec;

    #[test]
    fn simulcast_layers_decode_at_their_sizes_and_a_layer_coming_back_starts_on_a_keyframe() {
        let mut sim = crate::video::simulcast::SimulcastEncoder::new(
            VideoCodec::H264,
            1280,
            720,
            30.0,
            &[150_000, 500_000, 1_500_000],
            false,
        )
        .unwrap();
        let mut decoders: Vec<H264Decoder> = (0..3).map(|_| H264Decoder::new().unwrap()).collect();
        let mut sizes = vec![None; 3];
        let mut keyframes = vec![Vec::new(); 3];
        for i in 0..12u32 {
            // The top layer goes off for frames 4..8 (the estimate fell), then comes back.
            let active = if (4..8).contains(&i) { 2 } else { 3 };
            let frame = pattern::draw(1280, 720, i, Duration::ZERO).unwrap();
            for (layer, e) in sim.encode(&frame, active).unwrap() {
                if e.keyframe {
                    keyframes[layer].push(i);
                }
                if let Some(out) = decoders[layer].decode(&e.data, e.timestamp).unwrap() {
                    assert_eq!(pattern::read_counter(&out), Some(i), "layer {layer}");
                    sizes[layer] = Some((out.width, out.height));
                }
            }
        }
        assert_eq!(
            sizes,
            [Some((320, 180)), Some((640, 360)), Some((1280, 720))]
        );
        assert_eq!(keyframes[0], [0]);
        assert_eq!(keyframes[2], [0, 8], "the top layer restarts on a keyframe");
    }

    #[test]
    fn garbage_is_a_decoding_error_or_nothing_and_a_wrong_size_is_refused() {
        let mut dec = H264Decoder::new().unwrap();
        for junk in [
            &[0u8, 0, 0, 1, 0x65, 0xff, 0x00][..],
            &[0xde, 0xad, 0xbe, 0xef],
            &[],
        ] {
            let _ = dec.decode(junk, Duration::ZERO); // an error or no picture, never a panic
        }
        let mut enc = H264Encoder::new(320, 180, 30.0, 300_000, false).unwrap();
        let wrong = pattern::draw(640, 360, 0, Duration::ZERO).unwrap();
        assert!(enc
            .encode(&wrong)
            .unwrap_err()
            .to_string()
            .contains("640x360"));
    }
}
