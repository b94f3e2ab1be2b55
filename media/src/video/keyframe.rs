//! Where a video frame starts, read from an RTP packet without decoding anything.
//!
//! Both the local server (switching a receiver between simulcast layers only where the new one
//! starts a keyframe, `sfu/src/simulcast.rs`) and a receiver (starting to decode, recovering after
//! a loss) need to know whether a packet begins a keyframe. The answer lies in the first bytes of
//! the payload: the RTP payload descriptor and, for VP8, the frame header behind it. Both
//! functions take bytes from the network and never panic: anything truncated is "no".

use crate::answer::VideoCodec;

/// The RTP payload of a plaintext packet: after the CSRCs and the header extension, before the
/// padding. `None` when the header does not fit.
pub fn rtp_payload(raw: &[u8]) -> Option<&[u8]> {
    let first = *raw.first()?;
    let csrc = (first & 0x0f) as usize;
    let mut at = 12 + 4 * csrc;
    if first & 0x10 != 0 {
        let words = u16::from_be_bytes(raw.get(at + 2..at + 4)?.try_into().ok()?) as usize;
        at += 4 + 4 * words;
    }
    let mut end = raw.len();
    if first & 0x20 != 0 {
        end = end.checked_sub(*raw.last()? as usize)?;
    }
    raw.get(at..end)
}

/// Whether a video payload begins a keyframe (RFC 7741 VP8, RFC 6184 H.264, the VP9 payload
/// descriptor). Only the packet that starts the frame says so.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe(payload),
        VideoCodec::Vp9 => vp9_keyframe(payload),
        VideoCodec::H264 => h264_keyframe(payload),
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (start, partition) = (b0 & 0x10 != 0, b0 & 0x07);
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else { return false };
        at = 2;
        if x & 0x80 != 0 {
            // PictureID: two bytes when its M bit is set.
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    // The VP8 frame header's first bit is the inverse keyframe flag.
    start && partition == 0 && p.get(at).is_some_and(|h| h & 0x01 == 0)
}

fn vp9_keyframe(p: &[u8]) -> bool {
    // I|P|L|F|B|E|V|Z: a frame's first packet (B) that is not inter-predicted (P clear).
    p.first().is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0)
}

fn h264_keyframe(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        IDR | SPS => true,
        // STAP-A: 16-bit sizes, each followed by a NAL unit.
        24 => {
            let mut at = 1;
            while let Some(size) = p.get(at..at + 2) {
                let size = u16::from_be_bytes([size[0], size[1]]) as usize;
                if p.get(at + 2).is_some_and(|n| matches!(n & 0x1f, IDR | SPS)) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        // FU-A: the start fragment of an IDR.
        28 => p.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_recognised_per_codec() {
        // VP8: X bit, I bit with a 15-bit picture id, S bit, partition 0; frame header P=0.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x10]
        ));
        assert!(!starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x11]
        ));
        assert!(
            !starts_keyframe(VideoCodec::Vp8, &[0x80, 0x80, 0x81, 0x23, 0x10]),
            "not a start"
        );
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x50]));
        // H.264: STAP-A with SPS, a single IDR, an FU-A start of an IDR, a delta slice.
        assert!(starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x88]));
        assert!(
            !starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x88]),
            "not the first fragment"
        );
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // Truncated or empty payloads are never keyframes and never panic.
        for codec in VideoCodec::ALL {
            assert!(!starts_keyframe(codec, &[]));
            assert!(!starts_keyframe(codec, &[0x90]));
        }
        assert!(!starts_keyframe(VideoCodec::H264, &[0x78, 0xff]));
    }

    #[test]
    fn the_payload_is_found_after_csrcs_and_extensions_and_before_padding() {
        let mut p = vec![0xb1, 100, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend([0, 0, 0, 9]); // one CSRC
        p.extend([0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one word of extension
        p.extend([0xaa, 0xbb]);
        p.extend([0, 2]); // two bytes of padding
        assert_eq!(rtp_payload(&p), Some(&[0xaa, 0xbb][..]));
        assert_eq!(rtp_payload(&p[..14]), None);
        assert_eq!(rtp_payload(&[]), None);
    }
}
