//! VP8 through the system's libvpx (Debian's `libvpx-dev`, found with pkg-config; the
//! `env-libvpx-sys` bindings are pre-generated, so no libclang). VP8 is the first video codec in
//! the list Telegram's clients offer (payload type 100), and what ntgcalls sends when the answer
//! has no H.264 (docs/protocol.md §12.11).
//!
//! The API is `h264.rs`'s, so the sending and receiving sides take either: the encoder
//! takes [`Frame`]s and gives one VP8 frame per picture (what `groupcall_media::video::packetize`
//! takes for `VideoCodec::Vp8`); the decoder takes what the frame assembler hands out and gives
//! [`Frame`]s back. Both are synchronous and CPU-bound: the caller runs them off the call's task.
//!
//! The encoder is set up as libwebrtc sets up its own VP8 encoder for a call: one pass, no
//! look-ahead, constant bitrate with frame dropping, the realtime deadline at a negative
//! `cpu-used` (speed over quality, adaptively), error resilient, keyframes when asked for and
//! libvpx's own at most 3,000 frames apart.

use std::ffi::{c_char, c_int, c_uint, c_ulong, CStr};
use std::mem::MaybeUninit;
use std::ptr;
use std::time::Duration;

use vpx_sys as vpx;

pub use super::codec::EncodedFrame;
use super::frame::{Frame, MAX_DIMENSION};
use crate::error::{Error, Result};

fn codec_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Codec {
        codec: "VP8",
        reason: format!("{what}: {e}"),
    }
}

/// A C string from libvpx, or `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn c_text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// libvpx's words for `res`, and the context's detail when it has one.
fn vpx_error(ctx: Option<&mut vpx::vpx_codec_ctx_t>, res: vpx::vpx_codec_err_t) -> String {
    // SAFETY: vpx_codec_err_to_string returns a static string for any code.
    let mut text = unsafe { c_text(vpx::vpx_codec_err_to_string(res)) }
        .unwrap_or_else(|| format!("libvpx error {}", res as u32));
    if let Some(ctx) = ctx {
        // SAFETY: `ctx` is an initialized context; the detail is NULL or a NUL-terminated
        // string owned by the context, read before any other call on it.
        if let Some(detail) = unsafe { c_text(vpx::vpx_codec_error_detail(ctx)) } {
            text = format!("{text} ({detail})");
        }
    }
    text
}

/// A fresh, uninitialized codec context, boxed so its address stays put while libvpx holds it.
fn new_context() -> Box<vpx::vpx_codec_ctx_t> {
    // SAFETY: all zeroes is a valid `vpx_codec_ctx_t`: NULL pointers, zero integers, the union's
    // NULL pointer, and `err` 0 (VPX_CODEC_OK). It is what C callers start from.
    Box::new(unsafe { MaybeUninit::zeroed().assume_init() })
}

/// Encoder threads as libwebrtc picks them for VP8: more only for large pictures and when the
/// machine has the cores.
fn encoder_threads(width: u32, height: u32) -> c_uint {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pixels = width as u64 * height as u64;
    if pixels >= 1920 * 1080 && cores > 8 {
        8
    } else if pixels > 1280 * 960 && cores >= 6 {
        3
    } else if pixels > 640 * 480 && cores >= 3 {
        2
    } else {
        1
    }
}

/// A camera- or screen-tuned VP8 encoder for one picture size.
pub struct Vp8Encoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
    /// The configuration the context was made from; kept alive (and in place) with it.
    _cfg: Box<vpx::vpx_codec_enc_cfg_t>,
    width: u32,
    height: u32,
    /// One frame at the nominal rate, in the 90 kHz time base.
    frame_ticks: i64,
    last_pts: Option<i64>,
    keyframe_next: bool,
}

// SAFETY: a libvpx codec context has no tie to the thread that made it (no thread-local state,
// no callbacks); every use goes through `&mut self`, so it is never used from two threads at
// once. Only moving it between threads is allowed (the type is not `Sync`).
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    /// An encoder for `width` x `height` at up to `fps` frames a second, aiming at `bitrate_bps`.
    pub fn new(width: u32, height: u32, fps: f32, bitrate_bps: u32, screen: bool) -> Result<Self> {
        Frame::check_size(width, height)?;
        let fps = if fps.is_finite() {
            fps.clamp(1.0, 60.0)
        } else {
            30.0
        };
        // SAFETY: returns libvpx's static VP8 encoder interface.
        let iface = unsafe { vpx::vpx_codec_vp8_cx() };
        let mut cfg = Box::new(MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit());
        // SAFETY: `cfg` is writable memory for one configuration, which libvpx fills in whole.
        let res = unsafe { vpx::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) };
        if res != vpx::VPX_CODEC_OK {
            return Err(codec_error(
                "no default encoder configuration",
                vpx_error(None, res),
            ));
        }
        // SAFETY: vpx_codec_enc_config_default succeeded, so every field is set.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_threads = encoder_threads(width, height);
        cfg.g_timebase = vpx::vpx_rational {
            num: 1,
            den: 90_000,
        };
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        // Rate control as libwebrtc's: CBR, drop a frame rather than overshoot, a small buffer.
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = bitrate_bps.max(10_000) / 1000;
        cfg.rc_dropframe_thresh = 30;
        cfg.rc_resize_allowed = 0;
        cfg.rc_min_quantizer = if screen { 12 } else { 2 };
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = 3000;

        let mut ctx = new_context();
        // SAFETY: `ctx` is a zeroed context and `cfg` a complete configuration, both boxed and
        // owned by the encoder built below, so they outlive the context and never move; the ABI
        // version is the one the bindings were generated for (libvpx checks it).
        let res = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                iface,
                &*cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if res != vpx::VPX_CODEC_OK {
            // A failed init leaves nothing to destroy.
            return Err(codec_error(
                "cannot create the encoder",
                vpx_error(None, res),
            ));
        }
        let mut encoder = Vp8Encoder {
            ctx,
            _cfg: cfg,
            width,
            height,
            frame_ticks: (90_000.0 / fps).round() as i64,
            last_pts: None,
            keyframe_next: true,
        };
        use vpx::vp8e_enc_control_id::*;
        // libwebrtc's speed on x86: -6, and -4 below CIF, where there is time to spare.
        let cpu_used = if width * height < 352 * 288 { -4 } else { -6 };
        encoder.control(VP8E_SET_CPUUSED, cpu_used)?;
        encoder.control(VP8E_SET_STATIC_THRESHOLD, 1)?;
        encoder.control(
            VP8E_SET_TOKEN_PARTITIONS,
            vpx::vp8e_token_partitions::VP8_ONE_TOKENPARTITION as c_int,
        )?;
        // A keyframe may take at most this share of a frame's budget, in percent (libwebrtc's
        // formula: half the optimal buffer, in frames).
        let max_intra = ((600.0 * 0.5 * fps / 10.0) as c_int).max(300);
        encoder.control(VP8E_SET_MAX_INTRA_BITRATE_PCT, max_intra)?;
        // Camera: the denoiser on luma (libwebrtc's default on x86). Screen: screen-content
        // mode with its stricter rate control, no denoiser.
        encoder.control(VP8E_SET_NOISE_SENSITIVITY, if screen { 0 } else { 1 })?;
        encoder.control(VP8E_SET_SCREEN_CONTENT_MODE, if screen { 2 } else { 0 })?;
        Ok(encoder)
    }

    fn control(&mut self, id: vpx::vp8e_enc_control_id, value: c_int) -> Result<()> {
        // SAFETY: the context is initialized; every control passed here takes one `int`, which
        // is what the variadic argument is.
        let res = unsafe { vpx::vpx_codec_control_(&mut *self.ctx, id as c_int, value) };
        if res != vpx::VPX_CODEC_OK {
            return Err(codec_error(
                &format!("cannot set {id:?} to {value}"),
                vpx_error(Some(&mut *self.ctx), res),
            ));
        }
        Ok(())
    }

    /// The next frame is a keyframe (a receiver asked with PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_next = true;
    }

    /// Encodes `frame`, which must have this encoder's size. `None` when the encoder dropped it
    /// (rate control).
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
        let (w, h) = (frame.width as usize, frame.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let data = frame.data();
        debug_assert_eq!(data.len(), w * h + 2 * cw * ch);
        // SAFETY: all zeroes is a valid `vpx_image_t`: NULL pointers, zero integers, and enums
        // whose zero is a declared value (VPX_IMG_FMT_NONE, VPX_CS_UNKNOWN, studio range).
        let mut img: vpx::vpx_image_t = unsafe { MaybeUninit::zeroed().assume_init() };
        img.fmt = vpx::vpx_img_fmt::VPX_IMG_FMT_I420;
        img.w = frame.width;
        img.h = frame.height;
        img.d_w = frame.width;
        img.d_h = frame.height;
        img.bit_depth = 8;
        img.bps = 12;
        img.x_chroma_shift = 1;
        img.y_chroma_shift = 1;
        // The frame's own layout, described in place (vpx_img_wrap would round an odd width up
        // into the stride): Y, U and V back to back, no padding.
        img.planes[0] = data.as_ptr().cast_mut();
        img.planes[1] = data[w * h..].as_ptr().cast_mut();
        img.planes[2] = data[w * h + cw * ch..].as_ptr().cast_mut();
        img.stride = [w as c_int, cw as c_int, cw as c_int, 0];

        // libvpx wants rising timestamps; a frame without a later one is put a frame later.
        let ts = i64::try_from(frame.timestamp.as_nanos() * 9 / 100_000).unwrap_or(i64::MAX / 2);
        let pts = match self.last_pts {
            Some(last) if ts <= last => last.saturating_add(self.frame_ticks),
            _ => ts,
        };
        self.last_pts = Some(pts);
        let forced = std::mem::take(&mut self.keyframe_next);
        let flags = if forced {
            vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: the context is initialized; `img` describes `frame`'s three planes within its
        // data (Frame guarantees the I420 size checked above), which is borrowed for this call;
        // libvpx only reads the image and, with no look-ahead, copies it before returning.
        let res = unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx,
                &img,
                pts,
                self.frame_ticks as c_ulong,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        };
        if res != vpx::VPX_CODEC_OK {
            self.keyframe_next |= forced;
            return Err(codec_error(
                "encoding failed",
                vpx_error(Some(&mut *self.ctx), res),
            ));
        }
        let mut out = Vec::new();
        let mut keyframe = false;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialized and `iter` is the iteration state libvpx
            // started from NULL.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: a non-NULL packet is valid until the next call on the context. Its kind
            // says which member of the union is set: `frame` for a frame packet, whose
            // `buf`/`sz` are the encoded bytes.
            unsafe {
                let pkt = &*pkt;
                if pkt.kind == vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let f = pkt.data.frame;
                    if !f.buf.is_null() && f.sz > 0 {
                        out.extend_from_slice(std::slice::from_raw_parts(
                            f.buf as *const u8,
                            f.sz as usize,
                        ));
                    }
                    keyframe |= f.flags & vpx::VPX_FRAME_IS_KEY != 0;
                }
            }
        }
        if out.is_empty() {
            // Dropped by rate control: a keyframe asked for is still owed.
            self.keyframe_next |= forced;
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            data: out,
            keyframe,
            timestamp: frame.timestamp,
        }))
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: a `Vp8Encoder` exists only with an initialized context, destroyed once, here;
        // the configuration it was made from is freed after (the fields drop after this body).
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A VP8 decoder.
pub struct Vp8Decoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
    _cfg: Box<vpx::vpx_codec_dec_cfg_t>,
    /// Delta frames are refused until a keyframe decodes: at the start, and after an error or a
    /// corrupt frame, so that no picture built on a broken reference is shown.
    need_keyframe: bool,
}

// SAFETY: as for `Vp8Encoder`: the context has no thread affinity, and `&mut self` keeps every
// use on one thread at a time.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    pub fn new() -> Result<Self> {
        let mut ctx = new_context();
        // One thread, as libwebrtc decodes VP8.
        let cfg = Box::new(vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        });
        // SAFETY: `ctx` is a zeroed context and `cfg` a complete configuration, both boxed and
        // owned by the decoder built below; the interface is libvpx's static VP8 decoder and
        // the ABI version the one the bindings were generated for.
        let res = unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_dx(),
                &*cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if res != vpx::VPX_CODEC_OK {
            return Err(codec_error(
                "cannot create the decoder",
                vpx_error(None, res),
            ));
        }
        Ok(Vp8Decoder {
            ctx,
            _cfg: cfg,
            need_keyframe: true,
        })
    }

    /// Decodes one VP8 frame. An error for data it cannot decode (ask the sender for a
    /// keyframe): garbage, a corrupt frame, a delta frame before the first keyframe or after an
    /// error, a keyframe larger than [`MAX_DIMENSION`] a side. `None` when the frame decodes
    /// but shows no picture.
    pub fn decode(&mut self, frame: &[u8], timestamp: Duration) -> Result<Option<Frame>> {
        if frame.is_empty() {
            return Err(codec_error("decoding failed", "an empty frame"));
        }
        let len = c_uint::try_from(frame.len())
            .map_err(|_| codec_error("decoding failed", "a frame over 4 GiB"))?;
        let mut info = vpx::vpx_codec_stream_info_t {
            sz: std::mem::size_of::<vpx::vpx_codec_stream_info_t>() as c_uint,
            w: 0,
            h: 0,
            is_kf: 0,
        };
        // SAFETY: `frame` is `len` readable bytes; `info` is a writable stream-info record with
        // its size set, as libvpx requires. Peeking reads only the frame header.
        let peek = unsafe {
            vpx::vpx_codec_peek_stream_info(vpx::vpx_codec_vp8_dx(), frame.as_ptr(), len, &mut info)
        };
        let keyframe = peek == vpx::VPX_CODEC_OK && info.is_kf != 0;
        if keyframe {
            // Refused before libvpx allocates for it: past this a header is nonsense.
            if !(2..=MAX_DIMENSION).contains(&info.w) || !(2..=MAX_DIMENSION).contains(&info.h) {
                self.need_keyframe = true;
                return Err(codec_error(
                    "picture size refused",
                    format!(
                        "a {}x{} keyframe (at most {MAX_DIMENSION} a side)",
                        info.w, info.h
                    ),
                ));
            }
        } else if self.need_keyframe {
            return Err(codec_error(
                "cannot decode",
                "a delta frame without a keyframe before it",
            ));
        }
        // SAFETY: the context is initialized; `frame` is `len` readable bytes, borrowed for the
        // call (libvpx does not keep it: no frame threading, no input fragments).
        let res = unsafe {
            vpx::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), len, ptr::null_mut(), 0)
        };
        if res != vpx::VPX_CODEC_OK {
            self.need_keyframe = true;
            return Err(codec_error(
                "decoding failed",
                vpx_error(Some(&mut *self.ctx), res),
            ));
        }
        let mut corrupted: c_int = 0;
        // SAFETY: the context is initialized; VP8D_GET_FRAME_CORRUPTED writes one `int` through
        // the pointer, which points at a live local.
        let res = unsafe {
            vpx::vpx_codec_control_(
                &mut *self.ctx,
                vpx::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        // The pictures are taken out either way, so none is left for the next call.
        let mut picture = None;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialized and `iter` is the iteration state libvpx
            // started from NULL.
            let img = unsafe { vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: a non-NULL image is the decoder's, valid until the next decode call.
            picture = Some(unsafe { copy_image(&*img, timestamp) });
        }
        if res != vpx::VPX_CODEC_OK || corrupted != 0 {
            self.need_keyframe = true;
            return Err(codec_error(
                "decoding failed",
                if res != vpx::VPX_CODEC_OK {
                    vpx_error(Some(&mut *self.ctx), res)
                } else {
                    "the frame is corrupt (a reference is missing or damaged)".into()
                },
            ));
        }
        let picture = picture.transpose()?;
        if keyframe {
            self.need_keyframe = false;
        }
        Ok(picture)
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: a `Vp8Decoder` exists only with an initialized context, destroyed once, here.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A decoded libvpx image copied into a [`Frame`].
///
/// # Safety
/// `img` is an image the decoder returned, with its planes still valid.
unsafe fn copy_image(img: &vpx::vpx_image_t, timestamp: Duration) -> Result<Frame> {
    // Read as a number: a value outside the Rust enum must not be materialised as one.
    // SAFETY: `fmt` is a 32-bit field of a live struct.
    let fmt = unsafe { ptr::addr_of!(img.fmt).cast::<u32>().read() };
    if fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 as u32 {
        return Err(codec_error(
            "unexpected picture format",
            format!("libvpx format {fmt:#x}, not I420"),
        ));
    }
    let (width, height) = (img.d_w, img.d_h);
    if !(2..=MAX_DIMENSION).contains(&width) || !(2..=MAX_DIMENSION).contains(&height) {
        return Err(codec_error(
            "picture size refused",
            format!("{width}x{height} (at most {MAX_DIMENSION} a side)"),
        ));
    }
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = Vec::with_capacity(Frame::size(width, height));
    for (plane, pw, ph) in [(0, w, h), (1, cw, ch), (2, cw, ch)] {
        let stride = img.stride[plane];
        let base = img.planes[plane];
        if base.is_null() || stride < 0 || (stride as usize) < pw {
            return Err(codec_error(
                "unexpected picture layout",
                format!("plane {plane}: stride {stride} for {pw} pixels"),
            ));
        }
        for row in 0..ph {
            // SAFETY: an I420 image from libvpx holds `ph` rows of `stride` bytes in this
            // plane, each with at least `pw` pixels (checked above).
            let line = unsafe { std::slice::from_raw_parts(base.add(row * stride as usize), pw) };
            data.extend_from_slice(line);
        }
    }
    Frame::from_i420(width, height, timestamp, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern;

    fn assert_send<T: Send>() {}

    #[test]
    fn odd_sizes_and_screen_content_round_trip_and_a_wrong_size_is_refused() {
        assert_send::<Vp8Encoder>();
        assert_send::<Vp8Decoder>();
        for (w, h, screen) in [(321, 181, false), (1280, 720, true), (2, 2, false)] {
            let mut enc = Vp8Encoder::new(w, h, 15.0, 1_000_000, screen).unwrap();
            let mut dec = Vp8Decoder::new().unwrap();
            for i in 0..5u32 {
                // Timestamps that do not advance are fine: the encoder spaces them itself.
                let frame = pattern::draw(w, h, i, Duration::ZERO).unwrap();
                let e = enc.encode(&frame).unwrap().expect("nothing dropped here");
                assert_eq!(e.keyframe, i == 0, "{w}x{h} frame {i}");
                let out = dec.decode(&e.data, e.timestamp).unwrap().unwrap();
                assert_eq!((out.width, out.height), (w, h));
                if w >= 160 {
                    assert_eq!(pattern::read_counter(&out), Some(i), "{w}x{h}");
                }
            }
        }
        let mut enc = Vp8Encoder::new(320, 180, 30.0, 300_000, false).unwrap();
        let wrong = pattern::draw(640, 360, 0, Duration::ZERO).unwrap();
        let e = enc.encode(&wrong).unwrap_err().to_string();
        assert!(e.starts_with("VP8: ") && e.contains("640x360"), "{e}");
    }

    /// A few real frames: a keyframe and the two deltas behind it, at 320x180.
    fn real_frames() -> Vec<Vec<u8>> {
        let mut enc = Vp8Encoder::new(320, 180, 30.0, 300_000, false).unwrap();
        (0..3u32)
            .map(|i| {
                let f = pattern::draw(320, 180, i, Duration::from_millis(33 * i as u64)).unwrap();
                enc.encode(&f).unwrap().unwrap().data
            })
            .collect()
    }

    #[test]
    fn garbage_is_an_error_or_nothing_and_the_decoder_recovers_on_the_next_keyframe() {
        let frames = real_frames();
        let (key, delta) = (&frames[0], &frames[1]);
        let mut dec = Vp8Decoder::new().unwrap();
        // A delta frame before any keyframe is refused without a picture.
        let e = dec.decode(delta, Duration::ZERO).unwrap_err().to_string();
        assert!(e.starts_with("VP8: ") && e.contains("keyframe"), "{e}");

        let mut junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0xde, 0xad, 0xbe, 0xef],
            key[..10].to_vec(),
            key[..key.len() / 2].to_vec(),
            // A keyframe header claiming 16383x16383.
            vec![
                0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0x3f, 0xff, 0x3f, 0, 0, 0, 0,
            ],
            // A keyframe header claiming 0x0.
            vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0, 0, 0, 0, 0],
            delta.clone(),
        ];
        // Real frames with bytes damaged, and deterministic noise with a keyframe's header.
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        };
        for n in 0..200 {
            let mut f = if n % 2 == 0 {
                key.clone()
            } else {
                delta.clone()
            };
            let at = 3 + next() as usize * f.len() / 256 % (f.len() - 3);
            for b in f.iter_mut().skip(at).take(8) {
                *b ^= next() | 1;
            }
            junk.push(f);
            let mut noise: Vec<u8> = (0..64 + next() as usize * 8).map(|_| next()).collect();
            noise[..10].copy_from_slice(&key[..10]);
            junk.push(noise);
        }
        for (n, j) in junk.iter().enumerate() {
            // An error or a picture of the size the header says, never a panic.
            if let Ok(Some(out)) = dec.decode(j, Duration::ZERO) {
                assert_eq!((out.width, out.height), (320, 180), "junk {n}");
            }
        }
        for e in [&junk[0], &junk[5], &junk[6]] {
            let e = dec.decode(e, Duration::ZERO).unwrap_err();
            assert!(matches!(e, Error::Codec { codec: "VP8", .. }), "{e}");
        }
        // After all that, a delta is refused until the next keyframe; then the stream decodes.
        let _ = dec.decode(&junk[2], Duration::ZERO);
        assert!(dec.decode(delta, Duration::ZERO).is_err());
        for (i, f) in frames.iter().enumerate() {
            let out = dec.decode(f, Duration::ZERO).unwrap().unwrap();
            assert_eq!(pattern::read_counter(&out), Some(i as u32));
        }
    }
}
