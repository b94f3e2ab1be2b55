//! Time-stretching of decoded audio by whole pitch periods, so the jitter buffer can change its
//! delay without a gap or a repeated frame: "accelerate" takes one period out of a chunk,
//! "slow down" (NetEq's preemptive expand) puts one more in. The period is found in the chunk
//! itself and the seam is cross-faded over a whole period, so a voice or a tone goes on with
//! its waveform intact, only a few milliseconds shorter or longer.

use super::pitch::{correlation, find_period, mono, MIN_PERIOD};

/// Longest period taken out or put in (10 ms): a chunk must hold two of them.
const MAX_STRETCH_PERIOD: usize = 480;
/// Samples compared in the period search (5 ms).
const WINDOW: usize = 240;
/// Below this periodicity a chunk is left alone (stretching noise-like audio smears it)...
const MIN_CORRELATION: f32 = 0.6;
/// ...unless it is this quiet (mean absolute sample): pauses are where delay is best changed.
const QUIET: f32 = 300.0;

/// Reusable scratch space for [`accelerate`] and [`slow_down`].
#[derive(Default)]
pub(crate) struct Stretcher {
    mono: Vec<f32>,
    tmp: Vec<i16>,
}

impl Stretcher {
    /// The period to take out of or put into `pcm` (interleaved), or `None` when the chunk is
    /// neither periodic nor quiet enough, or too short.
    fn period(&mut self, pcm: &[i16], channels: usize) -> Option<usize> {
        let frames = pcm.len() / channels;
        if frames < 2 * MIN_PERIOD + WINDOW {
            return None;
        }
        mono(pcm, channels, &mut self.mono);
        let max = MAX_STRETCH_PERIOD.min((frames - WINDOW) / 2);
        let (period, c) = find_period(&self.mono, MIN_PERIOD, max, WINDOW);
        let quiet = self.mono.iter().map(|s| s.abs()).sum::<f32>() / frames as f32 <= QUIET;
        if c >= MIN_CORRELATION || quiet {
            // The whole two periods must match, not just the window.
            let whole = correlation(&self.mono, period, period);
            (whole >= MIN_CORRELATION || quiet).then_some(period)
        } else {
            None
        }
    }

    /// Takes one period out of the end of `buf[..len]` (interleaved): the last two periods
    /// become one, cross-faded from the first into the second, so the chunk still ends with
    /// its own last sample. Returns the samples per channel taken out (0: left alone).
    pub(crate) fn accelerate(&mut self, buf: &mut [i16], len: usize, channels: usize) -> usize {
        let Some(p) = self.period(&buf[..len], channels) else {
            return 0;
        };
        let frames = len / channels;
        let a = (frames - 2 * p) * channels;
        let pl = p * channels;
        for i in 0..pl {
            let w = ((i / channels) as f32 + 0.5) / p as f32;
            let (x, y) = (f32::from(buf[a + i]), f32::from(buf[a + pl + i]));
            buf[a + i] = (x * (1.0 - w) + y * w) as i16;
        }
        p
    }

    /// Puts one period more into the end of `buf[..len]`, which must have room for it: the
    /// last period is played twice, the seam cross-faded. Returns the samples per channel
    /// added (0: left alone).
    pub(crate) fn slow_down(&mut self, buf: &mut [i16], len: usize, channels: usize) -> usize {
        let Some(p) = self.period(&buf[..len], channels) else {
            return 0;
        };
        let pl = p * channels;
        if len + pl > buf.len() {
            return 0;
        }
        // Was: ... A B (two last periods). Becomes: ... A X B, where X fades from B (which
        // follows A) into A (which leads into B).
        let frames = len / channels;
        let a = (frames - 2 * p) * channels;
        self.tmp.clear();
        self.tmp.extend_from_slice(&buf[a..len]);
        let (pa, pb) = self.tmp.split_at(pl);
        for i in 0..pl {
            let w = ((i / channels) as f32 + 0.5) / p as f32;
            let x = f32::from(pb[i]) * (1.0 - w) + f32::from(pa[i]) * w;
            buf[a + pl + i] = x as i16;
        }
        buf[a + 2 * pl..len + pl].copy_from_slice(pb);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f32, phase: usize) -> Vec<i16> {
        (phase..phase + n)
            .map(|i| (8000.0 * (i as f32 * hz / 48_000.0 * std::f32::consts::TAU).sin()) as i16)
            .collect()
    }

    /// Largest jump between neighbouring samples: a seam shows as a jump far above the
    /// signal's own (8000 * 2 * pi * 200 / 48000 ~ 210 per sample).
    fn max_step(s: &[i16]) -> i32 {
        s.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap()
    }

    #[test]
    fn a_voice_like_chunk_gets_one_period_shorter_or_longer_without_a_seam() {
        let mut st = Stretcher::default();
        let mut buf = vec![0i16; 960 + 480];
        let chunk = tone(960, 200.0, 0); // period 240
        buf[..960].copy_from_slice(&chunk);
        let removed = st.accelerate(&mut buf, 960, 1);
        assert_eq!(removed % 240, 0, "{removed}");
        assert!(removed > 0);
        let out = &buf[..960 - removed];
        assert!(max_step(out) < 300, "{}", max_step(out));
        // It still ends where the chunk ended, so the next chunk follows on.
        assert!((i32::from(out[out.len() - 1]) - i32::from(chunk[959])).abs() < 100);

        buf[..960].copy_from_slice(&chunk);
        let added = st.slow_down(&mut buf, 960, 1);
        assert_eq!(added % 240, 0, "{added}");
        let out = &buf[..960 + added];
        assert!(max_step(out) < 300, "{}", max_step(out));
        assert_eq!(out[out.len() - 1], chunk[959]);
    }

    #[test]
    fn noise_is_left_alone_and_silence_is_stretched() {
        let mut st = Stretcher::default();
        let mut x = 99u32;
        let mut noise: Vec<i16> = (0..960)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 2
            })
            .collect();
        noise.resize(1440, 0);
        assert_eq!(st.accelerate(&mut noise, 960, 1), 0);
        assert_eq!(st.slow_down(&mut noise, 960, 1), 0);
        let mut quiet = vec![0i16; 1440];
        assert!(st.accelerate(&mut quiet, 960, 1) > 0);
    }

    #[test]
    fn stereo_keeps_its_channels_apart() {
        let mut st = Stretcher::default();
        let l = tone(960, 250.0, 0);
        let mut buf: Vec<i16> = l.iter().flat_map(|&s| [s, -s]).collect();
        buf.resize(2 * 1440, 0);
        let added = st.slow_down(&mut buf, 1920, 2);
        assert!(added > 0);
        for f in buf[..(960 + added) * 2].chunks(2) {
            assert!((i32::from(f[0]) + i32::from(f[1])).abs() <= 1, "{f:?}");
        }
    }
}
