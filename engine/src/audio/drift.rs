//! Two clocks, one stream: a sound card runs on its own crystal, the call on the network's
//! 48 kHz, and the two are never exactly equal (0.01 to 0.1 % apart is common). Left alone,
//! the buffer between them fills up (latency grows without end) or runs dry (clicks).
//!
//! [`DriftResampler`] sits on that buffer and resamples by linear interpolation at the
//! nominal ratio of the two rates, nudged by how full the buffer is: fuller than its target,
//! it reads a little faster; emptier, a little slower. The nudge is bounded (0.5 %), far
//! below what an ear hears as pitch, and the buffer settles where the nudge matches the drift.
//! Linear interpolation is enough here: the ratio is within a hair of 1 when both ends run at
//! 48 kHz, which the device layer asks for first.

/// The most the ratio is nudged away from nominal.
const MAX_NUDGE: f64 = 0.005;
/// Nudge per unit of relative fill error (fill / target - 1).
const GAIN: f64 = 0.01;
/// How quickly the measured fill follows (per measurement).
const SMOOTHING: f64 = 0.05;

/// Resamples a buffered stream from `in_rate` to `out_rate`, steering the buffer's fill to a
/// target.
#[derive(Debug)]
pub struct DriftResampler {
    step: f64,
    /// Where between `prev` and `next` the next output sample lies (0..1).
    pos: f64,
    prev: f32,
    next: f32,
    started: bool,
    target: f64,
    fill: f64,
    nudge: f64,
}

impl DriftResampler {
    /// `target` is the fill (in input samples) the buffer is steered to.
    pub fn new(in_rate: u32, out_rate: u32, target: usize) -> Self {
        DriftResampler {
            step: in_rate as f64 / out_rate as f64,
            pos: 0.0,
            prev: 0.0,
            next: 0.0,
            started: false,
            target: target.max(1) as f64,
            fill: target as f64,
            nudge: 0.0,
        }
    }

    /// Steers to another fill from now on.
    pub fn set_target(&mut self, target: usize) {
        self.target = target.max(1) as f64;
    }

    /// Tells it how many input samples are buffered now; call it once per block of output.
    pub fn observe_fill(&mut self, buffered: usize) {
        self.fill += (buffered as f64 - self.fill) * SMOOTHING;
        self.nudge = (GAIN * (self.fill / self.target - 1.0)).clamp(-MAX_NUDGE, MAX_NUDGE);
    }

    /// The ratio's current nudge (+0.001 reads 0.1 % faster than nominal).
    pub fn nudge(&self) -> f64 {
        self.nudge
    }

    /// Fills `out` from `input` (which yields `None` when the buffer is empty). Returns how
    /// many output samples were made: fewer than asked when the input ran out.
    pub fn process(&mut self, mut input: impl FnMut() -> Option<f32>, out: &mut [f32]) -> usize {
        if !self.started {
            match (input(), input()) {
                (Some(a), Some(b)) => {
                    self.prev = a;
                    self.next = b;
                    self.started = true;
                }
                _ => return 0,
            }
        }
        let step = self.step * (1.0 + self.nudge);
        for (i, o) in out.iter_mut().enumerate() {
            while self.pos >= 1.0 {
                match input() {
                    Some(s) => {
                        self.prev = self.next;
                        self.next = s;
                        self.pos -= 1.0;
                    }
                    None => return i,
                }
            }
            *o = self.prev + (self.next - self.prev) * self.pos as f32;
            self.pos += step;
        }
        out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A device 0.1 % fast feeding a consumer at exactly 48 kHz, for 30 simulated minutes: the
    /// buffer settles near its target and stays there (latency does not grow), and after the
    /// start the consumer is never short of samples.
    #[test]
    fn a_device_a_tenth_of_a_percent_off_holds_its_latency_for_30_minutes() {
        for device_rate in [48_048.0, 47_952.0] {
            let target = 960;
            let mut r = DriftResampler::new(48_000, 48_000, target);
            let mut buffer: VecDeque<f32> = VecDeque::new();
            let mut produced = 0.0f64;
            let mut out = [0.0f32; 480];
            let (mut short, mut max_fill, mut last_fill) = (0, 0, 0);
            // 10 ms steps: the device delivers its 10 ms, the consumer takes 480 samples.
            for step in 0..(30 * 60 * 100) {
                let due = (step + 1) as f64 * device_rate / 100.0;
                while produced < due {
                    buffer.push_back(0.1);
                    produced += 1.0;
                }
                if step < 3 {
                    continue; // a little buffered before the first pull
                }
                r.observe_fill(buffer.len());
                let n = r.process(|| buffer.pop_front(), &mut out);
                if step > 1000 {
                    short += usize::from(n < out.len());
                    max_fill = max_fill.max(buffer.len());
                }
                last_fill = buffer.len();
            }
            eprintln!(
                "device at {device_rate} Hz: after 30 min {last_fill} samples buffered (target {target}, at most {max_fill}), nudge {:+.5}",
                r.nudge()
            );
            assert_eq!(short, 0, "{device_rate}: the consumer ran short");
            assert!(
                max_fill < target * 3,
                "{device_rate}: up to {max_fill} samples buffered"
            );
            assert!(
                last_fill < target * 3,
                "{device_rate}: {last_fill} buffered at the end"
            );
        }
    }

    /// At a fixed fill a 44.1 kHz input comes out at 48 kHz with the tone's pitch.
    #[test]
    fn resamples_at_the_nominal_ratio() {
        let mut r = DriftResampler::new(44_100, 48_000, 4410);
        let tone: VecDeque<f32> = (0..44_100)
            .map(|i| (2.0 * std::f32::consts::PI * 441.0 * i as f32 / 44_100.0).sin())
            .collect();
        let mut input = tone.into_iter();
        let mut out = vec![0.0f32; 48_000];
        let n = r.process(|| input.next(), &mut out);
        assert!(n >= 47_990, "{n}");
        // Zero crossings upward: 441 per second.
        let ups = out[..n]
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!((439..=442).contains(&ups), "{ups}");
    }
}
