//! Compressed audio files decoded in-process with symphonia: MP3, AAC (MP4/M4A and ADTS), FLAC,
//! Ogg Vorbis, ALAC (MP4) and WAV. A music bot then needs no ffmpeg process per call; ffmpeg
//! stays for what symphonia cannot read.
//!
//! The reader yields the file's own rate and channels; the source's conformer resamples to
//! 48 kHz and maps channels, as for WAV. It runs on the source's read-ahead thread.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as DecodeError;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::units::Time;

use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

/// Corrupt packets skipped in a row before the file counts as unreadable.
const MAX_BAD_PACKETS: u32 = 50;

pub(crate) struct DecodedFile {
    /// The path or URL, for messages.
    name: String,
    /// The input can go back and forth (a file; an HTTP body whose server takes ranges).
    seekable: bool,
    /// How long the track is, when the container says.
    duration: Option<Duration>,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    rate: u32,
    channels: usize,
    /// Decoded samples not handed out yet, interleaved.
    pending: Vec<i16>,
    at: usize,
    buffer: Option<SampleBuffer<i16>>,
    /// Frames still to drop after a seek that landed before its target.
    discard: u64,
    /// Packets the decoder refused (corrupt frames are skipped, as players do).
    pub(crate) skipped: u64,
}

impl DecodedFile {
    /// Opens `path` and reads enough to know its rate and channels.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::OpenInput {
            path: path.to_path_buf(),
            source,
        })?;
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        Self::from_media(path.display().to_string(), Box::new(file), hint)
    }

    /// Probes `media` (a file, an HTTP body) named `input`, with what its name or content
    /// type says of its format in `hint`.
    pub(crate) fn from_media(
        input: String,
        media: Box<dyn MediaSource>,
        hint: Hint,
    ) -> Result<Self> {
        let seekable = media.is_seekable();
        let stream = MediaSourceStream::new(media, Default::default());
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                stream,
                &FormatOptions {
                    enable_gapless: true,
                    ..FormatOptions::default()
                },
                &MetadataOptions::default(),
            )
            .map_err(|e| unsupported(&input, "this container", e))?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| Error::UnsupportedFormat {
                input: input.clone(),
                what: "a file with no audio track".into(),
            })?;
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(|e| unsupported(&input, "this codec", e))?;
        let track_id = track.id;
        let rate = track.codec_params.sample_rate.unwrap_or(0);
        let channels = track.codec_params.channels.map_or(0, |c| c.count());
        let duration = match (track.codec_params.n_frames, track.codec_params.time_base) {
            (Some(n), Some(tb)) => {
                let t = tb.calc_time(n);
                Some(Duration::from_secs(t.seconds) + Duration::from_secs_f64(t.frac))
            }
            (Some(n), None) if rate > 0 => Some(Duration::from_secs_f64(n as f64 / rate as f64)),
            _ => None,
        };
        let mut file = DecodedFile {
            name: input.clone(),
            seekable,
            duration,
            format,
            decoder,
            track: track_id,
            rate,
            channels,
            pending: Vec::new(),
            at: 0,
            buffer: None,
            discard: 0,
            skipped: 0,
        };
        // Some containers say their rate or channels only in the first frame.
        if file.rate == 0 || file.channels == 0 {
            file.decode_next()?;
        }
        if file.rate == 0 || file.channels == 0 {
            return Err(Error::UnsupportedFormat {
                input,
                what: "a track with no sample rate or channel count".into(),
            });
        }
        Ok(file)
    }

    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// Decodes the next packet of the track into `pending`. Returns false at the end.
    fn decode_next(&mut self) -> Result<bool> {
        let mut bad = 0;
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(DecodeError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(false)
                }
                // A chained stream (a new Ogg logical stream) is the end of this file's audio.
                Err(DecodeError::ResetRequired) => return Ok(false),
                Err(DecodeError::IoError(source)) => {
                    return Err(Error::ReadInput {
                        input: self.name.clone(),
                        source,
                    })
                }
                Err(e) => return Err(unsupported(&self.name, "the file", e)),
            };
            if packet.track_id() != self.track {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                Err(DecodeError::DecodeError(_)) if bad < MAX_BAD_PACKETS => {
                    bad += 1;
                    self.skipped += 1;
                    continue;
                }
                Err(e) => return Err(unsupported(&self.name, "the audio", e)),
            };
            let spec = *decoded.spec();
            if self.rate == 0 {
                self.rate = spec.rate;
            }
            if self.channels == 0 {
                self.channels = spec.channels.count();
            }
            if spec.channels.count() != self.channels || spec.rate != self.rate {
                return Err(Error::UnsupportedFormat {
                    input: self.name.clone(),
                    what: format!(
                        "a change of format mid-file ({} Hz x {} to {} Hz x {})",
                        self.rate,
                        self.channels,
                        spec.rate,
                        spec.channels.count()
                    ),
                });
            }
            let frames = decoded.capacity();
            let buffer = match &mut self.buffer {
                Some(b) if b.capacity() >= frames * self.channels => b,
                slot => slot.insert(SampleBuffer::new(frames as u64, spec)),
            };
            buffer.copy_interleaved_ref(decoded);
            self.pending.clear();
            self.pending.extend_from_slice(buffer.samples());
            self.at = 0;
            if !self.pending.is_empty() {
                return Ok(true);
            }
        }
    }
}

fn unsupported(input: &str, what: &str, e: DecodeError) -> Error {
    Error::UnsupportedFormat {
        input: input.to_owned(),
        what: format!("{what} ({e})"),
    }
}

impl PcmReader for DecodedFile {
    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
        loop {
            if self.at >= self.pending.len() && !self.decode_next()? {
                return Ok(ReadOutcome::End);
            }
            if self.discard == 0 {
                break;
            }
            let available = ((self.pending.len() - self.at) / self.channels) as u64;
            let drop = self.discard.min(available);
            self.at += drop as usize * self.channels;
            self.discard -= drop;
        }
        let n = (out.len() / self.channels * self.channels).min(self.pending.len() - self.at);
        out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(ReadOutcome::Samples(n))
    }

    fn rewind(&mut self) -> Result<()> {
        self.format
            .seek(
                SeekMode::Accurate,
                SeekTo::TimeStamp {
                    ts: 0,
                    track_id: self.track,
                },
            )
            .map_err(|e| unsupported(&self.name, "seeking in the file", e))?;
        self.decoder.reset();
        self.pending.clear();
        self.at = 0;
        self.discard = 0;
        Ok(())
    }

    fn can_seek(&self) -> bool {
        self.seekable
    }

    fn duration(&self) -> Option<Duration> {
        self.duration
    }

    fn seek(&mut self, to: std::time::Duration) -> Result<()> {
        let input = self.name.clone();
        let seeked = self
            .format
            .seek(
                SeekMode::Accurate,
                SeekTo::Time {
                    time: Time::from(to.as_secs_f64()),
                    track_id: Some(self.track),
                },
            )
            .map_err(|e| Error::CannotSeek {
                input,
                reason: format!("to {:.3} s: {e}", to.as_secs_f64()),
            })?;
        self.decoder.reset();
        self.pending.clear();
        self.at = 0;
        // The reader lands on a packet at or before the target; the rest is decoded and
        // dropped (timestamps count frames at the track's rate for these formats).
        self.discard = seeked.required_ts.saturating_sub(seeked.actual_ts);
        Ok(())
    }
}
