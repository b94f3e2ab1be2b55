//! Turns PCM of any rate and channel count into 20 ms frames of 48 kHz mono or stereo.
//!
//! Rates other than 48 kHz go through rubato's FFT resampler, which is exact for the fixed
//! integer ratios files have (44.1k, 22.05k, 16k, 8k...). The resampler's own delay is trimmed
//! from the start and its tail flushed at the end, so a file keeps its exact length and a
//! looped file stays in time. Channel counts above two are folded down: mono is the average
//! of all channels, stereo takes the first two (front left and right in WAV's order).

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::{Channels, FRAME_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, Result};

/// Input frames per resampler call: ~21 ms at 48 kHz, more latency at low rates (fine for
/// files and pipes, which are read ahead).
const CHUNK: usize = 1024;

pub(crate) struct Conformer {
    input: String,
    rate: u32,
    in_channels: usize,
    out: Channels,
    resampler: Option<Fft<f32>>,
    rs_in: Vec<f32>,
    rs_out: Vec<f32>,
    fifo: Vec<i16>,
    fifo_pos: usize,
    trim: usize,
    in_frames: u64,
    out_frames: u64,
    finished: bool,
}

impl Conformer {
    /// Forgets everything buffered (the input jumped: a seek).
    pub(crate) fn reset(&mut self) -> Result<()> {
        *self = Conformer::new(&self.input, self.rate, self.in_channels, self.out)?;
        Ok(())
    }

    /// `input` names the source in errors.
    pub(crate) fn new(input: &str, rate: u32, in_channels: usize, out: Channels) -> Result<Self> {
        if rate == 0 || rate > 768_000 {
            return Err(Error::InvalidConfig(format!(
                "{input}: sample rate {rate} Hz is outside 1..=768000"
            )));
        }
        if in_channels == 0 || in_channels > 64 {
            return Err(Error::InvalidConfig(format!(
                "{input}: {in_channels} channels is outside 1..=64"
            )));
        }
        let ch = out.count();
        let (resampler, trim) = if rate == SAMPLE_RATE {
            (None, 0)
        } else {
            let rs = Fft::<f32>::new(
                rate as usize,
                SAMPLE_RATE as usize,
                CHUNK,
                1,
                ch,
                FixedSync::Input,
            )
            .map_err(|e| Error::Resample {
                input: input.to_string(),
                rate,
                reason: e.to_string(),
            })?;
            let trim = rs.output_delay();
            (Some(rs), trim)
        };
        let out_max = resampler.as_ref().map_or(0, |r| r.output_frames_max());
        Ok(Conformer {
            input: input.to_string(),
            rate,
            in_channels,
            out,
            resampler,
            rs_in: Vec::with_capacity(2 * CHUNK * ch),
            rs_out: vec![0.0; out_max * ch],
            fifo: Vec::with_capacity(4 * FRAME_SAMPLES * ch),
            fifo_pos: 0,
            trim,
            in_frames: 0,
            out_frames: 0,
            finished: false,
        })
    }

    /// Interleaved input samples; a trailing partial frame (fewer samples than channels) is
    /// ignored, the readers never produce one.
    pub(crate) fn push(&mut self, samples: &[i16]) -> Result<()> {
        let frames = samples.chunks_exact(self.in_channels);
        self.in_frames += frames.len() as u64;
        let direct = self.resampler.is_none();
        let out_ch = self.out.count();
        if direct && self.in_channels == out_ch {
            // Already at 48 kHz in the call's layout (the usual raw or WAV file): one copy, not
            // a branch per sample (that loop was 3 % of a playing call's CPU).
            self.fifo
                .extend_from_slice(&samples[..samples.len() - frames.remainder().len()]);
            self.out_frames = self.in_frames;
            return Ok(());
        }
        for f in frames {
            let (l, r) = match (self.in_channels, out_ch) {
                (1, _) => (f[0] as i32, f[0] as i32),
                (_, 2) => (f[0] as i32, f[1] as i32),
                (n, _) => {
                    let avg = f.iter().map(|&s| s as i32).sum::<i32>() / n as i32;
                    (avg, avg)
                }
            };
            if direct {
                self.fifo.push(l as i16);
                if out_ch == 2 {
                    self.fifo.push(r as i16);
                }
            } else {
                self.rs_in.push(l as f32 / 32768.0);
                if out_ch == 2 {
                    self.rs_in.push(r as f32 / 32768.0);
                }
            }
        }
        if direct {
            self.out_frames = self.in_frames;
            return Ok(());
        }
        while self.rs_in.len() / out_ch >= CHUNK {
            self.run_resampler(None)?;
        }
        Ok(())
    }

    fn run_resampler(&mut self, partial: Option<usize>) -> Result<()> {
        let ch = self.out.count();
        let Some(rs) = self.resampler.as_mut() else {
            return Ok(());
        };
        let map = |e: String| Error::Resample {
            input: self.input.clone(),
            rate: self.rate,
            reason: e,
        };
        let frames_in = self.rs_in.len() / ch;
        let input = InterleavedSlice::new(&self.rs_in[..frames_in * ch], ch, frames_in)
            .map_err(|e| map(e.to_string()))?;
        let out_frames = self.rs_out.len() / ch;
        let mut output = InterleavedSlice::new_mut(&mut self.rs_out[..], ch, out_frames)
            .map_err(|e| map(e.to_string()))?;
        let indexing = partial.map(|n| Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len: Some(n),
            active_channels_mask: None,
        });
        let (used, produced) = rs
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| map(e.to_string()))?;
        let used = used.min(frames_in);
        self.rs_in.drain(..used * ch);
        let skip = self.trim.min(produced);
        self.trim -= skip;
        for &v in &self.rs_out[skip * ch..produced * ch] {
            self.fifo
                .push((v * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
        }
        self.out_frames += (produced - skip) as u64;
        Ok(())
    }

    /// The input has ended: flushes the resampler so the last samples come out, and cuts the
    /// output to exactly `input length × 48000 / rate`.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if self.resampler.is_none() {
            return Ok(());
        }
        let ch = self.out.count();
        let expected = (self.in_frames * SAMPLE_RATE as u64).div_ceil(self.rate as u64);
        let left = self.rs_in.len() / ch;
        if left > 0 {
            self.run_resampler(Some(left))?;
        }
        // Pump silence until the delayed tail is out; bounded in case rubato misbehaves.
        let mut guard = 0;
        while self.out_frames < expected && guard < 64 {
            self.run_resampler(Some(0))?;
            guard += 1;
        }
        if self.out_frames > expected {
            let excess = (self.out_frames - expected) as usize * ch;
            let keep = self.fifo.len().saturating_sub(excess).max(self.fifo_pos);
            self.fifo.truncate(keep);
            self.out_frames = expected;
        }
        Ok(())
    }

    /// Whether a whole 20 ms frame is ready.
    pub(crate) fn has_frame(&self) -> bool {
        self.fifo.len() - self.fifo_pos >= self.out.frame_len()
    }

    /// The next 20 ms frame, if a whole one is ready.
    pub(crate) fn frame(&mut self) -> Option<&[i16]> {
        let n = self.out.frame_len();
        if !self.has_frame() {
            return None;
        }
        self.compact();
        let start = self.fifo_pos;
        self.fifo_pos += n;
        Some(&self.fifo[start..start + n])
    }

    /// Pads a trailing partial frame with silence so that it can be taken as a whole one.
    pub(crate) fn pad_to_frame(&mut self) {
        let n = self.out.frame_len();
        let left = self.fifo.len() - self.fifo_pos;
        if !left.is_multiple_of(n) {
            self.fifo.resize(self.fifo.len() + n - left % n, 0);
        }
    }

    /// Drops consumed samples once they dominate the buffer (amortised; keeps it small).
    fn compact(&mut self) {
        if self.fifo_pos > 0 && self.fifo_pos >= self.fifo.len() / 2 {
            self.fifo.drain(..self.fifo_pos);
            self.fifo_pos = 0;
        }
    }

    /// Frames (per channel) ready but not taken yet.
    pub(crate) fn buffered_frames(&self) -> usize {
        (self.fifo.len() - self.fifo_pos) / self.out.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut Conformer) -> Vec<i16> {
        let mut out = vec![];
        while let Some(f) = c.frame() {
            out.extend_from_slice(f);
        }
        c.finish().unwrap();
        c.pad_to_frame();
        while let Some(f) = c.frame() {
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn passes_48k_through_and_maps_channels() {
        let mut c = Conformer::new("t", 48000, 2, Channels::Mono).unwrap();
        let st: Vec<i16> = (0..1000)
            .flat_map(|i| [i as i16, -(i as i16) + 100])
            .collect();
        c.push(&st).unwrap();
        let out = drain(&mut c);
        assert_eq!(out.len(), 1920, "1000 frames pad to two 20 ms frames");
        assert_eq!(out[0], 50);
        assert_eq!(out[999], 50);
        assert_eq!(out[1000], 0);

        let mut c = Conformer::new("t", 48000, 1, Channels::Stereo).unwrap();
        c.push(&[7; 960]).unwrap();
        assert_eq!(c.frame().unwrap(), &[7; 1920][..]);
        assert!(c.frame().is_none());

        let mut c = Conformer::new("t", 48000, 6, Channels::Stereo).unwrap();
        let six: Vec<i16> = (0..960).flat_map(|_| [1, 2, 3, 4, 5, 6]).collect();
        c.push(&six).unwrap();
        assert_eq!(&c.frame().unwrap()[..4], &[1, 2, 1, 2]);
        let mut c = Conformer::new("t", 48000, 6, Channels::Mono).unwrap();
        c.push(&six).unwrap();
        assert_eq!(c.frame().unwrap()[0], 3);

        // The same layout is copied as it is, in pieces of any size; a dangling half frame of
        // stereo is left out, as the mapping loop leaves it.
        let mono: Vec<i16> = (0..1920).map(|i| i as i16).collect();
        let mut c = Conformer::new("t", 48000, 1, Channels::Mono).unwrap();
        c.push(&mono[..1000]).unwrap();
        c.push(&mono[1000..]).unwrap();
        assert_eq!(drain(&mut c), mono);
        let mut c = Conformer::new("t", 48000, 2, Channels::Stereo).unwrap();
        let stereo: Vec<i16> = (0..1920).flat_map(|i| [i as i16, -(i as i16)]).collect();
        c.push(&stereo[..1001]).unwrap();
        c.push(&stereo[1002..]).unwrap();
        assert_eq!(c.buffered_frames(), 1919);
        let out = drain(&mut c);
        assert_eq!(&out[..1000], &stereo[..1000]);
        assert_eq!(&out[1000..3838], &stereo[1002..]);
    }

    #[test]
    fn resampled_output_has_the_exact_length_and_no_leading_delay() {
        for rate in [8000u32, 22050, 44100, 96000] {
            let mut c = Conformer::new("t", rate, 1, Channels::Mono).unwrap();
            // One second of a step: silence for the first half, then DC.
            let input: Vec<i16> = (0..rate)
                .map(|i| if i < rate / 2 { 0 } else { 10000 })
                .collect();
            for chunk in input.chunks(333) {
                c.push(chunk).unwrap();
            }
            let out = drain(&mut c);
            assert_eq!(out.len(), 48000, "rate {rate}");
            // The step lands at 0.5 s, not shifted by the resampler's delay.
            let step = out.iter().position(|&s| s > 5000).unwrap();
            assert!(
                (23950..=24050).contains(&step),
                "rate {rate}: step at {step}"
            );
            assert!(
                (out[36000] - 10000).abs() < 100,
                "rate {rate}: {}",
                out[36000]
            );
            assert_eq!(c.buffered_frames(), 0);
        }
    }

    #[test]
    fn refuses_impossible_formats() {
        assert!(matches!(
            Conformer::new("x", 0, 1, Channels::Mono),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Conformer::new("x", 8000, 0, Channels::Mono),
            Err(Error::InvalidConfig(_))
        ));
    }
}
