//! Opus through libopus (`opus` 0.4): the encoder with Telegram's settings, the decoder behind the
//! jitter buffer, and a pure-Rust reader of an Opus packet's duration.
//!
//! The duration parser exists so that the jitter buffer can place packets on its timeline
//! without a call into libopus: the per-packet path outside libopus is what the engine is
//! measured on.

use super::{Channels, FRAME_SAMPLES, MAX_PACKET_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, Result};

/// Largest Opus packet we produce or accept for passthrough: well under a 1200-byte path MTU
/// once SRTP, RTP, extensions and UDP/IP headers are added.
pub const MAX_OPUS_PAYLOAD: usize = 1000;

/// How libopus should tune itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Application {
    /// Speech (libopus VOIP): what Telegram's clients use for microphones.
    #[default]
    Voip,
    /// Music and mixed content (libopus AUDIO): better for music bots.
    Audio,
    /// CELT alone (libopus RESTRICTED_LOWDELAY): full band at every rate and a fraction of the
    /// VOIP encoder's CPU, but no in-band FEC (that is SILK's), so a lost packet is concealed
    /// rather than recovered.
    LowDelay,
}

/// Encoder settings. The defaults are what Telegram's own clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    pub channels: Channels,
    /// Target bitrate in bit/s (Telegram: 32 kbit/s).
    pub bitrate: u32,
    /// In-band FEC: each packet carries a low-bitrate copy of the previous one, so a single
    /// lost packet is recovered by the receiver. On, as in Telegram's `useinbandfec=1`.
    pub fec: bool,
    /// The loss rate libopus should plan FEC for. libopus adds no FEC data at 0 %.
    pub expected_loss_percent: u8,
    /// Discontinuous transmission: near-silent frames are not sent at all.
    pub dtx: bool,
    pub application: Application,
    /// libopus' effort, 0 (cheapest) to 10 (libopus' own default). The encoder is most of
    /// what a speaking call costs. The voice preset uses 3: on speech and music clips through
    /// the whole path it scores within 0.1 dB (log-spectral distance) of 10 for two thirds of
    /// the CPU; below 2 libopus narrows the band to 8 kHz, which is audible (LSD +0.5 dB).
    /// `docs/performance.md` has the figures and the commands (`benches/quality.sh`,
    /// `engine/benches/audio.rs`).
    pub complexity: u8,
    /// Audio per packet: 20 (the default), 40 or 60 ms. Longer packets mean fewer packets and
    /// less header overhead on the wire, for that much more delay (ntgcalls sends 60 ms). A
    /// call that only sends then ticks once per packet, which saves CPU with the lean preset
    /// (15 % at 50 calls); with SILK at complexity 3 and above libopus spends more per second
    /// on long frames than that saves (`docs/performance.md` §1.2.4).
    pub packet_ms: u8,
}

impl Default for EncoderConfig {
    /// The voice preset: what Telegram's apps send.
    fn default() -> Self {
        EncoderConfig {
            channels: Channels::Mono,
            bitrate: 32_000,
            fec: true,
            expected_loss_percent: 10,
            dtx: false,
            application: Application::Voip,
            complexity: 3,
            packet_ms: 20,
        }
    }
}

impl EncoderConfig {
    /// Speech, as Telegram's apps send it: 32 kbit/s mono, libopus VOIP, in-band FEC;
    /// complexity 3.
    pub fn voice() -> Self {
        Self::default()
    }

    /// Lean: 64 kbit/s mono CELT (libopus RESTRICTED_LOWDELAY), complexity 0, for hosts that
    /// run many calls. Its encoder costs about a sixth of the voice preset's, and on a clean
    /// path it scores better than the voice preset and ntgcalls on speech and on music (full
    /// band, `docs/performance.md` §2), for twice the bits. What it gives up is in-band FEC,
    /// which only SILK carries: a lost packet is concealed, not recovered, so at 10 % loss
    /// about one 20 ms block in ten is damaged where the voice preset damages one in sixty.
    pub fn lean() -> Self {
        EncoderConfig {
            bitrate: 64_000,
            fec: false,
            expected_loss_percent: 0,
            application: Application::LowDelay,
            complexity: 0,
            ..Self::voice()
        }
    }

    /// Music: 128 kbit/s stereo, libopus AUDIO (full band, no speech model). In-band FEC is
    /// off: at this rate libopus codes in CELT mode, which carries none. Complexity 5.
    pub fn music() -> Self {
        EncoderConfig {
            channels: Channels::Stereo,
            bitrate: 128_000,
            fec: false,
            expected_loss_percent: 0,
            dtx: false,
            application: Application::Audio,
            complexity: 5,
            packet_ms: 20,
        }
    }

    /// Refuses settings libopus or the path cannot take, with what to change; what
    /// [`Encoder::new`] checks before it makes an encoder.
    pub fn check(&self) -> Result<()> {
        let config = self;
        if !(6_000..=510_000).contains(&config.bitrate) {
            return Err(Error::InvalidConfig(format!(
                "Opus bitrate {} bit/s is outside 6000..=510000",
                config.bitrate
            )));
        }
        if ![20, 40, 60].contains(&config.packet_ms) {
            return Err(Error::InvalidConfig(format!(
                "{} ms per packet: the encoder sends 20, 40 or 60 ms",
                config.packet_ms
            )));
        }
        // libopus caps a packet at the buffer it is given; a rate that needs more is refused
        // here rather than silently lowered.
        let most = config.bitrate as usize * config.packet_ms as usize / 8000;
        if most > MAX_OPUS_PAYLOAD {
            return Err(Error::InvalidConfig(format!(
                "{} kbit/s in {} ms packets needs {most} bytes a packet, over the {MAX_OPUS_PAYLOAD} that fit the path; use shorter packets or a lower rate",
                config.bitrate / 1000,
                config.packet_ms
            )));
        }
        if config.complexity > 10 {
            return Err(Error::InvalidConfig(format!(
                "Opus complexity {} is outside 0..=10",
                config.complexity
            )));
        }
        if config.expected_loss_percent > 100 {
            return Err(Error::InvalidConfig(format!(
                "expected loss {} % is more than 100 %",
                config.expected_loss_percent
            )));
        }
        Ok(())
    }
}

/// A libopus encoder for 20, 40 or 60 ms frames at 48 kHz.
pub struct Encoder {
    inner: opus::Encoder,
    channels: Channels,
    /// 20 ms frames per packet.
    frames: usize,
    dtx: bool,
    out: Box<[u8; MAX_OPUS_PAYLOAD]>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("channels", &self.channels)
            .field("dtx", &self.dtx)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    pub fn new(config: &EncoderConfig) -> Result<Self> {
        config.check()?;
        let app = match config.application {
            Application::Voip => opus::Application::Voip,
            Application::Audio => opus::Application::Audio,
            Application::LowDelay => opus::Application::LowDelay,
        };
        let mut inner = opus::Encoder::new(SAMPLE_RATE, config.channels.to_opus(), app)
            .map_err(|e| Error::opus("encoder creation", e))?;
        inner
            .set_bitrate(opus::Bitrate::Bits(config.bitrate as i32))
            .map_err(|e| Error::opus("set bitrate", e))?;
        inner
            .set_inband_fec(config.fec)
            .map_err(|e| Error::opus("set in-band FEC", e))?;
        inner
            .set_packet_loss_perc(config.expected_loss_percent as i32)
            .map_err(|e| Error::opus("set expected loss", e))?;
        inner
            .set_dtx(config.dtx)
            .map_err(|e| Error::opus("set DTX", e))?;
        inner
            .set_complexity(config.complexity as i32)
            .map_err(|e| Error::opus("set complexity", e))?;
        Ok(Encoder {
            inner,
            channels: config.channels,
            frames: config.packet_ms as usize / 20,
            dtx: config.dtx,
            out: Box::new([0; MAX_OPUS_PAYLOAD]),
        })
    }

    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// 20 ms frames in each packet.
    pub fn frames_per_packet(&self) -> usize {
        self.frames
    }

    /// Encodes one packet's audio (960 samples per channel and 20 ms, interleaved). With DTX
    /// on, a silent packet comes back as at most 2 bytes, which is not to be sent
    /// ([`Encoder::is_dtx_packet`]).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8]> {
        let expected = self.channels.frame_len() * self.frames;
        if pcm.len() != expected {
            return Err(Error::FrameSize {
                expected,
                got: pcm.len(),
            });
        }
        let n = self
            .inner
            .encode(pcm, &mut self.out[..])
            .map_err(|e| Error::opus("encode", e))?;
        Ok(&self.out[..n])
    }

    /// Whether `packet` is a DTX "nothing to say" packet that the sender should skip.
    pub fn is_dtx_packet(&self, packet: &[u8]) -> bool {
        self.dtx && packet.len() <= 2
    }

    /// Whether DTX is on.
    pub fn dtx(&self) -> bool {
        self.dtx
    }

    /// Changes the bitrate mid-stream (e.g. a user setting).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<()> {
        self.inner
            .set_bitrate(opus::Bitrate::Bits(bitrate as i32))
            .map_err(|e| Error::opus("set bitrate", e))
    }
}

/// What the jitter buffer needs from a decoder. libopus is the real one ([`Decoder`]); the
/// benches plug in a no-op to measure the engine's own cost apart from libopus.
///
/// All outputs are interleaved at 48 kHz; `out.len()` is the number of samples wanted (a
/// multiple of 2.5 ms for `decode_fec`). Each returns samples per channel written. Loss
/// concealment is the jitter buffer's own (`expand.rs`), not the decoder's.
pub trait FrameDecoder {
    fn channels(&self) -> Channels;
    /// Decodes a received packet.
    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize>;
    /// Rebuilds the frame that preceded `next` from `next`'s in-band FEC (or conceals it when
    /// `next` carries none).
    fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize>;
    /// Whether `next` carries in-band FEC to rebuild its predecessor with. Without it,
    /// `decode_fec` would run libopus's own concealment, which fades a stationary signal and
    /// makes SILK scale the frames after it down to match: the jitter buffer conceals instead.
    fn has_fec(&self, next: &[u8]) -> bool;
}

/// A libopus decoder at 48 kHz.
pub struct Decoder {
    inner: opus::Decoder,
    channels: Channels,
    /// libopus decodes in float here; its 16-bit call adds a soft clipper and a conversion
    /// that cost a tenth of the decode. The decoder writes floats and [`to_i16`] converts.
    float: Vec<f32>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// `channels` is the output layout; Opus decodes a mono packet to stereo and back as asked.
    pub fn new(channels: Channels) -> Result<Self> {
        let inner = opus::Decoder::new(SAMPLE_RATE, channels.to_opus())
            .map_err(|e| Error::opus("decoder creation", e))?;
        Ok(Decoder {
            inner,
            channels,
            float: Vec::new(),
        })
    }
}

impl Decoder {
    fn decode_into(
        &mut self,
        packet: &[u8],
        out: &mut [i16],
        fec: bool,
    ) -> std::result::Result<usize, opus::Error> {
        // Sized once to the largest `out` seen (120 ms of stereo at most).
        if self.float.len() < out.len() {
            self.float.resize(out.len(), 0.0);
        }
        let float = &mut self.float[..out.len()];
        let n = self.inner.decode_float(packet, float, fec)?;
        let samples = (n * self.channels.count()).min(out.len());
        to_i16(&float[..samples], &mut out[..samples]);
        Ok(n)
    }
}

/// Float samples in [-1, 1) to 16-bit, rounded to nearest and saturated, as libopus's own
/// conversion; written so that it vectorizes (no rounding call per sample).
fn to_i16(from: &[f32], to: &mut [i16]) {
    // Adding and taking away 1.5 * 2^23 leaves a float rounded to an integer (ties to even)
    // for anything within range after the clamp.
    const ROUND: f32 = 12_582_912.0;
    for (t, &f) in to.iter_mut().zip(from) {
        let v = (f * 32768.0).clamp(-32768.0, 32767.0);
        *t = ((v + ROUND) - ROUND) as i16;
    }
}

impl FrameDecoder for Decoder {
    fn channels(&self) -> Channels {
        self.channels
    }

    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize> {
        self.decode_into(packet, out, false)
            .map_err(|e| Error::opus("decode", e))
    }

    fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize> {
        self.decode_into(next, out, true)
            .map_err(|e| Error::opus("FEC decode", e))
    }

    fn has_fec(&self, next: &[u8]) -> bool {
        packet_has_fec(next)
    }
}

/// Whether an Opus packet carries LBRR (in-band FEC) data for the frame before it: SILK and
/// hybrid packets only, read by libopus from the packet's first SILK header bits.
pub fn packet_has_fec(packet: &[u8]) -> bool {
    let Ok(len) = i32::try_from(packet.len()) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    // SAFETY: libopus reads at most `len` bytes from `packet`, which is a live slice of that
    // length for the whole call; it keeps no pointer and has no other side effect.
    unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), len) == 1 }
}

/// Duration of an Opus packet in samples per channel at 48 kHz, read from its TOC byte
/// (RFC 6716 §3.1); `None` for a packet no decoder would accept (empty, a bad frame count,
/// or longer than 120 ms).
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][(config & 3) as usize],
        12..=15 => [480, 960][(config & 1) as usize],
        _ => [120, 240, 480, 960][(config & 3) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 => 2,
        2 => {
            if packet.len() < 2 {
                return None;
            }
            2
        }
        _ => {
            let count = (*packet.get(1)? & 0x3f) as u32;
            if count == 0 {
                return None;
            }
            count
        }
    };
    let total = per_frame * frames;
    (total as usize <= MAX_PACKET_SAMPLES).then_some(total)
}

/// Whether a packet from a file can go on the wire as it is: a 10..=120 ms duration every
/// receiver accepts, and a size that fits one datagram.
pub fn fits_wire(packet: &[u8]) -> bool {
    packet.len() <= MAX_OPUS_PAYLOAD
        && packet_samples(packet).is_some_and(|n| n as usize >= FRAME_SAMPLES / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding in float and converting gives what libopus's own 16-bit call gives (within
    /// one step of rounding) for each preset's packets below full scale, where libopus's
    /// soft clipper does nothing; FEC and concealment go the same way.
    #[test]
    fn float_decoding_matches_libopus_16_bit_output() {
        for (name, config, channels) in [
            ("voice", EncoderConfig::voice(), Channels::Mono),
            ("lean", EncoderConfig::lean(), Channels::Mono),
            ("music", EncoderConfig::music(), Channels::Stereo),
        ] {
            let mut enc = Encoder::new(&config).unwrap();
            let mut ours = Decoder::new(channels).unwrap();
            let mut theirs = opus::Decoder::new(SAMPLE_RATE, channels.to_opus()).unwrap();
            let per = channels.count();
            let (mut a, mut b) = (vec![0i16; 960 * per], vec![0i16; 960 * per]);
            let mut worst = 0i32;
            let mut loud = 0usize;
            for k in 0..100usize {
                let pcm: Vec<i16> = (0..960 * per)
                    .map(|i| {
                        let t = (k * 960 + i / per) as f64 / 48_000.0;
                        let tone = (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                            + 0.5 * (2.0 * std::f64::consts::PI * 1_250.0 * t).sin();
                        (tone * 12_000.0) as i16
                    })
                    .collect();
                let packet = enc.encode(&pcm).unwrap().to_vec();
                // Every tenth packet is lost and concealed (an empty packet) on both.
                let input: &[u8] = if k % 10 == 9 { &[] } else { &packet };
                let n = ours.decode(input, &mut a).unwrap();
                assert_eq!(n, theirs.decode(input, &mut b, false).unwrap(), "{name}");
                for (x, y) in a.iter().zip(&b) {
                    worst = worst.max((i32::from(*x) - i32::from(*y)).abs());
                }
                loud += a.iter().filter(|s| s.unsigned_abs() > 4_000).count();
            }
            assert!(worst <= 1, "{name}: float decoding differs by {worst}");
            assert!(
                loud > 10_000,
                "{name}: the decoded tone is missing ({loud})"
            );
        }
    }

    #[test]
    fn float_to_16_bit_rounds_to_nearest_and_saturates() {
        let from = [
            0.0,
            0.4 / 32768.0,
            0.6 / 32768.0,
            -0.6 / 32768.0,
            0.5,
            -0.5,
            1.0,
            1.7,
            -1.0,
            -3.0,
        ];
        let mut to = [0i16; 10];
        to_i16(&from, &mut to);
        assert_eq!(
            to,
            [0, 0, 1, -1, 16384, -16384, 32767, 32767, -32768, -32768]
        );
    }

    #[test]
    fn packet_duration_matches_libopus_for_every_toc() {
        for toc in 0..=255u8 {
            for second in [0u8, 1, 2, 3, 0x30, 0x3f, 0x80] {
                let pkt = [toc, second, 0, 0, 0, 0, 0, 0];
                let ours = packet_samples(&pkt);
                // libopus reports a code-3 packet with a frame count of 0 as 0 samples; no
                // decoder can do anything with it, so ours refuses it.
                let theirs = opus::packet::get_nb_samples(&pkt, 48000)
                    .ok()
                    .filter(|&n| n > 0);
                assert_eq!(
                    ours,
                    theirs.map(|n| n as u32),
                    "toc {toc:#x} second {second:#x}"
                );
            }
        }
        assert_eq!(packet_samples(&[]), None);
        assert_eq!(packet_samples(&[0x03]), None); // code 3 without a count byte
    }

    #[test]
    fn encoder_refuses_bad_settings_and_frames() {
        let bad = EncoderConfig {
            bitrate: 1_000_000_000,
            ..Default::default()
        };
        assert!(matches!(Encoder::new(&bad), Err(Error::InvalidConfig(_))));
        let bad = EncoderConfig {
            complexity: 11,
            ..Default::default()
        };
        assert!(
            matches!(Encoder::new(&bad), Err(Error::InvalidConfig(m)) if m.contains("complexity 11"))
        );
        let mut enc = Encoder::new(&EncoderConfig::default()).unwrap();
        assert!(matches!(
            enc.encode(&[0; 961]),
            Err(Error::FrameSize {
                expected: 960,
                got: 961
            })
        ));
        let stereo = EncoderConfig {
            channels: Channels::Stereo,
            ..Default::default()
        };
        let mut enc = Encoder::new(&stereo).unwrap();
        assert!(enc.encode(&[0; 960]).is_err());
        let pkt = enc.encode(&[0; 1920]).unwrap().to_vec();
        assert_eq!(packet_samples(&pkt), Some(960));
        // A stereo packet says so in its TOC.
        assert_eq!(pkt[0] & 0x04, 0x04);
    }

    #[test]
    fn dtx_packets_are_tiny_only_with_dtx_on() {
        let cfg = EncoderConfig {
            dtx: true,
            ..Default::default()
        };
        let mut enc = Encoder::new(&cfg).unwrap();
        let mut saw_dtx = false;
        for _ in 0..50 {
            let p = enc.encode(&[0; 960]).unwrap().to_vec();
            saw_dtx |= enc.is_dtx_packet(&p);
        }
        assert!(saw_dtx, "libopus never entered DTX on digital silence");
        let mut enc = Encoder::new(&EncoderConfig::default()).unwrap();
        for _ in 0..50 {
            let p = enc.encode(&[0; 960]).unwrap().to_vec();
            assert!(!enc.is_dtx_packet(&p));
        }
    }

    /// Power of `hz` in `x` (Goertzel), per sample.
    fn power_at(x: &[i16], hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / SAMPLE_RATE as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s0 = v as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len() as f64).powi(2)
    }

    #[test]
    fn the_lean_preset_codes_celt_alone_keeps_the_full_band_and_carries_no_fec() {
        // A voice-like 300 Hz tone with a 14 kHz partial 20 dB under it: the partial is
        // above the wide band (8 kHz), so only a full-band coder keeps it.
        let pcm: Vec<i16> = (0..FRAME_SAMPLES * 100)
            .map(|i| {
                let t = i as f64 / SAMPLE_RATE as f64;
                let x = (2.0 * std::f64::consts::PI * 300.0 * t).sin()
                    + 0.1 * (2.0 * std::f64::consts::PI * 14_000.0 * t).sin();
                (x * 12_000.0) as i16
            })
            .collect();
        let lean = EncoderConfig::lean();
        let mut enc = Encoder::new(&lean).unwrap();
        let mut dec = Decoder::new(Channels::Mono).unwrap();
        let mut out = Vec::new();
        let mut bytes = 0;
        for frame in pcm.chunks(FRAME_SAMPLES) {
            let p = enc.encode(frame).unwrap().to_vec();
            bytes += p.len();
            // TOC configurations 16..=31 are CELT-only (RFC 6716 §3.1).
            assert!(p[0] >> 3 >= 16, "TOC {:#x} is not CELT", p[0]);
            assert!(!dec.has_fec(&p));
            let mut frame_out = [0i16; FRAME_SAMPLES];
            let n = dec.decode(&p, &mut frame_out).unwrap();
            out.extend_from_slice(&frame_out[..n]);
        }
        let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
        assert!((55.0..=70.0).contains(&kbps), "{kbps} kbit/s");
        // Past the codec's start-up and delay.
        let (sent, got) = (&pcm[9600..86_400], &out[9600..86_400]);
        let ratio = |x: &[i16]| 10.0 * (power_at(x, 14_000.0) / power_at(x, 300.0)).log10();
        let (r_sent, r_got) = (ratio(sent), ratio(got));
        assert!(
            (r_got - r_sent).abs() < 3.0,
            "14 kHz against 300 Hz: sent {r_sent:.1} dB, decoded {r_got:.1} dB"
        );
    }
}
