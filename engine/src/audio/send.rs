//! The send side after the source: level and voice bit, Opus encoding (or passthrough of a
//! file's Opus packets), and RTP numbering.
//!
//! Only the fields the audio pipeline knows are filled in. abs-send-time and the transport-wide
//! sequence number depend on the moment and order of sending, so the transport sets them.

use groupcall_media::rtp::{AudioLevel, OutgoingRtp};

use super::codec::{fits_wire, packet_samples, Decoder, Encoder, EncoderConfig, FrameDecoder};
use super::level::{frame_level, Vad, SILENT_LEVEL};
use super::source::Frame;
use super::{FRAME_SAMPLES, MAX_PACKET_SAMPLES};
use crate::error::{Error, Result};

/// RTP numbering for one outgoing audio stream.
///
/// The timestamp advances by the duration of every frame, sent or not, so that receivers keep
/// their timing across silence; the sequence number advances only for packets sent, so that
/// receivers do not count skipped frames as lost. The marker bit starts each talk spurt
/// (RFC 3551 §4.1), which tells a receiver's jitter buffer it may re-adapt there.
#[derive(Clone, Debug)]
pub struct Packetizer {
    ssrc: u32,
    /// The server answer's Opus payload type (`Transport::audio_payload_type`).
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    mark_next: bool,
}

impl Packetizer {
    /// RFC 3550 wants random initial numbers; the driver draws them. `payload_type` is the one
    /// the server's answer gives Opus (docs/protocol.md §2.2).
    pub fn new(ssrc: u32, payload_type: u8, first_sequence: u16, first_timestamp: u32) -> Self {
        Packetizer {
            ssrc,
            payload_type,
            sequence: first_sequence,
            timestamp: first_timestamp,
            mark_next: true,
        }
    }

    /// Numbers the next packet, covering `samples` (per channel, 48 kHz).
    pub fn packet<'a>(
        &mut self,
        payload: &'a [u8],
        samples: u32,
        level: AudioLevel,
    ) -> OutgoingRtp<'a> {
        let pkt = OutgoingRtp {
            marker: self.mark_next,
            audio_level: Some(level),
            ..OutgoingRtp::new(
                self.ssrc,
                self.sequence,
                self.timestamp,
                self.payload_type,
                payload,
            )
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.mark_next = false;
        pkt
    }

    /// Lets `samples` of time pass without a packet (DTX, an idle source, mute).
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.mark_next = true;
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The timestamp the next packet will carry: "now" on the RTP clock, for sender reports.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }
}

/// Counters of an [`AudioSender`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    pub packets: u64,
    pub payload_bytes: u64,
    /// Frames not sent because the encoder's DTX said they were silent.
    pub dtx_skipped: u64,
    /// Packets taken from an Ogg/Opus file without re-encoding.
    pub passthrough: u64,
}

/// Source frames in, RTP packets out: measures the level, sets the voice bit, encodes PCM (or
/// passes a file's Opus packet through) and numbers the packet.
pub struct AudioSender {
    config: EncoderConfig,
    /// Made at the first frame to encode: a participant that only listens, or plays a file's
    /// own Opus packets, never holds a libopus encoder (about 32 KB) or its buffers.
    encoder: Option<Encoder>,
    packetizer: Packetizer,
    vad: Vad,
    /// Decodes passed-through packets only to measure their level: the server is reported to
    /// pick whom to forward by that level, so it must be true even without our own encoding.
    probe: Option<Decoder>,
    /// Made with the probe.
    probe_pcm: Vec<i16>,
    payload: Vec<u8>,
    /// 20 ms frames gathered for a packet of several ([`EncoderConfig::packet_ms`]), with the
    /// loudest level among them and the voice bit of the last.
    pending: Vec<i16>,
    pending_frames: usize,
    pending_level: u8,
    stats: SendStats,
}

impl std::fmt::Debug for AudioSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSender")
            .field("packetizer", &self.packetizer)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AudioSender {
    /// `payload_type`: the answer's Opus payload type (`Transport::audio_payload_type`).
    pub fn new(
        ssrc: u32,
        payload_type: u8,
        config: &EncoderConfig,
        first_sequence: u16,
        first_timestamp: u32,
    ) -> Result<Self> {
        config.check()?;
        Ok(AudioSender {
            config: *config,
            encoder: None,
            packetizer: Packetizer::new(ssrc, payload_type, first_sequence, first_timestamp),
            vad: Vad::default(),
            probe: None,
            probe_pcm: Vec::new(),
            payload: Vec::new(),
            pending: Vec::new(),
            pending_frames: 0,
            pending_level: SILENT_LEVEL,
            stats: SendStats::default(),
        })
    }

    /// Turns one source frame into the packet to send, or `None` when DTX suppressed it.
    pub fn send(&mut self, frame: Frame<'_>) -> Result<Option<OutgoingRtp<'_>>> {
        match frame {
            Frame::Pcm(pcm) => {
                let level = frame_level(pcm);
                let voice = self.vad.update(level);
                let frames = self.frames_per_packet();
                let pcm = if frames == 1 {
                    pcm
                } else {
                    // Gathered until the packet is full; no allocation after the first (the
                    // buffer then holds one packet's worth).
                    if self.pending.capacity() == 0 {
                        self.pending
                            .reserve_exact(self.config.channels.frame_len() * frames);
                    }
                    self.pending.extend_from_slice(pcm);
                    self.pending_frames += 1;
                    self.pending_level = self.pending_level.min(level);
                    if self.pending_frames < frames {
                        return Ok(None);
                    }
                    &self.pending[..]
                };
                let level = if frames == 1 {
                    level
                } else {
                    std::mem::replace(&mut self.pending_level, SILENT_LEVEL)
                };
                let samples = (FRAME_SAMPLES * frames) as u32;
                let dtx = self.config.dtx;
                // A move of a few words, the encoder's state being behind pointers.
                let encoder = match self.encoder.take() {
                    Some(e) => e,
                    None => Encoder::new(&self.config)?,
                };
                let packet = self.encoder.insert(encoder).encode(pcm)?;
                self.pending_frames = 0;
                self.pending.clear();
                if dtx && packet.len() <= 2 {
                    self.stats.dtx_skipped += 1;
                    self.packetizer.skip(samples);
                    return Ok(None);
                }
                self.stats.packets += 1;
                self.stats.payload_bytes += packet.len() as u64;
                Ok(Some(self.packetizer.packet(
                    packet,
                    samples,
                    AudioLevel { level, voice },
                )))
            }
            Frame::Opus { packet, .. } => {
                self.drop_pending();
                let samples = match packet_samples(packet) {
                    Some(n) if fits_wire(packet) => n,
                    _ => {
                        return Err(Error::UnsupportedFormat {
                            input: "a passed-through Opus packet".into(),
                            what: format!(
                                "a packet of {} bytes ({:?} samples)",
                                packet.len(),
                                packet_samples(packet)
                            ),
                        })
                    }
                };
                let level = self.probe_level(packet)?;
                let voice = self.vad.update(level);
                self.payload.clear();
                self.payload.extend_from_slice(packet);
                self.stats.packets += 1;
                self.stats.passthrough += 1;
                self.stats.payload_bytes += packet.len() as u64;
                Ok(Some(self.packetizer.packet(
                    &self.payload,
                    samples,
                    AudioLevel { level, voice },
                )))
            }
        }
    }

    fn probe_level(&mut self, packet: &[u8]) -> Result<u8> {
        let channels = self.config.channels;
        if self.probe.is_none() {
            self.probe = Some(Decoder::new(channels)?);
            self.probe_pcm = vec![0; MAX_PACKET_SAMPLES * channels.count()];
            self.payload.reserve_exact(super::codec::MAX_OPUS_PAYLOAD);
        }
        let Some(probe) = self.probe.as_mut() else {
            return Ok(SILENT_LEVEL);
        };
        // A packet libopus cannot decode still goes out (the file said so); it just reads as
        // silent.
        match probe.decode(packet, &mut self.probe_pcm) {
            Ok(n) => Ok(frame_level(&self.probe_pcm[..n * channels.count()])),
            Err(_) => Ok(SILENT_LEVEL),
        }
    }

    /// Lets `samples` pass without sending (idle source, mute): receivers keep their timing and
    /// the next packet starts a talk spurt.
    pub fn skip(&mut self, samples: u32) {
        self.drop_pending();
        self.packetizer.skip(samples);
    }

    /// A part-gathered packet is not sent when what follows is not more of the same audio
    /// (a skip, a passed-through packet): the timeline moves past it.
    fn drop_pending(&mut self) {
        if self.pending_frames > 0 {
            self.packetizer
                .skip((FRAME_SAMPLES * self.pending_frames) as u32);
            self.pending_frames = 0;
            self.pending.clear();
            self.pending_level = SILENT_LEVEL;
        }
    }

    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// The RTP timestamp of the current moment (the next packet's), for sender reports.
    pub fn rtp_timestamp(&self) -> u32 {
        self.packetizer
            .timestamp()
            .wrapping_add((FRAME_SAMPLES * self.pending_frames) as u32)
    }

    /// Takes effect at once, or when the first frame makes the encoder.
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<()> {
        EncoderConfig {
            bitrate,
            ..self.config
        }
        .check()?;
        if let Some(e) = self.encoder.as_mut() {
            e.set_bitrate(bitrate)?;
        }
        self.config.bitrate = bitrate;
        Ok(())
    }

    fn frames_per_packet(&self) -> usize {
        self.config.packet_ms as usize / 20
    }

    /// Whether a libopus encoder has been made (the first frame to encode makes it).
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Channels;

    fn tone(freq: f64, amp: f64, start: usize, n: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 48000.0).sin()) as i16)
            .collect()
    }

    /// 60 ms packets: three frames make one packet of 2880 samples, stamped with its first
    /// frame's time and the loudest frame's level; a skip drops a part-gathered packet and the
    /// timeline moves on by it, so the next packet is stamped where its audio belongs.
    #[test]
    fn sixty_ms_packets_gather_three_frames_and_keep_the_timeline() {
        let config = EncoderConfig {
            packet_ms: 60,
            ..Default::default()
        };
        let mut s = AudioSender::new(5, 111, &config, 0, 1000).unwrap();
        let quiet = tone(440.0, 300.0, 0, 960);
        let loud = tone(440.0, 20000.0, 960, 960);
        assert!(s.send(Frame::Pcm(&quiet)).unwrap().is_none());
        assert_eq!(
            s.rtp_timestamp(),
            1960,
            "the moment includes what is gathered"
        );
        assert!(s.send(Frame::Pcm(&loud)).unwrap().is_none());
        let (ts, level, samples) = {
            let p = s
                .send(Frame::Pcm(&quiet))
                .unwrap()
                .expect("the third frame sends");
            (
                p.timestamp,
                p.audio_level.unwrap().level,
                packet_samples(p.payload),
            )
        };
        assert_eq!((ts, samples), (1000, Some(2880)));
        assert_eq!(level, frame_level(&loud), "the loudest frame's level");
        assert_eq!(s.stats().packets, 1);

        // Two frames gathered, then a skip (mute, an idle source): they are not sent.
        assert!(s.send(Frame::Pcm(&quiet)).unwrap().is_none());
        assert!(s.send(Frame::Pcm(&quiet)).unwrap().is_none());
        s.skip(960);
        assert_eq!(s.rtp_timestamp(), 1000 + 2880 + 3 * 960);
        for _ in 0..2 {
            assert!(s.send(Frame::Pcm(&quiet)).unwrap().is_none());
        }
        let ts = s.send(Frame::Pcm(&quiet)).unwrap().unwrap().timestamp;
        assert_eq!(ts, 1000 + 2880 + 3 * 960);
        assert_eq!(s.stats().packets, 2);
    }

    /// A sender holds no encoder until it has PCM to encode; a bitrate set before then is
    /// checked at once and is the one the encoder is made with.
    #[test]
    fn the_encoder_is_made_by_the_first_frame_with_the_bitrate_set_before() {
        let bad = EncoderConfig {
            packet_ms: 30,
            ..Default::default()
        };
        assert!(matches!(
            AudioSender::new(1, 111, &bad, 0, 0),
            Err(Error::InvalidConfig(_))
        ));
        let bytes = |bitrate: Option<u32>| {
            let mut s = AudioSender::new(1, 111, &EncoderConfig::default(), 0, 0).unwrap();
            s.skip(960);
            assert!(!s.has_encoder(), "a skip needs no encoder");
            assert!(matches!(s.set_bitrate(1_000), Err(Error::InvalidConfig(_))));
            if let Some(b) = bitrate {
                s.set_bitrate(b).unwrap();
            }
            assert!(!s.has_encoder());
            let mut total = 0;
            for i in 0..50 {
                let pcm = tone(440.0, 12000.0, i * 960, 960);
                total += s.send(Frame::Pcm(&pcm)).unwrap().unwrap().payload.len();
            }
            assert!(s.has_encoder());
            total / 50
        };
        let (default, low) = (bytes(None), bytes(Some(12_000)));
        // 32 kbit/s is 80 bytes a packet, 12 kbit/s 30.
        assert!(
            (60..=100).contains(&default) && (20..=40).contains(&low),
            "{default} and {low} bytes a packet"
        );
    }

    #[test]
    fn numbers_packets_and_marks_talk_spurts() {
        let mut p = Packetizer::new(7, 109, 65534, u32::MAX - 959);
        let lvl = AudioLevel {
            level: 10,
            voice: true,
        };
        let a = p.packet(b"a", 960, lvl);
        assert_eq!(
            (a.sequence, a.timestamp, a.marker, a.ssrc),
            (65534, u32::MAX - 959, true, 7)
        );
        assert_eq!(
            a.payload_type, 109,
            "the answer's payload type, not a fixed one"
        );
        assert_eq!(a.audio_level, Some(lvl));
        let b = p.packet(b"b", 960, lvl);
        assert_eq!((b.sequence, b.timestamp, b.marker), (65535, 0, false));
        p.skip(960);
        p.skip(960);
        let c = p.packet(b"c", 2880, lvl);
        assert_eq!((c.sequence, c.timestamp, c.marker), (0, 960 * 3, true));
        let d = p.packet(b"d", 960, lvl);
        assert_eq!((d.sequence, d.timestamp, d.marker), (1, 960 * 6, false));
    }

    #[test]
    fn sender_sets_level_and_voice_from_the_frame() {
        let mut s = AudioSender::new(42, 111, &EncoderConfig::default(), 100, 1000).unwrap();
        let loud = tone(440.0, 16000.0, 0, 960);
        let pkt = s.send(Frame::Pcm(&loud)).unwrap().unwrap();
        let lvl = pkt.audio_level.unwrap();
        // 16000/32768 amplitude sine: RMS -9.2 dBov.
        assert_eq!(lvl.level, 9);
        assert!(lvl.voice && pkt.marker);
        assert_eq!((pkt.sequence, pkt.timestamp), (100, 1000));
        assert_eq!(packet_samples(pkt.payload), Some(960));
        // Silence keeps the voice bit through the hangover, then drops it.
        let mut voiced = 0;
        for _ in 0..20 {
            let p = s.send(Frame::Pcm(&[0; 960])).unwrap().unwrap();
            assert_eq!(p.audio_level.unwrap().level, 127);
            assert!(!p.marker);
            voiced += p.audio_level.unwrap().voice as u32;
        }
        assert_eq!(voiced, 10);
        assert_eq!(s.stats().packets, 21);
    }

    #[test]
    fn dtx_skips_silence_but_keeps_the_clock() {
        let cfg = EncoderConfig {
            dtx: true,
            ..Default::default()
        };
        let mut s = AudioSender::new(1, 111, &cfg, 0, 0).unwrap();
        let mut last_ts = 0;
        let mut frames = 0u32;
        let mut i = 0;
        for _ in 0..10 {
            let t = tone(440.0, 8000.0, i, 960);
            i += 960;
            frames += 1;
            last_ts = s.send(Frame::Pcm(&t)).unwrap().unwrap().timestamp;
        }
        for _ in 0..60 {
            frames += 1;
            let _ = s.send(Frame::Pcm(&[0; 960])).unwrap();
        }
        assert!(s.stats().dtx_skipped > 0, "{:?}", s.stats());
        let t = tone(440.0, 8000.0, 0, 960);
        let p = s.send(Frame::Pcm(&t)).unwrap().unwrap();
        assert_eq!(p.timestamp, frames * 960);
        assert!(p.timestamp > last_ts);
        assert!(
            p.marker,
            "first packet after DTX silence starts a talk spurt"
        );
    }

    #[test]
    fn passthrough_keeps_the_bytes_and_measures_the_level() {
        let mut enc =
            opus::Encoder::new(48000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let pcm: Vec<i16> = tone(1000.0, 20000.0, 0, 2880)
            .iter()
            .flat_map(|&s| [s, s])
            .collect();
        let mut buf = [0u8; 4000];
        let n = enc.encode(&pcm, &mut buf).unwrap();
        let packet = &buf[..n];
        let cfg = EncoderConfig {
            channels: Channels::Stereo,
            ..Default::default()
        };
        let mut s = AudioSender::new(5, 111, &cfg, 0, 0).unwrap();
        let out = s
            .send(Frame::Opus {
                packet,
                samples: 2880,
            })
            .unwrap()
            .unwrap();
        assert_eq!(out.payload, packet);
        let level = out.audio_level.unwrap().level;
        // 20000/32768 sine is -7.3 dBov; the codec's priming lowers the first packet a bit.
        assert!((7..=14).contains(&level), "level {level}");
        let next = s.send(Frame::Pcm(&[0; 1920])).unwrap().unwrap();
        assert_eq!(
            next.timestamp, 2880,
            "a 60 ms packet advances the clock by 2880"
        );
        let too_big = vec![0xfcu8; 2000];
        assert!(matches!(
            s.send(Frame::Opus {
                packet: &too_big,
                samples: 960
            }),
            Err(Error::UnsupportedFormat { .. })
        ));
    }
}
