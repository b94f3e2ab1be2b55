//! Ogg/Opus files (RFC 7845): the `ogg` crate demuxes, this module reads the OpusHead and
//! OpusTags headers and hands the audio packets on unchanged.
//!
//! Passing packets through saves an encode per frame and keeps the file's quality. A packet
//! that does not fit the wire (over 1000 bytes, or shorter than 10 ms) is decoded instead and
//! comes out as PCM for the encoder; multichannel (surround) files are refused with a pointer
//! to the ffmpeg source. Pre-skip and output gain are for the receiver's decoder and are not
//! applied to passed-through packets.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ogg::PacketReader;

use super::Frame;
use crate::audio::codec::{fits_wire, packet_samples, Decoder, FrameDecoder};
use crate::audio::resample::Conformer;
use crate::audio::{Channels, MAX_PACKET_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, Result};

/// The identification header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusHead {
    pub version: u8,
    pub channels: u8,
    /// Samples (48 kHz) the decoder discards at the start.
    pub pre_skip: u16,
    /// The rate of the original input; informational only (Opus always decodes at 48 kHz).
    pub input_rate: u32,
    /// Q7.8 dB gain for the decoder's output.
    pub output_gain: i16,
    pub mapping_family: u8,
    /// Opus streams per packet (1 unless multichannel).
    pub streams: u8,
}

impl OpusHead {
    /// Parses an OpusHead packet; the error says what is wrong with it.
    pub fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        if !data.starts_with(b"OpusHead") {
            return Err("the first packet is not an OpusHead header (not an Opus stream)".into());
        }
        if data.len() < 19 {
            return Err(format!("OpusHead is {} bytes, shorter than 19", data.len()));
        }
        let head = OpusHead {
            version: data[8],
            channels: data[9],
            pre_skip: u16::from_le_bytes([data[10], data[11]]),
            input_rate: u32::from_le_bytes([data[12], data[13], data[14], data[15]]),
            output_gain: i16::from_le_bytes([data[16], data[17]]),
            mapping_family: data[18],
            streams: if data[18] == 0 {
                1
            } else {
                data.get(19).copied().unwrap_or(0)
            },
        };
        if head.version >> 4 != 0 {
            return Err(format!(
                "OpusHead version {} is not 0.x (RFC 7845)",
                head.version
            ));
        }
        if head.channels == 0 {
            return Err("OpusHead says 0 channels".into());
        }
        if head.mapping_family == 0 && head.channels > 2 {
            return Err(format!(
                "{} channels with channel mapping family 0",
                head.channels
            ));
        }
        if head.mapping_family != 0 && data.len() < 21 + head.channels as usize {
            return Err("OpusHead's channel mapping table is cut short".into());
        }
        Ok(head)
    }
}

/// The comment header: who encoded the file, and `KEY=value` tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpusTags {
    pub vendor: String,
    pub comments: Vec<String>,
}

impl OpusTags {
    pub fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        if !data.starts_with(b"OpusTags") {
            return Err("the second packet is not an OpusTags header".into());
        }
        let mut r = Fields { data, pos: 8 };
        let vendor = r.string("the vendor string")?;
        let count = r.u32("the comment count")? as usize;
        // Each comment takes at least 4 bytes: a larger count is a lie, not an allocation.
        if count > data.len() / 4 {
            return Err(format!(
                "OpusTags claims {count} comments in {} bytes",
                data.len()
            ));
        }
        let comments = (0..count)
            .map(|i| r.string(&format!("comment {i}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(OpusTags { vendor, comments })
    }

    /// The value of the first `KEY=value` comment with this key (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.comments.iter().find_map(|c| {
            let (k, v) = c.split_once('=')?;
            k.eq_ignore_ascii_case(key).then_some(v)
        })
    }
}

/// Reads OpusTags' little-endian length-prefixed fields without running past the packet.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Fields<'_> {
    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        let b = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| format!("OpusTags ends inside {what}"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.u32(what)? as usize;
        let text = self
            .data
            .get(self.pos..self.pos.saturating_add(len))
            .ok_or_else(|| format!("{what} in OpusTags runs past the end of the packet"))?;
        self.pos += len;
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}

pub(crate) enum Item {
    /// A frame is ready: take it with [`OggOpus::current`].
    Some,
    End,
}

enum Current {
    Opus(u32),
    Pcm,
}

pub(crate) struct OggOpus {
    path: PathBuf,
    out: Channels,
    reader: PacketReader<BufReader<File>>,
    serial: u32,
    head: OpusHead,
    tags: OpusTags,
    current: Current,
    packet: Vec<u8>,
    held: Option<(Vec<u8>, u32)>,
    decoder: Option<Decoder>,
    decoded: Vec<i16>,
    skip: usize,
    conformer: Conformer,
    frame: Vec<i16>,
    /// Packets that no decoder would accept (skipped).
    skipped: u64,
}

impl OggOpus {
    pub(crate) fn open(path: &Path, out: Channels) -> Result<Self> {
        let (reader, serial, head, tags) = open_stream(path)?;
        Ok(OggOpus {
            path: path.to_path_buf(),
            out,
            reader,
            serial,
            skip: head.pre_skip as usize,
            head,
            tags,
            current: Current::Pcm,
            packet: Vec::new(),
            held: None,
            decoder: None,
            decoded: vec![0; MAX_PACKET_SAMPLES * out.count()],
            conformer: Conformer::new(&path.display().to_string(), SAMPLE_RATE, out.count(), out)?,
            frame: vec![0; out.frame_len()],
            skipped: 0,
        })
    }

    pub(crate) fn tags(&self) -> &OpusTags {
        &self.tags
    }

    pub(crate) fn current(&self) -> Frame<'_> {
        match self.current {
            Current::Opus(samples) => Frame::Opus {
                packet: &self.packet,
                samples,
            },
            Current::Pcm => Frame::Pcm(&self.frame),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadOggOpus {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn take_pcm_frame(&mut self) -> bool {
        match self.conformer.frame() {
            Some(f) => {
                self.frame.copy_from_slice(f);
                self.current = Current::Pcm;
                true
            }
            None => false,
        }
    }

    pub(crate) fn next(&mut self) -> Result<Item> {
        loop {
            if self.take_pcm_frame() {
                return Ok(Item::Some);
            }
            if let Some((data, samples)) = self.held.take() {
                self.packet = data;
                self.current = Current::Opus(samples);
                return Ok(Item::Some);
            }
            let packet = match self.reader.read_packet() {
                Ok(Some(p)) => p,
                Ok(None) => {
                    if self.conformer.buffered_frames() > 0 {
                        self.conformer.pad_to_frame();
                        continue;
                    }
                    return Ok(Item::End);
                }
                Err(e) => return Err(self.bad(ogg_reason(e))),
            };
            if packet.data.starts_with(b"OpusHead") {
                // A chained file: the next logical stream starts with its own headers.
                self.head = OpusHead::parse(&packet.data).map_err(|r| self.bad(r))?;
                check_mapping(&self.path, &self.head)?;
                self.serial = packet.stream_serial();
                self.skip = self.head.pre_skip as usize;
                self.decoder = None;
                continue;
            }
            if packet.stream_serial() != self.serial || packet.data.starts_with(b"OpusTags") {
                continue; // another logical stream (e.g. video), or a chained stream's tags
            }
            let Some(samples) = packet_samples(&packet.data) else {
                self.skipped += 1;
                continue;
            };
            if fits_wire(&packet.data) {
                self.skip = 0; // the receiver's decoder applies pre-skip to what we pass on
                if self.conformer.buffered_frames() > 0 {
                    // Decoded audio is waiting: finish its frame first, then this packet.
                    self.conformer.pad_to_frame();
                    self.held = Some((packet.data, samples));
                    continue;
                }
                self.packet = packet.data;
                self.current = Current::Opus(samples);
                return Ok(Item::Some);
            }
            self.decode(&packet.data)?;
        }
    }

    fn decode(&mut self, packet: &[u8]) -> Result<()> {
        if self.decoder.is_none() {
            self.decoder = Some(Decoder::new(self.out)?);
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        match decoder.decode(packet, &mut self.decoded) {
            Ok(n) => {
                let skip = self.skip.min(n);
                self.skip -= skip;
                let ch = self.out.count();
                self.conformer.push(&self.decoded[skip * ch..n * ch])?;
            }
            Err(_) => self.skipped += 1,
        }
        Ok(())
    }

    /// Back to the first audio packet (looping).
    pub(crate) fn rewind(&mut self) -> Result<()> {
        let (reader, serial, head, tags) = open_stream(&self.path)?;
        self.reader = reader;
        self.serial = serial;
        self.skip = head.pre_skip as usize;
        self.head = head;
        self.tags = tags;
        self.held = None;
        self.decoder = None;
        Ok(())
    }

    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    pub(crate) fn head(&self) -> &OpusHead {
        &self.head
    }
}

fn ogg_reason(e: ogg::OggReadError) -> String {
    match e {
        ogg::OggReadError::ReadError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends in the middle of an Ogg page (truncated)".into()
        }
        ogg::OggReadError::HashMismatch(..) => "an Ogg page fails its CRC check (corrupted)".into(),
        ogg::OggReadError::NoCapturePatternFound => {
            "no Ogg page where one was expected (not an Ogg file, or corrupted)".into()
        }
        other => format!("{other}"),
    }
}

fn check_mapping(path: &Path, head: &OpusHead) -> Result<()> {
    // Family 1 with a single stream of one or two channels is ordinary Opus packets.
    if head.mapping_family == 0
        || (head.mapping_family == 1 && head.streams == 1 && head.channels <= 2)
    {
        return Ok(());
    }
    Err(Error::UnsupportedFormat {
        input: path.display().to_string(),
        what: format!(
            "Ogg/Opus with {} channels in {} streams (channel mapping family {})",
            head.channels, head.streams, head.mapping_family
        ),
    })
}

type Opened = (PacketReader<BufReader<File>>, u32, OpusHead, OpusTags);

fn open_stream(path: &Path) -> Result<Opened> {
    let bad = |reason: String| Error::BadOggOpus {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|source| Error::OpenInput {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = PacketReader::new(BufReader::new(file));
    let first = match reader.read_packet() {
        Ok(Some(p)) => p,
        Ok(None) => return Err(bad("the file is empty".into())),
        Err(e) => return Err(bad(ogg_reason(e))),
    };
    let head = OpusHead::parse(&first.data).map_err(bad)?;
    check_mapping(path, &head)?;
    let serial = first.stream_serial();
    let tags = loop {
        match reader.read_packet() {
            Ok(Some(p)) if p.stream_serial() == serial => {
                break OpusTags::parse(&p.data).map_err(bad)?
            }
            Ok(Some(_)) => continue, // a header of another multiplexed stream
            Ok(None) => return Err(bad("the file ends after its OpusHead header".into())),
            Err(e) => return Err(bad(ogg_reason(e))),
        }
    };
    Ok((reader, serial, head, tags))
}
