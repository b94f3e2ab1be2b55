//! Loss concealment on the decoded signal, in the manner of NetEq's "expand": when audio is
//! missing, the last pitch period that was played is repeated, held at full level for a while
//! when the signal was clearly periodic (a held vowel, a tone) and faded out towards the
//! concealment limit; when real audio comes back it is cross-faded in ("merge").
//!
//! Why not libopus's own PLC: it fades a stationary signal to half its level within the first
//! 20 ms, and SILK then scales the next good frame (in-band FEC included) down to match what it
//! concealed, so a loss of two packets cost three quiet frames. Here the decoder is never told
//! of the gap; it decodes the next packet (or its FEC) from its last state, and the cross-fade
//! hides the seam.

use super::pitch::{find_period, mono, MAX_PERIOD, MIN_PERIOD};

/// Samples per channel kept of what was played: the longest period and a search window.
const HISTORY: usize = MAX_PERIOD + WINDOW;
/// Samples compared in the period search (5 ms).
const WINDOW: usize = 240;
/// Cross-fade from concealment into real audio (5 ms).
const MERGE: usize = 240;
/// Above this periodicity the signal counts as voiced (held before fading).
const VOICED: f32 = 0.5;

/// See the module documentation.
pub(crate) struct Expander {
    channels: usize,
    /// Samples per channel after which concealment is silence.
    limit: usize,
    /// The last `HISTORY` samples per channel played, interleaved, oldest first.
    history: Vec<i16>,
    mono: Vec<f32>,
    active: Option<Expansion>,
    /// One period (interleaved) of the expansion under way, repeated; reused across losses.
    template: Vec<i16>,
    merge: Vec<i16>,
}

struct Expansion {
    period: usize,
    /// Position in the template of the next sample.
    pos: usize,
    /// Samples per channel concealed so far.
    done: usize,
    /// Full level until `hold`, then a linear fade to zero at `end`.
    hold: usize,
    end: usize,
}

impl Expander {
    pub(crate) fn new(channels: usize, limit: usize) -> Self {
        Expander {
            channels,
            limit,
            history: vec![0; HISTORY * channels],
            mono: Vec::with_capacity(HISTORY),
            active: None,
            template: Vec::with_capacity(MAX_PERIOD * channels),
            merge: vec![0; MERGE * channels],
        }
    }

    /// Forgets everything (the stream restarted).
    pub(crate) fn reset(&mut self) {
        self.history.fill(0);
        self.active = None;
    }

    /// Records what was played, so concealment continues from it.
    pub(crate) fn observe(&mut self, pcm: &[i16]) {
        let len = self.history.len();
        if pcm.len() >= len {
            self.history.copy_from_slice(&pcm[pcm.len() - len..]);
        } else {
            self.history.copy_within(pcm.len().., 0);
            self.history[len - pcm.len()..].copy_from_slice(pcm);
        }
    }

    /// Fills `out` (interleaved) with concealment continuing what was played. Returns false
    /// when it is silence: nothing to continue, or past the limit.
    pub(crate) fn expand(&mut self, out: &mut [i16]) -> bool {
        let channels = self.channels;
        if self.active.is_none() {
            self.active = Some(self.start());
        }
        let e = self.active.as_mut().expect("started above");
        if e.done >= e.end {
            out.fill(0);
            e.done += out.len() / channels;
            return false;
        }
        for frame in out.chunks_exact_mut(channels) {
            let gain = if e.done < e.hold {
                1.0
            } else if e.done < e.end {
                1.0 - (e.done - e.hold) as f32 / (e.end - e.hold) as f32
            } else {
                0.0
            };
            let src = &self.template[e.pos * channels..(e.pos + 1) * channels];
            for (o, &s) in frame.iter_mut().zip(src) {
                *o = (f32::from(s) * gain) as i16;
            }
            e.pos = (e.pos + 1) % e.period;
            e.done += 1;
        }
        true
    }

    /// Real audio is back: cross-fades its start from the concealment (when there was one).
    pub(crate) fn merge(&mut self, pcm: &mut [i16]) {
        if self.active.is_none() {
            return;
        }
        let n = (pcm.len() / self.channels).min(MERGE);
        let mut merge = std::mem::take(&mut self.merge);
        let len = n * self.channels;
        self.expand(&mut merge[..len]);
        for (i, (p, &c)) in pcm[..len].iter_mut().zip(&merge[..len]).enumerate() {
            let w = ((i / self.channels) as f32 + 1.0) / (n as f32 + 1.0);
            *p = (f32::from(*p) * w + f32::from(c) * (1.0 - w)) as i16;
        }
        self.merge = merge;
        self.active = None;
    }

    fn start(&mut self) -> Expansion {
        mono(&self.history, self.channels, &mut self.mono);
        let (period, correlation) = find_period(&self.mono, MIN_PERIOD, MAX_PERIOD, WINDOW);
        let start = (HISTORY - period) * self.channels;
        self.template.clear();
        self.template.extend_from_slice(&self.history[start..]);
        // A clearly periodic signal is held for up to half the limit, then faded; anything
        // else fades over half the limit (repeating noise for long would buzz).
        let voiced = ((correlation - VOICED) / (1.0 - VOICED)).clamp(0.0, 1.0);
        let hold = (voiced * self.limit as f32 / 2.0) as usize;
        let end = if voiced > 0.0 {
            self.limit
        } else {
            self.limit / 2
        };
        Expansion {
            period,
            pos: 0,
            done: 0,
            hold,
            end: end.max(hold),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(from: usize, n: usize, hz: f32) -> Vec<i16> {
        (from..from + n)
            .map(|i| (10_000.0 * (i as f32 * hz / 48_000.0 * std::f32::consts::TAU).sin()) as i16)
            .collect()
    }

    fn rms(s: &[i16]) -> f32 {
        (s.iter().map(|&x| f32::from(x).powi(2)).sum::<f32>() / s.len() as f32).sqrt()
    }

    /// A tone cut off goes on at its level and in phase for the first 20 ms, then fades to
    /// silence by the limit.
    #[test]
    fn a_tone_goes_on_in_phase_then_fades() {
        let mut x = Expander::new(1, 4800);
        x.observe(&tone(0, 4800, 440.0));
        let mut out = vec![0i16; 960];
        assert!(x.expand(&mut out));
        let want = tone(4800, 960, 440.0);
        let err: f32 = out
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (f32::from(a) - f32::from(b)).abs())
            .sum::<f32>()
            / 960.0;
        assert!(err < 300.0, "mean error {err} of amplitude 10000");
        let mut levels = vec![rms(&out)];
        for _ in 0..5 {
            let more = x.expand(&mut out);
            levels.push(rms(&out));
            if !more {
                break;
            }
        }
        assert!(levels[0] > 6500.0 && levels[1] > 6500.0, "{levels:?}");
        assert!(levels.windows(2).all(|w| w[1] <= w[0] + 1.0), "{levels:?}");
        assert_eq!(*levels.last().unwrap(), 0.0, "{levels:?}");
    }

    #[test]
    fn merging_back_has_no_jump() {
        let mut x = Expander::new(2, 4800);
        let st: Vec<i16> = tone(0, 2400, 300.0)
            .iter()
            .flat_map(|&s| [s, s / 2])
            .collect();
        x.observe(&st);
        let mut out = vec![0i16; 1920];
        x.expand(&mut out);
        // Real audio resumes with the opposite phase: the cross-fade starts near the concealment.
        let mut back: Vec<i16> = tone(3360, 960, 300.0)
            .iter()
            .flat_map(|&s| [-s, -s / 2])
            .collect();
        let last = out[out.len() - 2];
        x.merge(&mut back);
        assert!(
            (i32::from(back[0]) - i32::from(last)).abs() < 2000,
            "{} vs {last}",
            back[0]
        );
        assert!(x.active.is_none(), "merged back");
    }

    #[test]
    fn silence_history_conceals_silence() {
        let mut x = Expander::new(1, 4800);
        let mut out = vec![7i16; 960];
        x.expand(&mut out);
        assert!(out.iter().all(|&s| s == 0));
    }
}
