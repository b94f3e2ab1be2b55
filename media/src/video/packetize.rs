//! One encoded video frame in, RTP payloads out: VP8 (RFC 7741) and H.264 packetization-mode 1
//! (RFC 6184).
//!
//! The default payload size keeps every packet, once it has its header extensions and SRTP tag,
//! and even when it is later retransmitted inside RTX, within 1,200 bytes: the size libwebrtc
//! uses, which passes any path with an IPv6 minimum MTU and a TURN or VPN header on top. Every
//! packet of a frame carries the frame's RTP timestamp and only the last has the marker bit, which
//! is how a receiver knows the frame is complete.
//!
//! rtc-rtp has payloaders for both codecs, but this module writes its own, which are short:
//! rtc's VP8 payloader sends a 7-bit picture id for the first 128 pictures and always starts at
//! 0, where Telegram's libwebrtc clients expect the 15-bit form throughout; rtc's H.264 payloader
//! keeps SPS and PPS back until the next slice (into the next frame if a frame ends with them) and
//! drops them silently when they do not fit one STAP-A. Both are used in the tests as an
//! independent check of the wire format.

use bytes::{BufMut, Bytes, BytesMut};

use crate::answer::VideoCodec;
use crate::error::{Error, Result};

/// The largest protected packet this module plans for, in bytes.
pub const MAX_PROTECTED_PACKET: usize = 1200;

/// What a packet carries besides its payload, at most: the RTP header (12 bytes), one-byte
/// header extensions (a 4-byte block header and up to 12 bytes: abs-send-time, the transport-wide
/// sequence number, video orientation and audio level, padded to a word), the SRTP tag (16 bytes
/// with AEAD-GCM, 10 with HMAC-SHA1-80) and the original sequence number an RTX retransmission
/// puts before the payload (2 bytes).
pub const PACKET_OVERHEAD: usize = 12 + (4 + 12) + 16 + 2;

/// The payload size that keeps a protected packet, or its RTX retransmission, within
/// [`MAX_PROTECTED_PACKET`]: 1,154 bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = MAX_PROTECTED_PACKET - PACKET_OVERHEAD;

/// The smallest payload size accepted: below this the descriptors would be most of the packet.
pub const MIN_PAYLOAD: usize = 16;

/// The largest payload size accepted (a UDP datagram holds at most 65,507 bytes).
pub const MAX_PAYLOAD: usize = 65_000;

/// The most packets one frame may take. A receiver has to hold a whole frame, plus what arrives
/// while it waits for a retransmission, in its reassembly window (`FrameAssembler` holds 2,048
/// packets by default): about 1.2 MB of frame at the default payload size.
pub const MAX_PACKETS_PER_FRAME: usize = 1024;

/// The VP8 payload descriptor written here: X and I set, a 15-bit picture id (RFC 7741 §4.2).
const VP8_DESCRIPTOR: usize = 4;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One RTP packet of a video stream, as far as this module is concerned: the header fields that
/// vary per packet and the payload. SSRC and payload type are the stream's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// Cuts one stream's frames into packets: payloads, consecutive sequence numbers, the frame's
/// timestamp on each and the marker on the last.
#[derive(Clone, Debug)]
pub struct Packetizer {
    codec: VideoCodec,
    max_payload: usize,
    next_sequence: u16,
    picture_id: u16,
}

impl Packetizer {
    /// A packetizer for `codec` (VP8 or H.264) writing payloads of at most `max_payload` bytes
    /// (usually [`DEFAULT_MAX_PAYLOAD`]). The first packet gets `first_sequence` and the first VP8
    /// frame `first_picture_id` (15 bits; RFC 3550 and RFC 7741 recommend random starts).
    pub fn new(
        codec: VideoCodec,
        max_payload: usize,
        first_sequence: u16,
        first_picture_id: u16,
    ) -> Result<Self> {
        check_max_payload(max_payload)?;
        if codec == VideoCodec::Vp9 {
            return Err(Error::Config(
                "VP9 packetization is not implemented; send VP8 or H264".into(),
            ));
        }
        Ok(Packetizer {
            codec,
            max_payload,
            next_sequence: first_sequence,
            picture_id: first_picture_id & 0x7fff,
        })
    }

    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// The sequence number the next packet will get.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    /// The picture id the next VP8 frame will get.
    pub fn next_picture_id(&self) -> u16 {
        self.picture_id
    }

    /// The packets of one frame, all with `timestamp`. A frame that cannot be sent is an error
    /// and uses up no sequence number (nor picture id), so the receiver sees no gap.
    pub fn packetize(&mut self, timestamp: u32, frame: &[u8]) -> Result<Vec<VideoPacket>> {
        let payloads = match self.codec {
            VideoCodec::Vp8 => {
                let p = vp8_payloads(frame, self.picture_id, self.max_payload)?;
                self.picture_id = (self.picture_id + 1) & 0x7fff;
                p
            }
            VideoCodec::H264 => h264_payloads(frame, self.max_payload)?,
            VideoCodec::Vp9 => unreachable_vp9()?,
        };
        let last = payloads.len().saturating_sub(1);
        Ok(payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let sequence = self.next_sequence;
                self.next_sequence = sequence.wrapping_add(1);
                VideoPacket {
                    sequence,
                    timestamp,
                    marker: i == last,
                    payload,
                }
            })
            .collect())
    }
}

/// `new` refuses VP9; kept as an error rather than a panic should that ever change.
fn unreachable_vp9() -> Result<Vec<Bytes>> {
    Err(Error::Packetize {
        codec: "VP9",
        problem: "VP9 packetization is not implemented".into(),
    })
}

fn check_max_payload(max_payload: usize) -> Result<()> {
    if (MIN_PAYLOAD..=MAX_PAYLOAD).contains(&max_payload) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "a video payload size of {max_payload} bytes is outside {MIN_PAYLOAD}..={MAX_PAYLOAD}; \
             use DEFAULT_MAX_PAYLOAD ({DEFAULT_MAX_PAYLOAD})"
        )))
    }
}

/// Sizes of `count` pieces of `len` bytes that differ by at most one byte, larger first: equal
/// packets pace better than full ones followed by a runt (libwebrtc splits the same way).
fn balanced(len: usize, count: usize) -> impl Iterator<Item = usize> {
    let (base, extra) = (len / count, len % count);
    (0..count).map(move |i| base + usize::from(i < extra))
}

fn too_many_packets(codec: &'static str, packets: usize) -> Error {
    Error::Packetize {
        codec,
        problem: format!(
            "it needs {packets} packets, over the {MAX_PACKETS_PER_FRAME} a receiver can hold; \
             lower the bitrate or the resolution"
        ),
    }
}

/// The payloads of one VP8 frame: every payload descriptor has X and I set and the 15-bit
/// `picture_id`; the first also has S (start of partition 0), which with the frame header behind
/// it tells a receiver where a frame, and a keyframe, starts.
pub fn vp8_payloads(frame: &[u8], picture_id: u16, max_payload: usize) -> Result<Vec<Bytes>> {
    check_max_payload(max_payload)?;
    if frame.is_empty() {
        return Err(Error::Packetize {
            codec: "VP8",
            problem: "the frame is empty".into(),
        });
    }
    let count = frame.len().div_ceil(max_payload - VP8_DESCRIPTOR);
    if count > MAX_PACKETS_PER_FRAME {
        return Err(too_many_packets("VP8", count));
    }
    let pid = 0x8000 | (picture_id & 0x7fff);
    let mut buf = BytesMut::with_capacity(frame.len() + count * VP8_DESCRIPTOR);
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    for (i, size) in balanced(frame.len(), count).enumerate() {
        buf.put_u8(if i == 0 { 0x90 } else { 0x80 }); // X, S on the first, partition 0
        buf.put_u8(0x80); // I: a picture id follows
        buf.put_u16(pid); // M set: 15 bits
        buf.put_slice(&frame[at..at + size]);
        at += size;
        out.push(buf.split().freeze());
    }
    Ok(out)
}

/// The NAL units of an Annex B byte stream, without start codes and without the zero bytes
/// that may trail a unit (`trailing_zero_8bits`, or the first byte of a 4-byte start code; a NAL
/// unit never ends in 0x00). `None` when the stream does not begin with a start code (leading
/// zero bytes aside).
pub fn annex_b_nal_units(stream: &[u8]) -> Option<Vec<&[u8]>> {
    let first = find_start_code(stream, 0)?;
    if stream[..first].iter().any(|b| *b != 0) {
        return None;
    }
    let mut units = Vec::new();
    let mut start = first + 3;
    loop {
        let next = find_start_code(stream, start);
        let mut end = next.unwrap_or(stream.len());
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            units.push(&stream[start..end]);
        }
        match next {
            Some(n) => start = n + 3,
            None => return Some(units),
        }
    }
}

/// The position of the next `00 00 01` at or after `from`.
fn find_start_code(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 2 < b.len() {
        // Looking at the third byte first skips three at a time through slice data: a start
        // code at i, i+1 or i+2 needs it to be 1, 0 and 0 respectively.
        match b[i + 2] {
            0 => i += 1,
            1 if b[i] == 0 && b[i + 1] == 0 => return Some(i),
            _ => i += 3,
        }
    }
    None
}

/// How one or more NAL units go into packets.
enum Plan {
    /// NAL unit `i` alone.
    Single(usize),
    /// NAL units `i..j` in one STAP-A.
    Stap(usize, usize),
    /// NAL unit `i` in `n` FU-A fragments.
    Fu(usize, usize),
}

/// The payloads of one H.264 access unit in Annex B form (RFC 6184, packetization-mode 1): a NAL
/// unit too large for one packet goes out in FU-A fragments, consecutive small ones (SPS, PPS,
/// SEI, small slices) are aggregated into STAP-As, any other alone. NAL units are sent as they
/// are, access unit delimiters and filler included.
pub fn h264_payloads(frame: &[u8], max_payload: usize) -> Result<Vec<Bytes>> {
    check_max_payload(max_payload)?;
    let bad = |problem: &str| Error::Packetize {
        codec: "H264",
        problem: problem.into(),
    };
    let nals = annex_b_nal_units(frame)
        .ok_or_else(|| bad("it does not begin with an Annex B start code (00 00 01)"))?;
    if nals.is_empty() {
        return Err(bad("it holds no NAL unit"));
    }
    if let Some(t) = nals
        .iter()
        .map(|n| n[0] & 0x1f)
        .find(|t| *t == 0 || *t >= STAP_A)
    {
        return Err(bad(&format!(
            "it holds a NAL unit of type {t}, which H.264 leaves unspecified and RFC 6184 uses \
             for its own packets"
        )));
    }
    let mut plan = Vec::new();
    let mut packets = 0;
    let mut bytes = 0;
    let mut i = 0;
    while i < nals.len() {
        let len = nals[i].len();
        if len > max_payload {
            // The NAL header travels in the FU indicator and header: 2 bytes for 1.
            let n = (len - 1).div_ceil(max_payload - 2);
            plan.push(Plan::Fu(i, n));
            packets += n;
            bytes += len + n * 2;
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut stap = 1 + 2 + len;
        while j < nals.len() && stap + 2 + nals[j].len() <= max_payload {
            stap += 2 + nals[j].len();
            j += 1;
        }
        if j - i >= 2 {
            plan.push(Plan::Stap(i, j));
            bytes += stap;
        } else {
            plan.push(Plan::Single(i));
            bytes += len;
        }
        packets += 1;
        i = j;
    }
    if packets > MAX_PACKETS_PER_FRAME {
        return Err(too_many_packets("H264", packets));
    }
    let mut buf = BytesMut::with_capacity(bytes);
    let mut out = Vec::with_capacity(packets);
    for p in plan {
        match p {
            Plan::Single(i) => buf.put_slice(nals[i]),
            Plan::Stap(i, j) => {
                // F is the OR of the units' F bits, NRI their highest (RFC 6184 §5.7.1).
                let f = nals[i..j].iter().fold(0, |f, n| f | (n[0] & 0x80));
                let nri = nals[i..j].iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                buf.put_u8(f | nri | STAP_A);
                for n in &nals[i..j] {
                    buf.put_u16(n.len() as u16);
                    buf.put_slice(n);
                }
            }
            Plan::Fu(i, n) => {
                let nal = nals[i];
                let indicator = (nal[0] & 0xe0) | FU_A;
                let mut at = 1;
                for (k, size) in balanced(nal.len() - 1, n).enumerate() {
                    let mut header = nal[0] & 0x1f;
                    if k == 0 {
                        header |= 0x80;
                    }
                    if k == n - 1 {
                        header |= 0x40;
                    }
                    buf.put_u8(indicator);
                    buf.put_u8(header);
                    buf.put_slice(&nal[at..at + size]);
                    at += size;
                    out.push(buf.split().freeze());
                }
                continue;
            }
        }
        out.push(buf.split().freeze());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H264_START_CODE: [u8; 4] = [0, 0, 0, 1];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| H264_START_CODE.iter().chain(n.iter()).copied())
            .collect()
    }

    #[test]
    fn the_default_payload_keeps_a_protected_rtx_packet_within_1200_bytes() {
        assert_eq!(DEFAULT_MAX_PAYLOAD, 1154);
        // Header, the three extensions the transport writes (9 bytes, padded to 12), GCM tag,
        // RTX's original sequence number.
        const { assert!(12 + 4 + 12 + DEFAULT_MAX_PAYLOAD + 16 + 2 <= MAX_PROTECTED_PACKET) };
    }

    #[test]
    fn vp8_descriptors_carry_a_15_bit_picture_id_and_s_on_the_first_packet() {
        let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let p = vp8_payloads(&frame, 0x1234, 1000).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(&p[0][..4], &[0x90, 0x80, 0x92, 0x34]);
        assert_eq!(&p[1][..4], &[0x80, 0x80, 0x92, 0x34]);
        // Balanced: 2,500 bytes in 3 packets of 834, 833, 833.
        assert_eq!(
            p.iter().map(|x| x.len() - 4).collect::<Vec<_>>(),
            [834, 833, 833]
        );
        let joined: Vec<u8> = p.iter().flat_map(|x| x[4..].to_vec()).collect();
        assert_eq!(joined, frame);
        // Picture ids wrap at 15 bits, and a small id is still written in two bytes.
        let mut pk = Packetizer::new(VideoCodec::Vp8, 1000, 65_535, 0x7fff).unwrap();
        let a = pk.packetize(90, &[0x10, 1, 2]).unwrap();
        let b = pk.packetize(3090, &[0x11, 1, 2]).unwrap();
        assert_eq!(&a[0].payload[..4], &[0x90, 0x80, 0xff, 0xff]);
        assert_eq!(&b[0].payload[..4], &[0x90, 0x80, 0x80, 0x00]);
        assert_eq!((a[0].sequence, b[0].sequence), (65_535, 0));
        assert!(a[0].marker && b[0].marker);
    }

    #[test]
    fn h264_aggregates_small_units_sends_mid_sized_ones_alone_and_fragments_large_ones() {
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = std::iter::once(0x65)
            .chain((0..300u32).map(|i| (i % 251) as u8 + 1))
            .collect();
        let mid = vec![0x41; 90];
        let frame = annex_b(&[&sps, &pps, &idr, &mid]);
        let p = h264_payloads(&frame, 100).unwrap();
        // STAP-A(SPS, PPS), FU-A × 4 for the 301-byte IDR (300 bytes in 98-byte pieces), MID alone.
        assert_eq!(p[0][0], 0x78);
        assert_eq!(&p[0][1..3], &[0, 5]);
        assert_eq!(&p[0][3..8], &sps);
        assert_eq!(&p[0][8..10], &[0, 4]);
        assert_eq!(p.len(), 1 + 4 + 1);
        assert_eq!((p[1][0], p[1][1]), (0x7c, 0x85));
        assert_eq!((p[2][0], p[2][1]), (0x7c, 0x05));
        assert_eq!((p[4][0], p[4][1]), (0x7c, 0x45));
        let fu: Vec<u8> = p[1..5].iter().flat_map(|x| x[2..].to_vec()).collect();
        assert_eq!(fu, idr[1..]);
        assert_eq!(&p[5][..], &mid[..]);
        assert!(p.iter().all(|x| x.len() <= 100));
    }

    #[test]
    fn annex_b_parsing_takes_3_and_4_byte_start_codes_and_trailing_zeros() {
        let s = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65, 0, 3, 0,
        ];
        assert_eq!(
            annex_b_nal_units(&s).unwrap(),
            [&[0x67, 1][..], &[0x68, 2], &[0x65, 0, 3]]
        );
        assert_eq!(annex_b_nal_units(&[1, 0, 0, 1, 0x65]), None);
        assert_eq!(annex_b_nal_units(&[0x65, 1, 2]), None);
        assert!(annex_b_nal_units(&[0, 0, 1, 0, 0, 1]).unwrap().is_empty());
    }

    #[test]
    fn bad_frames_and_settings_are_errors_that_use_no_sequence_number() {
        let mut p = Packetizer::new(VideoCodec::H264, 1200, 7, 0).unwrap();
        for bad in [
            &[][..],
            &[0x65, 1, 2],
            &[0, 0, 0, 1],
            &[0, 0, 1, 0x78, 0, 1, 0x65],
            &[0, 0, 1, 0x00, 5],
        ] {
            assert!(matches!(
                p.packetize(0, bad),
                Err(Error::Packetize { codec: "H264", .. })
            ));
        }
        assert_eq!(p.next_sequence(), 7);
        let mut v = Packetizer::new(VideoCodec::Vp8, 1200, 7, 5).unwrap();
        assert!(v.packetize(0, &[]).is_err());
        assert_eq!((v.next_sequence(), v.next_picture_id()), (7, 5));
        let huge = vec![0x10; (MAX_PACKETS_PER_FRAME + 1) * (100 - VP8_DESCRIPTOR)];
        let mut small = Packetizer::new(VideoCodec::Vp8, 100, 0, 0).unwrap();
        assert!(small.packetize(0, &huge).is_err());
        assert!(Packetizer::new(VideoCodec::Vp8, 15, 0, 0).is_err());
        assert!(Packetizer::new(VideoCodec::Vp8, 70_000, 0, 0).is_err());
        assert!(Packetizer::new(VideoCodec::Vp9, 1200, 0, 0).is_err());
    }
}
