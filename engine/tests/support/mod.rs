//! Test helpers: signals, a deterministic RNG, and spectrum/continuity measurements.
#![allow(dead_code)]

pub mod e2e;
pub mod proxy;

use rustfft::{num_complex::Complex, FftPlanner};

/// A sine of `freq` Hz at `amplitude` (of i16 full scale), `n` samples at `rate`, starting at
/// sample `start` (so consecutive calls join without a phase jump).
pub fn sine(freq: f64, amplitude: f64, rate: u32, start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()).round()
                as i16
        })
        .collect()
}

/// One channel of interleaved samples.
pub fn channel(interleaved: &[i16], channels: usize, which: usize) -> Vec<i16> {
    interleaved
        .iter()
        .skip(which)
        .step_by(channels)
        .copied()
        .collect()
}

/// The frequency with the most energy, by FFT with a Hann window and parabolic interpolation
/// between bins (accurate to a fraction of a bin: ~0.1 Hz on a second of audio).
pub fn dominant_frequency(samples: &[i16], rate: u32) -> f64 {
    let n = samples.len();
    assert!(n >= 1024, "need at least 1024 samples, got {n}");
    let mut buf: Vec<Complex<f64>> = samples
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
            Complex::new(s as f64 * w, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let mags: Vec<f64> = buf[..n / 2].iter().map(|c| c.norm()).collect();
    let (k, _) =
        mags.iter().enumerate().skip(1).fold(
            (0, 0.0),
            |best, (i, &m)| if m > best.1 { (i, m) } else { best },
        );
    let (a, b, c) = (
        mags[k - 1].ln(),
        mags[k].ln(),
        mags[(k + 1).min(n / 2 - 1)].ln(),
    );
    let offset = 0.5 * (a - c) / (a - 2.0 * b + c);
    (k as f64 + if offset.is_finite() { offset } else { 0.0 }) * rate as f64 / n as f64
}

pub fn assert_frequency(samples: &[i16], rate: u32, want: f64, what: &str) {
    let got = dominant_frequency(samples, rate);
    let err = (got - want).abs() / want;
    assert!(
        err < 0.02,
        "{what}: dominant frequency {got:.1} Hz, want {want} Hz (±2%)"
    );
}

/// RMS of a block, relative to full scale.
pub fn rms(block: &[i16]) -> f64 {
    if block.is_empty() {
        return 0.0;
    }
    (block.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / block.len() as f64).sqrt()
        / 32768.0
}

/// The longest run (in ms) of 5 ms blocks whose RMS is below `floor`, between the first and
/// the last block above it: the longest audible gap inside the signal.
pub fn longest_gap_ms(mono: &[i16], rate: u32, floor: f64) -> f64 {
    let block = rate as usize / 200;
    let loud: Vec<bool> = mono.chunks(block).map(|b| rms(b) >= floor).collect();
    let (Some(first), Some(last)) = (loud.iter().position(|&l| l), loud.iter().rposition(|&l| l))
    else {
        return f64::INFINITY;
    };
    let mut longest = 0;
    let mut run = 0;
    for &l in &loud[first..=last] {
        run = if l { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    longest as f64 * 5.0
}

/// xorshift64*: deterministic and good enough for loss/jitter patterns.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The normalised cross-correlation of `a` with `b` delayed by `lag`, over their overlap:
/// 1.0 when `b` is `a` shifted and scaled.
pub fn correlation_at(a: &[i16], b: &[i16], lag: usize) -> f64 {
    let n = a.len().min(b.len().saturating_sub(lag));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a[i] as f64, b[i + lag] as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa > 0.0 && bb > 0.0 {
        ab / (aa * bb).sqrt()
    } else {
        0.0
    }
}

/// Aligns `b` (a delayed copy of `a`) on `a`: the lag in `0..max_lag` at which the part
/// `a[at..at + window]` correlates best (put `at` on a distinctive moment, such as a change of
/// tone: a steady tone matches itself at every period), and the correlation of the whole
/// signals at that lag.
pub fn best_correlation(
    a: &[i16],
    b: &[i16],
    max_lag: usize,
    at: usize,
    window: usize,
) -> (f64, usize) {
    let part = &a[at.min(a.len())..(at + window).min(a.len())];
    let score = |lag: usize| correlation_at(part, b.get(at..).unwrap_or(&[]), lag);
    let lag = (0..max_lag)
        .max_by(|&x, &y| score(x).total_cmp(&score(y)))
        .unwrap_or(0);
    (correlation_at(a, b, lag), lag)
}

/// Writes 16-bit PCM WAV.
pub fn write_wav(path: &std::path::Path, rate: u32, channels: u16, interleaved: &[i16]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in interleaved {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// A WAV file's samples (interleaved) and its channel count.
pub fn read_wav(path: &std::path::Path) -> (Vec<i16>, u16) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let channels = r.spec().channels;
    (r.samples::<i16>().map(|s| s.unwrap()).collect(), channels)
}

/// Whether a 20 ms block of a recorded tone is good, as `scripts/compare-receive.sh` scores
/// it: most of its power at `hz`, and its RMS at least half that of the clean tone (peak
/// `amplitude`).
pub fn tone_block_is_good(block: &[i16], rate: u32, hz: f64, amplitude: f64) -> bool {
    let n = block.len() as f64;
    let (mut re, mut im, mut power) = (0.0, 0.0, 0.0);
    for (i, &x) in block.iter().enumerate() {
        let x = f64::from(x);
        let w = std::f64::consts::TAU * hz * i as f64 / f64::from(rate);
        re += x * w.cos();
        im += x * w.sin();
        power += x * x;
    }
    // |X|^2 * 2 / n^2 is the squared amplitude of the `hz` component; half of it its power.
    let tone_power = 2.0 * (re * re + im * im) / (n * n);
    let share = tone_power / (power / n).max(1e-9);
    share >= 0.5 && (power / n).sqrt() >= 0.5 * amplitude / 2f64.sqrt()
}

/// The share of good blocks (%) and the longest run of bad ones (ms, 20 ms blocks).
pub fn block_score(good: &[bool]) -> (f64, usize) {
    let share = good.iter().filter(|&&g| g).count() as f64 * 100.0 / good.len().max(1) as f64;
    let (mut longest, mut run) = (0, 0);
    for &g in good {
        run = if g { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    (share, longest * 20)
}
