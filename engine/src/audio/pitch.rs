//! The period of the recent signal, for the receive side's concealment ([`super::expand`]) and
//! time-stretching ([`super::stretch`]): both repeat or remove whole periods so the waveform
//! goes on without a seam.
//!
//! A normalised autocorrelation over lags of 2.5..20 ms, searched on a 4:1 decimated copy and
//! refined at full rate around the best coarse lag, so one search costs well under a
//! millisecond of CPU even at 48 kHz.

/// Shortest period searched: 2.5 ms (400 Hz). Higher voices repeat twice inside it, which is
/// as good for repetition.
pub(crate) const MIN_PERIOD: usize = 120;
/// Longest period searched: 20 ms (50 Hz).
pub(crate) const MAX_PERIOD: usize = 960;

const DECIMATION: usize = 4;

/// The best period of `signal` (mono, most recent sample last) between `min` and `max`
/// samples, and how periodic the signal is there (normalised correlation, -1..=1). The last
/// `window` samples are compared with the `window` samples one period earlier, so `signal`
/// must hold at least `max + window` samples; with less, the range shrinks to fit.
pub(crate) fn find_period(signal: &[f32], min: usize, max: usize, window: usize) -> (usize, f32) {
    let max = max.min(signal.len().saturating_sub(window));
    if max < min || window == 0 {
        return (min.max(1), 0.0);
    }
    // Coarse search on an average-decimated copy.
    let coarse: Vec<f32> = signal
        .chunks_exact(DECIMATION)
        .map(|c| c.iter().sum::<f32>() / DECIMATION as f32)
        .collect();
    let cw = window / DECIMATION;
    let (cmin, cmax) = (min.div_ceil(DECIMATION), max / DECIMATION);
    let mut best = (min, f32::MIN);
    if cw > 0 && cmax >= cmin && coarse.len() >= cmax + cw {
        for lag in cmin..=cmax {
            let c = correlation(&coarse, lag, cw);
            if c > best.1 {
                best = (lag * DECIMATION, c);
            }
        }
    }
    // Refine at full rate around the coarse winner.
    let lo = best.0.saturating_sub(DECIMATION).max(min);
    let hi = (best.0 + DECIMATION).min(max);
    let mut fine = (best.0.clamp(min, max), f32::MIN);
    for lag in lo..=hi {
        let c = correlation(signal, lag, window);
        if c > fine.1 {
            fine = (lag, c);
        }
    }
    fine
}

/// Normalised correlation of the last `window` samples of `s` with those `lag` earlier.
pub(crate) fn correlation(s: &[f32], lag: usize, window: usize) -> f32 {
    let end = s.len();
    let (a, b) = (&s[end - window..], &s[end - window - lag..end - lag]);
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= f32::EPSILON || bb <= f32::EPSILON {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// Mono mixdown of interleaved `pcm` as floats (the search needs no stereo detail).
pub(crate) fn mono(pcm: &[i16], channels: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        pcm.chunks_exact(channels)
            .map(|f| f.iter().map(|&s| f32::from(s)).sum::<f32>() / channels as f32),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harmonic(period: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let p = i as f32 / period * std::f32::consts::TAU;
                1000.0 * p.sin() + 500.0 * (2.0 * p).sin() + 250.0 * (3.0 * p + 1.0).sin()
            })
            .collect()
    }

    #[test]
    fn finds_the_period_of_a_voice_like_signal() {
        for period in [200.0f32, 333.0, 480.0, 700.0] {
            let s = harmonic(period, 2400);
            let (p, c) = find_period(&s, MIN_PERIOD, MAX_PERIOD, 240);
            let p = p as f32;
            // The period or (under MIN_PERIOD) a multiple of it.
            let k = (p / period).round().max(1.0);
            assert!((p - k * period).abs() <= 2.0, "{period}: found {p}");
            assert!(c > 0.95, "{period}: correlation {c}");
        }
    }

    #[test]
    fn noise_is_not_periodic_and_short_input_is_safe() {
        let mut x = 12345u32;
        let noise: Vec<f32> = (0..2400)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as f32 - 32768.0
            })
            .collect();
        let (_, c) = find_period(&noise, MIN_PERIOD, MAX_PERIOD, 240);
        assert!(c < 0.5, "{c}");
        assert_eq!(
            find_period(&noise[..100], MIN_PERIOD, MAX_PERIOD, 240).1,
            0.0
        );
        assert_eq!(
            find_period(&[0.0; 2000], MIN_PERIOD, MAX_PERIOD, 240).1,
            0.0
        );
    }
}
