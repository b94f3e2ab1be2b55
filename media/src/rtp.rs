//! RTP packets as Telegram's audio uses them: Opus with one-byte header extensions for
//! ssrc-audio-level (RFC 6464), abs-send-time and the transport-wide sequence number, on the ids
//! and payload types the server's answer gives (docs/protocol.md §2.2, §5.1).
//!
//! Parsing is zero-copy: a received packet keeps the decrypted datagram (`raw`) and its payload
//! is a slice of it, so forwarding (the local server) and decoding (the engine) never copy.

use bytes::{BufMut, Bytes, BytesMut};

pub const URI_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const URI_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub const URI_TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Opus as tgcalls sends it whatever the answer says (docs/protocol.md §5.1). Used only when an
/// answer lists no payload types at all: the official client never reads them, so a server
/// that leaves them out still expects this one.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Which one-byte extension ids carry what; `None` means the answer did not list the URI, and
/// such an extension is neither written nor read. `Default` is Telegram's fixed 1, 2, 3
/// (docs/protocol.md §5.1), what tgcalls uses when the answer says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionIds {
    pub audio_level: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub transport_cc: Option<u8>,
}

impl Default for ExtensionIds {
    fn default() -> Self {
        ExtensionIds::TELEGRAM
    }
}

impl ExtensionIds {
    pub const TELEGRAM: ExtensionIds = ExtensionIds {
        audio_level: Some(1),
        abs_send_time: Some(2),
        transport_cc: Some(3),
    };

    /// No extension at all.
    pub const NONE: ExtensionIds = ExtensionIds {
        audio_level: None,
        abs_send_time: None,
        transport_cc: None,
    };

    /// The ids an `rtp-hdrexts` list gives the three URIs this crate knows. An id outside
    /// 1..=14 cannot be written in the one-byte form every Telegram client uses (RFC 8285 §4.2),
    /// and an id already taken by another known URI would make both ambiguous: either leaves
    /// that URI unset, with a warning, rather than corrupt packets.
    pub fn from_uris<'a>(list: impl IntoIterator<Item = (u8, &'a str)>) -> Self {
        let mut ids = ExtensionIds::NONE;
        for (id, uri) in list {
            let which = match uri {
                URI_AUDIO_LEVEL => 0,
                URI_ABS_SEND_TIME => 1,
                URI_TRANSPORT_CC => 2,
                _ => continue,
            };
            if !(1..=14).contains(&id) {
                tracing::warn!(
                    "RTP header extension {uri} on id {id}: not usable in the one-byte form, not sent"
                );
                continue;
            }
            let slots = [ids.audio_level, ids.abs_send_time, ids.transport_cc];
            if slots[which].is_some() {
                continue; // the first mention wins, as for payload types
            }
            if slots.contains(&Some(id)) {
                tracing::warn!(
                    "RTP header extension id {id} is given to two URIs; {uri} is not sent"
                );
                continue;
            }
            match which {
                0 => ids.audio_level = Some(id),
                1 => ids.abs_send_time = Some(id),
                _ => ids.transport_cc = Some(id),
            }
        }
        ids
    }

    /// `id` if it can be written in the one-byte form. The fields are public, so the writer
    /// checks again rather than emit a header a receiver would misparse.
    fn one_byte(id: Option<u8>) -> Option<u8> {
        id.filter(|i| (1..=14).contains(i))
    }
}

/// What a payload type carries, as the answer announces it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadKind {
    /// Opus at 48 kHz: what the engine decodes.
    Opus,
    /// Another audio format of the answer (telephone-event).
    OtherAudio,
    /// Any video format or its RTX.
    Video,
    /// Not in the answer, or parsed without one ([`RtpPacket::parse`] alone).
    #[default]
    Unknown,
}

/// The RTP side of an answer: extension ids both ways, the Opus payload type to send, and what
/// every received payload type is (with its clock rate, for the jitter statistics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpParams {
    pub extensions: ExtensionIds,
    opus: u8,
    kinds: [PayloadKind; 128],
    clock_rates: [u32; 128],
}

impl Default for RtpParams {
    /// Telegram's fixed numbering, what tgcalls uses without reading the answer
    /// (docs/protocol.md §5.1, §5.2): Opus 111, telephone-event 126, video 100..=105.
    fn default() -> Self {
        let mut p = RtpParams::empty(ExtensionIds::TELEGRAM, OPUS_PAYLOAD_TYPE);
        p.set(126, PayloadKind::OtherAudio, 8000);
        for pt in 100..=105 {
            p.set(pt, PayloadKind::Video, 90_000);
        }
        p
    }
}

impl RtpParams {
    /// Only `opus` known (as Opus), with these extensions.
    pub fn empty(extensions: ExtensionIds, opus: u8) -> Self {
        let mut p = RtpParams {
            extensions,
            opus: opus & 0x7f,
            kinds: [PayloadKind::Unknown; 128],
            clock_rates: [0; 128],
        };
        p.set(opus, PayloadKind::Opus, 48_000);
        p
    }

    /// Declares what `pt` carries. A zero clock rate (nonsense from the network) is kept out of
    /// the jitter arithmetic by falling back to the kind's usual rate.
    pub fn set(&mut self, pt: u8, kind: PayloadKind, clock_rate: u32) {
        let i = (pt & 0x7f) as usize;
        self.kinds[i] = kind;
        self.clock_rates[i] = clock_rate;
    }

    /// The payload type this side sends Opus with.
    pub fn opus_payload_type(&self) -> u8 {
        self.opus
    }

    pub fn kind(&self, pt: u8) -> PayloadKind {
        self.kinds[(pt & 0x7f) as usize]
    }

    /// The RTP clock rate of `pt` in Hz. Video is always 90 kHz (RFC 3551): the production
    /// server announces 9000 for it (docs/protocol.md §2.2), so the announced value is not used.
    pub fn clock_rate(&self, pt: u8) -> u32 {
        let i = (pt & 0x7f) as usize;
        match self.kinds[i] {
            PayloadKind::Video => 90_000,
            PayloadKind::OtherAudio if self.clock_rates[i] > 0 => self.clock_rates[i],
            _ => 48_000,
        }
    }
}

/// RFC 6464 audio level: `level` is -dBov (0 = loudest, 127 = silence); `voice` is the V bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioLevel {
    pub level: u8,
    pub voice: bool,
}

impl AudioLevel {
    /// Linear loudness in 0.0..=1.0 for speaking indicators (`10^(-level/20)`).
    pub fn linear(self) -> f32 {
        10f32.powf(-(self.level as f32) / 20.0)
    }
}

/// Why a (decrypted) RTP packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than an RTP header")]
    TooShort,
    #[error("RTP version is not 2")]
    BadVersion,
    #[error("CSRC list runs past the end")]
    BadCsrc,
    #[error("header extension runs past the end")]
    BadExtension,
    #[error("padding length is larger than the payload")]
    BadPadding,
}

/// A received RTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPacket {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub audio_level: Option<AudioLevel>,
    pub abs_send_time: Option<u32>,
    pub transport_seq: Option<u16>,
    /// What the answer says `payload_type` carries. Set by the transport that received the
    /// packet; [`RtpPacket::parse`] alone has no answer and leaves it `Unknown`.
    pub kind: PayloadKind,
    /// The payload without padding; a slice of `raw`.
    pub payload: Bytes,
    /// The whole decrypted packet, header included (what a forwarder re-protects).
    pub raw: Bytes,
}

impl RtpPacket {
    /// Parses a plaintext RTP packet without copying. Never panics on any input.
    pub fn parse(raw: Bytes, ids: &ExtensionIds) -> Result<Self, RtpError> {
        let b = &raw[..];
        if b.len() < 12 {
            return Err(RtpError::TooShort);
        }
        if b[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let has_padding = b[0] & 0x20 != 0;
        let has_ext = b[0] & 0x10 != 0;
        let cc = (b[0] & 0x0f) as usize;
        let marker = b[1] & 0x80 != 0;
        let payload_type = b[1] & 0x7f;
        let sequence = u16::from_be_bytes([b[2], b[3]]);
        let timestamp = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let mut off = 12 + 4 * cc;
        if off > b.len() {
            return Err(RtpError::BadCsrc);
        }
        let (mut audio_level, mut abs_send_time, mut transport_seq) = (None, None, None);
        if has_ext {
            if off + 4 > b.len() {
                return Err(RtpError::BadExtension);
            }
            let profile = u16::from_be_bytes([b[off], b[off + 1]]);
            let words = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
            let start = off + 4;
            let end = start + words * 4;
            if end > b.len() {
                return Err(RtpError::BadExtension);
            }
            let mut on_ext = |id: u8, data: &[u8]| {
                let id = Some(id);
                if id == ids.audio_level && !data.is_empty() {
                    audio_level = Some(AudioLevel {
                        level: data[0] & 0x7f,
                        voice: data[0] & 0x80 != 0,
                    });
                } else if id == ids.abs_send_time && data.len() >= 3 {
                    abs_send_time = Some(u32::from_be_bytes([0, data[0], data[1], data[2]]));
                } else if id == ids.transport_cc && data.len() >= 2 {
                    transport_seq = Some(u16::from_be_bytes([data[0], data[1]]));
                }
            };
            let ext = &b[start..end];
            if profile == 0xBEDE {
                let mut i = 0;
                while i < ext.len() {
                    let h = ext[i];
                    if h == 0 {
                        i += 1; // padding byte
                        continue;
                    }
                    let id = h >> 4;
                    if id == 15 {
                        break; // reserved: stop parsing (RFC 8285 §4.2)
                    }
                    let len = (h & 0x0f) as usize + 1;
                    if i + 1 + len > ext.len() {
                        return Err(RtpError::BadExtension);
                    }
                    on_ext(id, &ext[i + 1..i + 1 + len]);
                    i += 1 + len;
                }
            } else if profile & 0xfff0 == 0x1000 {
                let mut i = 0;
                while i < ext.len() {
                    let id = ext[i];
                    if id == 0 {
                        i += 1;
                        continue;
                    }
                    if i + 1 >= ext.len() {
                        return Err(RtpError::BadExtension);
                    }
                    let len = ext[i + 1] as usize;
                    if i + 2 + len > ext.len() {
                        return Err(RtpError::BadExtension);
                    }
                    on_ext(id, &ext[i + 2..i + 2 + len]);
                    i += 2 + len;
                }
            }
            off = end;
        }
        let mut end = b.len();
        if has_padding {
            let pad = b[end - 1] as usize;
            if pad == 0 || off + pad > end {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        let payload = raw.slice(off..end);
        Ok(RtpPacket {
            ssrc,
            sequence,
            timestamp,
            payload_type,
            marker,
            audio_level,
            abs_send_time,
            transport_seq,
            kind: PayloadKind::Unknown,
            payload,
            raw,
        })
    }
}

/// An RTP packet to send. Extensions are written with the one-byte form, audio level first, then
/// abs-send-time and the transport-wide sequence number, like libwebrtc; one whose id is unset
/// is left out. A transport overwrites the last two with its own clock and counter.
#[derive(Clone, Copy, Debug)]
pub struct OutgoingRtp<'a> {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub audio_level: Option<AudioLevel>,
    pub abs_send_time: Option<u32>,
    pub transport_seq: Option<u16>,
    pub payload: &'a [u8],
}

impl<'a> OutgoingRtp<'a> {
    /// A plain packet with no extensions.
    pub fn new(
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        payload_type: u8,
        payload: &'a [u8],
    ) -> Self {
        OutgoingRtp {
            ssrc,
            sequence,
            timestamp,
            payload_type,
            marker: false,
            audio_level: None,
            abs_send_time: None,
            transport_seq: None,
            payload,
        }
    }

    /// Writes the plaintext packet into `out` (cleared first).
    pub fn write(&self, ids: &ExtensionIds, out: &mut BytesMut) {
        out.clear();
        let mut ext = [0u8; 12];
        let mut n = 0;
        if let (Some(l), Some(id)) = (self.audio_level, ExtensionIds::one_byte(ids.audio_level)) {
            ext[n] = id << 4;
            ext[n + 1] = (l.level & 0x7f) | if l.voice { 0x80 } else { 0 };
            n += 2;
        }
        if let (Some(t), Some(id)) = (
            self.abs_send_time,
            ExtensionIds::one_byte(ids.abs_send_time),
        ) {
            let t = t.to_be_bytes();
            ext[n] = (id << 4) | 2;
            ext[n + 1..n + 4].copy_from_slice(&t[1..4]);
            n += 4;
        }
        if let (Some(s), Some(id)) = (self.transport_seq, ExtensionIds::one_byte(ids.transport_cc))
        {
            ext[n] = (id << 4) | 1;
            ext[n + 1..n + 3].copy_from_slice(&s.to_be_bytes());
            n += 3;
        }
        let words = n.div_ceil(4);
        out.reserve(12 + 4 + words * 4 + self.payload.len() + 16);
        out.put_u8(0x80 | if n > 0 { 0x10 } else { 0 });
        out.put_u8((self.payload_type & 0x7f) | if self.marker { 0x80 } else { 0 });
        out.put_u16(self.sequence);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
        if n > 0 {
            out.put_u16(0xBEDE);
            out.put_u16(words as u16);
            out.put_slice(&ext[..words * 4]);
        }
        out.put_slice(self.payload);
    }
}

/// Overwrites, in a plaintext packet, the values of the abs-send-time and transport-wide
/// sequence number elements found on `ids` in a one-byte extension block. A forwarder uses this:
/// both values belong to the hop, not to the original sender. Nothing is inserted (that would
/// move the payload); returns whether the sequence number was written, i.e. consumed.
pub fn restamp(
    packet: &mut [u8],
    ids: &ExtensionIds,
    abs_send_time: u32,
    transport_seq: u16,
) -> bool {
    let mut wrote_seq = false;
    if packet.len() < 12 || packet[0] >> 6 != 2 || packet[0] & 0x10 == 0 {
        return false;
    }
    let off = 12 + 4 * (packet[0] & 0x0f) as usize;
    if off + 4 > packet.len() || packet[off..off + 2] != [0xBE, 0xDE] {
        return false;
    }
    let words = u16::from_be_bytes([packet[off + 2], packet[off + 3]]) as usize;
    let start = off + 4;
    let end = (start + words * 4).min(packet.len());
    let mut i = start;
    while i < end {
        let h = packet[i];
        if h == 0 {
            i += 1;
            continue;
        }
        let id = h >> 4;
        if id == 15 {
            break;
        }
        let len = (h & 0x0f) as usize + 1;
        if i + 1 + len > end {
            break;
        }
        let data = &mut packet[i + 1..i + 1 + len];
        if Some(id) == ids.abs_send_time && len == 3 {
            data.copy_from_slice(&abs_send_time.to_be_bytes()[1..4]);
        } else if Some(id) == ids.transport_cc && len == 2 {
            data.copy_from_slice(&transport_seq.to_be_bytes());
            wrote_seq = true;
        }
        i += 1 + len;
    }
    wrote_seq
}

/// abs-send-time (6.18 fixed-point seconds, 24 bits) for a time in microseconds.
pub fn abs_send_time_from_micros(micros: u64) -> u32 {
    (((micros << 18) / 1_000_000) & 0x00ff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;

    #[test]
    fn writes_what_rtc_reads_and_reads_it_back() {
        let ids = ExtensionIds::default();
        let pkt = OutgoingRtp {
            marker: true,
            audio_level: Some(AudioLevel {
                level: 30,
                voice: true,
            }),
            abs_send_time: Some(0x12_3456),
            transport_seq: Some(0xBEEF),
            ..OutgoingRtp::new(0xDEAD_BEEF, 65535, 123456, 111, b"opus-frame")
        };
        let mut buf = BytesMut::new();
        pkt.write(&ids, &mut buf);
        let raw = buf.freeze();
        // The reference parser agrees on every field and extension.
        let mut r = &raw[..];
        let theirs =
            <rtc::rtp::packet::Packet as rtc::shared::marshal::Unmarshal>::unmarshal(&mut r)
                .unwrap();
        assert_eq!(theirs.header.ssrc, 0xDEAD_BEEF);
        assert!(theirs.header.marker);
        assert_eq!(
            theirs.header.get_extension(1).unwrap().as_ref(),
            &[0x80 | 30]
        );
        assert_eq!(
            theirs.header.get_extension(2).unwrap().as_ref(),
            &[0x12, 0x34, 0x56]
        );
        assert_eq!(
            theirs.header.get_extension(3).unwrap().as_ref(),
            &[0xBE, 0xEF]
        );
        assert_eq!(theirs.payload.as_ref(), b"opus-frame");
        let ours = RtpPacket::parse(raw, &ids).unwrap();
        assert_eq!(
            ours.audio_level,
            Some(AudioLevel {
                level: 30,
                voice: true
            })
        );
        assert_eq!(ours.abs_send_time, Some(0x12_3456));
        assert_eq!(ours.transport_seq, Some(0xBEEF));
        assert_eq!(
            (ours.sequence, ours.timestamp, ours.payload_type),
            (65535, 123456, 111)
        );
        assert_eq!(ours.payload.as_ref(), b"opus-frame");
    }

    #[test]
    fn reads_padding_csrcs_and_two_byte_extensions_from_rtc() {
        let mut h = rtc::rtp::header::Header {
            version: 2,
            padding: true,
            payload_type: 111,
            sequence_number: 7,
            timestamp: 9,
            ssrc: 42,
            csrc: vec![1, 2],
            ..Default::default()
        };
        h.extension_profile = 0x1000;
        h.extension = true;
        h.set_extension(1, Bytes::from_static(&[0x05])).unwrap();
        h.set_extension(3, Bytes::from_static(&[0x00, 0x09]))
            .unwrap();
        let p = rtc::rtp::packet::Packet {
            header: h,
            payload: Bytes::from_static(b"abc"),
        };
        let mut raw = BytesMut::from(&p.marshal().unwrap()[..]);
        // Replace rtc's own padding by three bytes (count last) to test a longer run.
        let theirs = raw[raw.len() - 1] as usize;
        raw.truncate(raw.len() - theirs);
        raw.extend_from_slice(&[0, 0, 3]);
        let ours = RtpPacket::parse(raw.freeze(), &ExtensionIds::default()).unwrap();
        assert_eq!(ours.payload.as_ref(), b"abc");
        assert_eq!(
            ours.audio_level,
            Some(AudioLevel {
                level: 5,
                voice: false
            })
        );
        assert_eq!(ours.transport_seq, Some(9));
    }

    #[test]
    fn refuses_malformed() {
        let ids = ExtensionIds::default();
        let parse = |b: &[u8]| RtpPacket::parse(Bytes::copy_from_slice(b), &ids);
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::BadVersion));
        assert_eq!(
            parse(&[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::BadCsrc)
        );
        let mut ext = vec![
            0x90, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 2, 0x10,
        ];
        assert_eq!(parse(&ext), Err(RtpError::BadExtension));
        ext.truncate(12);
        ext[0] = 0xA0;
        ext.push(5);
        assert_eq!(parse(&ext), Err(RtpError::BadPadding));
    }

    #[test]
    fn extension_ids_come_from_uris_and_refuse_what_cannot_be_written() {
        let ids = ExtensionIds::from_uris([
            (13, "urn:3gpp:video-orientation"),
            (9, URI_TRANSPORT_CC),
            (20, URI_AUDIO_LEVEL),  // not one-byte: left out
            (9, URI_ABS_SEND_TIME), // id already taken: left out
            (4, URI_TRANSPORT_CC),  // second mention: the first wins
        ]);
        assert_eq!(
            ids,
            ExtensionIds {
                audio_level: None,
                abs_send_time: None,
                transport_cc: Some(9),
            }
        );
        // The writer, too, leaves out an id it cannot write.
        let mut buf = BytesMut::new();
        OutgoingRtp {
            audio_level: Some(AudioLevel {
                level: 1,
                voice: false,
            }),
            ..OutgoingRtp::new(1, 2, 3, 111, b"p")
        }
        .write(
            &ExtensionIds {
                audio_level: Some(15),
                ..ExtensionIds::NONE
            },
            &mut buf,
        );
        assert_eq!(buf.len(), 13, "no extension block");
    }

    #[test]
    fn restamp_replaces_values_in_place_and_nothing_else() {
        let ids = ExtensionIds::TELEGRAM;
        let mut buf = BytesMut::new();
        OutgoingRtp {
            audio_level: Some(AudioLevel {
                level: 9,
                voice: true,
            }),
            abs_send_time: Some(1),
            transport_seq: Some(2),
            ..OutgoingRtp::new(5, 6, 7, 111, b"payload")
        }
        .write(&ids, &mut buf);
        let before = buf.clone();
        assert!(restamp(&mut buf, &ids, 0xAB_CDEF, 0x1234));
        assert_eq!(buf.len(), before.len());
        let p = RtpPacket::parse(buf.clone().freeze(), &ids).unwrap();
        assert_eq!(
            (p.abs_send_time, p.transport_seq),
            (Some(0xAB_CDEF), Some(0x1234))
        );
        assert_eq!(p.audio_level.unwrap().level, 9);
        assert_eq!(p.payload.as_ref(), b"payload");
        // Without the elements, or truncated anywhere: untouched, no panic.
        let mut plain = BytesMut::new();
        OutgoingRtp::new(5, 6, 7, 111, b"payload").write(&ids, &mut plain);
        let copy = plain.clone();
        assert!(!restamp(&mut plain, &ids, 1, 1));
        assert_eq!(plain, copy);
        for cut in 0..before.len() {
            let mut b = before[..cut].to_vec();
            restamp(&mut b, &ids, 1, 1);
        }
    }

    #[test]
    fn abs_send_time_is_6_18_fixed_point() {
        assert_eq!(abs_send_time_from_micros(1_000_000), 1 << 18);
        assert_eq!(abs_send_time_from_micros(64_000_000), 0); // wraps every 64 s
    }
}
