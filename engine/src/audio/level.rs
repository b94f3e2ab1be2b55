//! Loudness: the RFC 6464 level every outgoing packet carries, the voice bit next to it, and the
//! ~10 Hz speaking levels an application shows.
//!
//! The level is the frame's RMS in -dBov (0 = full scale, 127 = silence), computed the way
//! libwebrtc's `RmsLevel` does, because Telegram's server is reported to choose whose audio to
//! forward from it: a wrong level can make a bot inaudible.

use groupcall_media::rtp::AudioLevel;

/// The quietest level: digital silence.
pub const SILENT_LEVEL: u8 = 127;

/// RFC 6464 level of interleaved PCM: -dBov of the RMS, rounded, in 0..=127.
pub fn frame_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return SILENT_LEVEL;
    }
    let sum: u64 = pcm
        .iter()
        .map(|&s| {
            let s = s as i64;
            (s * s) as u64
        })
        .sum();
    level_from_mean_square(sum as f64 / pcm.len() as f64)
}

fn level_from_mean_square(mean_square: f64) -> u8 {
    if mean_square <= 0.0 {
        return SILENT_LEVEL;
    }
    // -10 log10(ms / 32768^2) = -dBov of the RMS.
    let db = -10.0 * (mean_square / (32768.0 * 32768.0)).log10();
    db.round().clamp(0.0, SILENT_LEVEL as f64) as u8
}

/// An energy voice-activity detector with hangover.
///
/// Telegram's clients set the V bit from a real VAD; a bot's audio is mostly music or TTS, for
/// which "loud enough, recently" is what matters. The hangover keeps the bit on through the
/// short pauses between words, so the speaking indicator does not flicker.
#[derive(Clone, Debug)]
pub struct Vad {
    threshold: u8,
    hangover: u32,
    remaining: u32,
}

impl Default for Vad {
    /// Voice above -50 dBov, held for 200 ms (10 frames) after the last loud frame.
    fn default() -> Self {
        Vad::new(50, 10)
    }
}

impl Vad {
    /// `threshold` in -dBov (frames at this level or louder are voice); `hangover` in frames.
    pub fn new(threshold: u8, hangover_frames: u32) -> Self {
        Vad {
            threshold,
            hangover: hangover_frames,
            remaining: 0,
        }
    }

    /// Feeds one frame's level; returns whether this frame counts as voice.
    pub fn update(&mut self, level: u8) -> bool {
        if level <= self.threshold {
            self.remaining = self.hangover;
            true
        } else if self.remaining > 0 {
            self.remaining -= 1;
            true
        } else {
            false
        }
    }
}

/// One speaking-level report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeakingLevel {
    /// Loudest linear level (0.0..=1.0, `10^(-dBov/20)`) seen since the previous report.
    pub level: f32,
    /// Whether any observation since the previous report had the voice bit (or was loud).
    pub voice: bool,
}

/// Accumulates one speaker's levels between reports.
///
/// The driver calls [`LevelMeter::take`] every 100 ms; in between it feeds either the level the
/// sender put in the audio-level extension (free) or, when a packet has none, the decoded
/// frame (one pass over 960 samples).
#[derive(Clone, Debug, Default)]
pub struct LevelMeter {
    loudest: Option<u8>,
    voice: bool,
    vad: Vad,
}

impl LevelMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A level from a packet's ssrc-audio-level extension.
    pub fn observe_extension(&mut self, level: AudioLevel) {
        self.observe(level.level, level.voice);
    }

    /// A decoded frame (for packets without the extension).
    pub fn observe_pcm(&mut self, pcm: &[i16]) {
        let level = frame_level(pcm);
        let voice = self.vad.update(level);
        self.observe(level, voice);
    }

    fn observe(&mut self, level: u8, voice: bool) {
        self.loudest = Some(self.loudest.map_or(level, |l| l.min(level)));
        self.voice |= voice;
    }

    /// The report for the period since the last call, or `None` if nothing was observed
    /// (the speaker sent nothing: show them as silent).
    pub fn take(&mut self) -> Option<SpeakingLevel> {
        let loudest = self.loudest.take()?;
        let voice = std::mem::take(&mut self.voice);
        Some(SpeakingLevel {
            level: AudioLevel {
                level: loudest,
                voice,
            }
            .linear(),
            voice,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amplitude: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amplitude * (i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 48000.0).sin())
                    as i16
            })
            .collect()
    }

    #[test]
    fn level_is_minus_dbov_of_rms() {
        assert_eq!(frame_level(&[0; 960]), 127);
        assert_eq!(frame_level(&[]), 127);
        // A full-scale sine has RMS 1/sqrt(2): 3 dBov.
        assert_eq!(frame_level(&sine(32767.0, 960)), 3);
        // 20 dB quieter.
        assert_eq!(frame_level(&sine(3276.7, 960)), 23);
        // Full-scale square wave: 0 dBov.
        assert_eq!(frame_level(&[i16::MIN; 960]), 0);
        // A single LSB of DC is -90.3 dBov.
        assert_eq!(frame_level(&[1; 960]), 90);
    }

    #[test]
    fn vad_holds_over_short_pauses_then_releases() {
        let mut vad = Vad::new(50, 3);
        assert!(!vad.update(127));
        assert!(vad.update(20));
        assert!(vad.update(127));
        assert!(vad.update(127));
        assert!(vad.update(127));
        assert!(!vad.update(127));
        assert!(!vad.update(51));
        assert!(vad.update(50));
    }

    #[test]
    fn meter_reports_the_loudest_once_per_period() {
        let mut m = LevelMeter::new();
        assert_eq!(m.take(), None);
        m.observe_extension(AudioLevel {
            level: 40,
            voice: false,
        });
        m.observe_extension(AudioLevel {
            level: 20,
            voice: true,
        });
        m.observe_extension(AudioLevel {
            level: 60,
            voice: false,
        });
        let r = m.take().unwrap();
        assert!((r.level - 0.1).abs() < 1e-6, "{r:?}");
        assert!(r.voice);
        assert_eq!(m.take(), None);
        m.observe_pcm(&sine(32767.0, 960));
        let r = m.take().unwrap();
        assert!((r.level - 10f32.powf(-3.0 / 20.0)).abs() < 1e-6);
        assert!(r.voice);
        m.observe_pcm(&[0; 960]);
        // Silence after voice: still voice because of the hangover, but level ~0.
        let r = m.take().unwrap();
        assert!(r.level < 1e-6 && r.voice);
    }
}
