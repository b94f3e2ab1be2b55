//! Loudness normalisation for what a call plays, so a queue of tracks mastered at different
//! levels reaches listeners at one level (the `ReplayGain` idea, done while playing since a
//! stream's loudness is not known in advance).
//!
//! The level is measured as EBU R128 loudness (K-weighted, in LUFS, by the `ebur128` crate):
//! the last 400 ms while a track starts, the last 3 s after that. The gain moves towards
//! `target - loudness`, quickly in a track's first seconds (so each track settles fast) and
//! slowly after (so the music's own dynamics are not pumped flat), within a bounded range; it
//! holds through silence. A peak limiter after the gain keeps every sample under the ceiling,
//! so raising a quiet track never clips.
//!
//! It runs on the call's task, per 20 ms frame, without allocating; the loudness is read every
//! 100 ms.

use ebur128::{EbuR128, Mode};

use crate::audio::{Channels, FRAME_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, Result};

/// How a call normalises the loudness of what it plays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoudnessConfig {
    /// The level to reach, in LUFS. -16 is common for speech and streamed music.
    pub target_lufs: f32,
    /// The most a quiet track is raised, in dB.
    pub max_gain_db: f32,
    /// The most a loud track is lowered, in dB.
    pub max_cut_db: f32,
    /// No sample goes above this fraction of full scale (0.89 is -1 dBFS).
    pub ceiling: f32,
}

impl Default for LoudnessConfig {
    fn default() -> Self {
        LoudnessConfig {
            target_lufs: -16.0,
            max_gain_db: 15.0,
            max_cut_db: 25.0,
            ceiling: 0.89,
        }
    }
}

impl LoudnessConfig {
    pub(crate) fn check(&self) -> Result<()> {
        let ok = (-50.0..=0.0).contains(&self.target_lufs)
            && (0.0..=40.0).contains(&self.max_gain_db)
            && (0.0..=60.0).contains(&self.max_cut_db)
            && self.ceiling > 0.0
            && self.ceiling <= 1.0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidConfig(format!(
                "loudness: target {} LUFS (give -50..0), gain up to {} dB (0..40), cut up to {} dB (0..60), ceiling {} (0..1]",
                self.target_lufs, self.max_gain_db, self.max_cut_db, self.ceiling
            )))
        }
    }
}

/// Frames between loudness readings (100 ms).
const READ_EVERY: u32 = 5;
/// A track's first seconds, measured over 400 ms and followed quickly.
const SETTLING_FRAMES: u32 = 150;
/// How fast the gain may move, in dB per reading (100 ms): settling, then steady.
const SETTLING_SLEW_DB: f32 = 3.0;
const STEADY_SLEW_DB: f32 = 0.2;
/// Below this the input is silence (a pause between songs): the gain holds.
const SILENCE_LUFS: f64 = -60.0;
/// Momentary loudness this far below the short-term one is a fade or a gap: the gain holds.
const GATE_DB: f64 = 10.0;
/// How fast the limiter lets go after a peak, per sample (about 50 ms to recover 6 dB).
const LIMITER_RELEASE: f32 = 0.00002;

/// The normaliser of one call's outgoing audio.
pub struct Normalizer {
    config: LoudnessConfig,
    channels: usize,
    meter: EbuR128,
    /// The gain now and the gain being moved towards, in dB.
    gain_db: f32,
    /// The linear gain the last frame ended with (the next one starts from it: no steps).
    gain: f32,
    limiter: f32,
    frames: u32,
    out: Vec<i16>,
}

impl Normalizer {
    pub fn new(config: LoudnessConfig, channels: Channels) -> Result<Self> {
        config.check()?;
        let n = channels.count();
        let meter = EbuR128::new(n as u32, SAMPLE_RATE, Mode::M | Mode::S)
            .map_err(|e| Error::InvalidConfig(format!("loudness meter: {e}")))?;
        Ok(Normalizer {
            config,
            channels: n,
            meter,
            gain_db: 0.0,
            gain: 1.0,
            limiter: 1.0,
            frames: 0,
            out: vec![0; FRAME_SAMPLES * n],
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// A new track starts: its loudness is measured afresh (the gain carries on from the last
    /// track's until the new one is known, which avoids a jump at the joint).
    pub fn new_track(&mut self) {
        self.meter.reset();
        self.frames = 0;
    }

    /// The gain applied now, in dB (without the limiter).
    pub fn gain_db(&self) -> f32 {
        self.gain_db
    }

    /// Normalises one frame (interleaved, the normaliser's channel count).
    pub fn process(&mut self, pcm: &[i16]) -> &[i16] {
        // The meter refuses nothing that is a whole number of frames; a ragged frame is
        // passed through unmeasured rather than failing the call.
        let _ = self.meter.add_frames_i16(pcm);
        self.frames = self.frames.saturating_add(1);
        if self.frames.is_multiple_of(READ_EVERY) {
            self.follow();
        }
        let target = 10f32.powf(self.gain_db / 20.0);
        let n = pcm.len() / self.channels.max(1);
        self.out.resize(pcm.len(), 0);
        let ceiling = self.config.ceiling * 32767.0;
        for i in 0..n {
            // The gain glides across the frame from where the last one ended.
            let g = self.gain + (target - self.gain) * (i + 1) as f32 / n as f32;
            let frame = &pcm[i * self.channels..(i + 1) * self.channels];
            let peak = frame
                .iter()
                .map(|&s| (s as f32 * g).abs())
                .fold(0.0f32, f32::max);
            let need = if peak > ceiling { ceiling / peak } else { 1.0 };
            self.limiter = need.min(self.limiter + LIMITER_RELEASE);
            let g = g * self.limiter;
            for (o, &s) in self.out[i * self.channels..(i + 1) * self.channels]
                .iter_mut()
                .zip(frame)
            {
                *o = (s as f32 * g).round().clamp(-32768.0, 32767.0) as i16;
            }
        }
        self.gain = target;
        &self.out[..pcm.len()]
    }

    /// Moves the gain towards what brings the measured loudness to the target.
    fn follow(&mut self) {
        let settling = self.frames < SETTLING_FRAMES;
        let Ok(momentary) = self.meter.loudness_momentary() else {
            return;
        };
        // Silence, or a fade far below what the last seconds held (the end of a song): hold,
        // rather than raise the gain towards the noise floor.
        if !momentary.is_finite() || momentary < SILENCE_LUFS {
            return;
        }
        let lufs = if settling {
            momentary
        } else {
            match self.meter.loudness_shortterm() {
                Ok(s) if momentary < s - GATE_DB => return,
                Ok(s) => s,
                Err(_) => return,
            }
        };
        let want = (self.config.target_lufs - lufs as f32)
            .clamp(-self.config.max_cut_db, self.config.max_gain_db);
        let slew = if settling {
            SETTLING_SLEW_DB
        } else {
            STEADY_SLEW_DB
        };
        self.gain_db += (want - self.gain_db).clamp(-slew, slew);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, amplitude: f32, seconds: f32) -> Vec<i16> {
        (0..(seconds * 48000.0) as usize)
            .map(|i| {
                (amplitude * (2.0 * std::f32::consts::PI * hz * i as f32 / 48000.0).sin()) as i16
            })
            .collect()
    }

    fn lufs(pcm: &[i16]) -> f64 {
        let mut m = EbuR128::new(1, 48000, Mode::I).unwrap();
        m.add_frames_i16(pcm).unwrap();
        m.loudness_global().unwrap()
    }

    fn run(n: &mut Normalizer, input: &[i16]) -> Vec<i16> {
        input
            .chunks(960)
            .filter(|c| c.len() == 960)
            .flat_map(|c| n.process(c).to_vec())
            .collect()
    }

    /// A quiet track and a loud one, one after the other: apart by 20 dB going in, within
    /// 1 dB of the target (and so of each other) coming out once each has settled, and no
    /// sample above the ceiling at the loud track's start (where the gain is still the quiet
    /// track's).
    #[test]
    fn tracks_of_different_levels_come_out_at_the_target() {
        let mut n = Normalizer::new(LoudnessConfig::default(), Channels::Mono).unwrap();
        let quiet = tone(440.0, 2000.0, 8.0);
        let loud = tone(660.0, 20000.0, 8.0);
        assert!((lufs(&quiet) - lufs(&loud)).abs() > 19.0);
        let a = run(&mut n, &quiet);
        n.new_track();
        let b = run(&mut n, &loud);
        let (la, lb) = (lufs(&a[4 * 48000..]), lufs(&b[4 * 48000..]));
        assert!((la + 16.0).abs() < 1.0, "quiet track at {la:.1} LUFS");
        assert!((lb + 16.0).abs() < 1.0, "loud track at {lb:.1} LUFS");
        let ceiling = (0.89f32 * 32767.0) as i16 + 1;
        let peak = b.iter().map(|s| s.saturating_abs()).max().unwrap();
        assert!(peak <= ceiling, "peak {peak} over the ceiling");
    }

    /// Silence between songs leaves the gain where it was (nothing is pumped up to the
    /// target), and the gain never exceeds its bound on a near-silent track.
    #[test]
    fn silence_holds_the_gain_and_the_gain_is_bounded() {
        let mut n = Normalizer::new(LoudnessConfig::default(), Channels::Mono).unwrap();
        run(&mut n, &tone(440.0, 4000.0, 4.0));
        let before = n.gain_db();
        let out = run(&mut n, &vec![0; 48000 * 3]);
        // At most the last 400 ms of the tone's fade-out is followed before the gate shuts.
        assert!(
            (n.gain_db() - before).abs() < 1.0,
            "{before} dB became {} dB",
            n.gain_db()
        );
        assert!(out.iter().all(|&s| s == 0));
        n.new_track();
        run(&mut n, &tone(440.0, 30.0, 6.0));
        assert!(n.gain_db() <= 15.0 + 1e-3, "{}", n.gain_db());
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        for bad in [
            LoudnessConfig {
                target_lufs: 5.0,
                ..LoudnessConfig::default()
            },
            LoudnessConfig {
                ceiling: 0.0,
                ..LoudnessConfig::default()
            },
            LoudnessConfig {
                max_gain_db: f32::NAN,
                ..LoudnessConfig::default()
            },
        ] {
            assert!(Normalizer::new(bad, Channels::Mono).is_err(), "{bad:?}");
        }
    }
}
