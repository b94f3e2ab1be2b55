//! WAV files through hound, any integer depth up to 32 bits or 32-bit float, converted to i16.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader};

use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

pub(crate) struct WavFile {
    path: PathBuf,
    reader: WavReader<BufReader<File>>,
    format: SampleFormat,
    bits: u16,
}

impl WavFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::OpenInput {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = WavReader::new(BufReader::new(file)).map_err(|e| wav_error(path, e))?;
        let spec = reader.spec();
        let supported = match spec.sample_format {
            SampleFormat::Int => (1..=32).contains(&spec.bits_per_sample),
            SampleFormat::Float => spec.bits_per_sample == 32,
        };
        if !supported {
            return Err(Error::UnsupportedFormat {
                input: path.display().to_string(),
                what: format!("{}-bit {:?} WAV", spec.bits_per_sample, spec.sample_format),
            });
        }
        if spec.sample_rate == 0 || spec.channels == 0 {
            return Err(Error::BadWav {
                path: path.to_path_buf(),
                reason: format!("{} Hz, {} channels", spec.sample_rate, spec.channels),
            });
        }
        Ok(WavFile {
            path: path.to_path_buf(),
            format: spec.sample_format,
            bits: spec.bits_per_sample,
            reader,
        })
    }

    pub(crate) fn rate(&self) -> u32 {
        self.reader.spec().sample_rate
    }

    pub(crate) fn channels(&self) -> usize {
        self.reader.spec().channels as usize
    }
}

fn wav_error(path: &Path, e: hound::Error) -> Error {
    match e {
        // An error from the operating system; hound's own short-read errors carry no errno.
        hound::Error::IoError(source) if source.raw_os_error().is_some() => Error::ReadInput {
            input: path.display().to_string(),
            source,
        },
        hound::Error::IoError(source) => Error::BadWav {
            path: path.to_path_buf(),
            reason: format!("the file ends inside its header ({source})"),
        },
        hound::Error::Unsupported => Error::UnsupportedFormat {
            input: path.display().to_string(),
            what: "this WAV encoding (compressed or exotic)".into(),
        },
        other => Error::BadWav {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

impl PcmReader for WavFile {
    fn duration(&self) -> Option<std::time::Duration> {
        let rate = u64::from(self.reader.spec().sample_rate);
        let frames = u64::from(self.reader.duration());
        Some(std::time::Duration::from_micros(frames * 1_000_000 / rate))
    }

    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
        let mut n = 0;
        // A data chunk cut short (a recording that was never finalised) plays up to the cut:
        // the next read finds nothing and reports the end.
        macro_rules! fill {
            ($ty:ty, $conv:expr) => {
                for s in self.reader.samples::<$ty>().take(out.len()) {
                    match s {
                        Ok(v) => {
                            out[n] = $conv(v);
                            n += 1;
                        }
                        Err(hound::Error::IoError(e)) if e.raw_os_error().is_none() => break,
                        Err(e) => return Err(wav_error(&self.path, e)),
                    }
                }
            };
        }
        let bits = self.bits as u32;
        match self.format {
            SampleFormat::Float => {
                fill!(f32, |v: f32| (v * 32768.0).round().clamp(-32768.0, 32767.0)
                    as i16)
            }
            SampleFormat::Int if bits <= 16 => {
                fill!(i16, |v: i16| ((v as i32) << (16 - bits)) as i16)
            }
            SampleFormat::Int => fill!(i32, |v: i32| (v >> (bits - 16)) as i16),
        }
        let channels = self.channels();
        // Only whole frames: a torn frame at a truncation point is dropped.
        let whole = n / channels * channels;
        if whole == 0 {
            return Ok(ReadOutcome::End);
        }
        Ok(ReadOutcome::Samples(whole))
    }

    fn rewind(&mut self) -> Result<()> {
        self.reader.seek(0).map_err(|source| Error::ReadInput {
            input: self.path.display().to_string(),
            source,
        })
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, to: std::time::Duration) -> Result<()> {
        let frame = (to.as_secs_f64() * f64::from(self.rate())) as u64;
        let frame = frame.min(u64::from(self.reader.duration())) as u32;
        self.reader.seek(frame).map_err(|source| Error::ReadInput {
            input: self.path.display().to_string(),
            source,
        })
    }
}
