//! Sums the 20 ms frames of several speakers into one (the "mixed" recording, a bridge's output).
//!
//! The sum is kept in `i32` and saturated once at the end, so that two loud speakers clip
//! instead of wrapping around into noise. Gains are plain factors; 1.0 takes an exact fast path.

use crate::error::{Error, Result};

use super::Channels;

/// A reusable mixing bus for one channel layout.
#[derive(Clone, Debug)]
pub struct Mixer {
    channels: Channels,
    acc: Vec<i32>,
    out: Vec<i16>,
    inputs: usize,
}

impl Mixer {
    pub fn new(channels: Channels) -> Self {
        let n = channels.frame_len();
        Mixer {
            channels,
            acc: vec![0; n],
            out: vec![0; n],
            inputs: 0,
        }
    }

    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Adds one speaker's frame (`gain` 1.0 = as is, 0.5 = -6 dB).
    pub fn add(&mut self, pcm: &[i16], gain: f32) -> Result<()> {
        if pcm.len() != self.acc.len() {
            return Err(Error::FrameSize {
                expected: self.acc.len(),
                got: pcm.len(),
            });
        }
        if gain == 1.0 {
            for (a, &s) in self.acc.iter_mut().zip(pcm) {
                *a = a.saturating_add(s as i32);
            }
        } else {
            for (a, &s) in self.acc.iter_mut().zip(pcm) {
                // `as` saturates on overflow, NaN becomes 0.
                *a = a.saturating_add((s as f32 * gain) as i32);
            }
        }
        self.inputs += 1;
        Ok(())
    }

    /// Frames added since the last [`Mixer::finish`].
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The mix of everything added since the last call (silence if nothing was), and a fresh
    /// bus for the next frame.
    pub fn finish(&mut self) -> &[i16] {
        for (o, a) in self.out.iter_mut().zip(self.acc.iter_mut()) {
            *o = (*a).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            *a = 0;
        }
        self.inputs = 0;
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_with_gain_and_saturates() {
        let mut m = Mixer::new(Channels::Mono);
        let a: Vec<i16> = (0..960).map(|i| (i as i16) * 10).collect();
        let b = vec![-100i16; 960];
        m.add(&a, 1.0).unwrap();
        m.add(&b, 0.5).unwrap();
        assert_eq!(m.inputs(), 2);
        let out = m.finish().to_vec();
        for (i, &s) in out.iter().enumerate() {
            assert_eq!(s as i32, (i as i32 * 10 - 50).clamp(-32768, 32767));
        }
        // Three full-scale frames clip instead of wrapping.
        for _ in 0..3 {
            m.add(&[30000; 960], 1.0).unwrap();
            m.add(&[-30000; 960], 0.0).unwrap();
        }
        assert!(m.finish().iter().all(|&s| s == i16::MAX));
        for _ in 0..3 {
            m.add(&[i16::MIN; 960], 2.0).unwrap();
        }
        assert!(m.finish().iter().all(|&s| s == i16::MIN));
        // After finish the bus is empty again.
        assert!(m.finish().iter().all(|&s| s == 0));
    }

    #[test]
    fn refuses_frames_of_the_wrong_layout() {
        let mut m = Mixer::new(Channels::Stereo);
        assert!(matches!(
            m.add(&[0; 960], 1.0),
            Err(Error::FrameSize {
                expected: 1920,
                got: 960
            })
        ));
        assert_eq!(m.inputs(), 0);
    }
}
