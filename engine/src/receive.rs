//! The receive side of one call: every decrypted RTP packet goes to its SSRC's jitter buffer;
//! every 20 ms each buffer gives a frame, which goes to the participant sinks (one file per
//! speaker, the application) and into the mix; every 100 ms each speaker's level is reported.
//!
//! Sans-IO like the rest of the audio pipeline: the driver calls [`Receivers::insert`] with the
//! packet's arrival time and [`Receivers::tick`] on its 20 ms clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use groupcall_media::{PayloadKind, RtpPacket};

use crate::audio::{
    Channels, Decoder, FrameKind, JitterBuffer, JitterConfig, LevelMeter, MixRecorder,
    ParticipantSinks, SpeakingLevel,
};
use crate::error::{Error, Result};

/// A speaker that sent nothing for this long stops being pulled (its file pauses) until it
/// speaks again; the roster removes it for good when it leaves.
const IDLE_AFTER: Duration = Duration::from_secs(1);

struct Speaker {
    /// `None` when nothing takes the audio (no files, no mix, no application sink): packets
    /// are then neither buffered nor decoded, only their levels read.
    jitter: Option<JitterBuffer<Decoder>>,
    level: LevelMeter,
    last_packet: Instant,
}

/// What one tick produced for the driver to report.
#[derive(Debug, Default)]
pub(crate) struct TickReport {
    /// Sink failures (disk full, read-only directory, the application's queue full). Each is
    /// reported once per kind of failure, never silently dropped.
    pub errors: Vec<Error>,
}

/// Every speaker of one call, and where their audio goes.
pub(crate) struct Receivers {
    channels: Channels,
    jitter_config: JitterConfig,
    /// Whether anything consumes decoded audio; without a consumer, decoding is skipped.
    decode: bool,
    speakers: HashMap<u32, Speaker>,
    sinks: ParticipantSinks,
    mix: Option<MixRecorder>,
    /// A failing sink keeps failing every 20 ms: only the first failure of each sink is
    /// reported, the rest are counted.
    sink_failed: bool,
    mix_failed: bool,
    /// Frames a sink failed to take (each failure after the first is only counted).
    pub sink_errors: u64,
    /// Recordings of speakers who left, closed already.
    closed: Vec<(u32, PathBuf)>,
}

impl Receivers {
    pub fn new(
        channels: Channels,
        jitter_config: JitterConfig,
        sinks: ParticipantSinks,
        mix: Option<MixRecorder>,
    ) -> Self {
        Receivers {
            channels,
            jitter_config,
            decode: sinks.has_outputs() || mix.is_some(),
            speakers: HashMap::new(),
            sinks,
            mix,
            sink_failed: false,
            mix_failed: false,
            sink_errors: 0,
            closed: Vec::new(),
        }
    }

    /// One decrypted RTP packet. Returns true when the SSRC was heard for the first time.
    pub fn insert(&mut self, now: Instant, packet: &RtpPacket) -> Result<bool> {
        // Opus is whatever payload type the server's answer gives it; the transport looked it up.
        // Other payload types (video, RTX padding probes) are counted by the transport's
        // per-SSRC statistics; there is nothing to decode.
        if packet.kind != PayloadKind::Opus || packet.payload.is_empty() {
            return Ok(false);
        }
        let mut new = false;
        let speaker = match self.speakers.get_mut(&packet.ssrc) {
            Some(s) => s,
            None => {
                new = true;
                self.speakers.insert(
                    packet.ssrc,
                    Speaker {
                        jitter: if self.decode {
                            Some(JitterBuffer::new(
                                self.jitter_config,
                                Decoder::new(self.channels)?,
                            ))
                        } else {
                            None
                        },
                        level: LevelMeter::new(),
                        last_packet: now,
                    },
                );
                self.speakers
                    .get_mut(&packet.ssrc)
                    .expect("inserted just above")
            }
        };
        speaker.last_packet = now;
        if let Some(level) = packet.audio_level {
            speaker.level.observe_extension(level);
        }
        if let Some(jitter) = speaker.jitter.as_mut() {
            jitter.insert_rtp(now, packet);
        }
        Ok(new)
    }

    /// 20 ms of every active speaker into the sinks and the mix.
    pub fn tick(&mut self, now: Instant, gain: f32) -> TickReport {
        let mut report = TickReport::default();
        for (&ssrc, speaker) in self.speakers.iter_mut() {
            let Some(jitter) = speaker.jitter.as_mut() else {
                continue;
            };
            if now.saturating_duration_since(speaker.last_packet) > IDLE_AFTER && jitter.is_empty()
            {
                continue;
            }
            let pulled = jitter.pull(now);
            if pulled.kind == FrameKind::Silence {
                continue;
            }
            let (kind, pcm) = (pulled.kind, pulled.pcm);
            if let Err(e) = self.sinks.write(ssrc, kind, pcm) {
                self.sink_errors += 1;
                if !self.sink_failed {
                    self.sink_failed = true;
                    report.errors.push(e);
                }
            }
            if let Some(mix) = self.mix.as_mut() {
                // Adding can only fail on a frame of the wrong size, which the jitter buffer
                // never produces.
                let _ = mix.add(pcm, gain);
            }
        }
        if let Some(mix) = self.mix.as_mut() {
            if let Err(e) = mix.write_tick() {
                self.sink_errors += 1;
                if !self.mix_failed {
                    self.mix_failed = true;
                    report.errors.push(e);
                }
            }
        }
        report
    }

    /// Each speaker's level since the last call (every 100 ms).
    pub fn levels(&mut self) -> Vec<(u32, SpeakingLevel)> {
        self.speakers
            .iter_mut()
            .filter_map(|(&ssrc, s)| s.level.take().map(|l| (ssrc, l)))
            .collect()
    }

    /// The roster named the owner of `ssrc`.
    pub fn identify(&mut self, ssrc: u32, peer: i64) -> Result<()> {
        self.sinks.identify(ssrc, peer)
    }

    /// The owner of `ssrc` left: its buffer goes, its file is closed.
    pub fn remove(&mut self, ssrc: u32) -> Result<()> {
        self.speakers.remove(&ssrc);
        if let Some(path) = self.sinks.file_path(ssrc) {
            self.closed.push((ssrc, path.to_path_buf()));
        }
        self.sinks.remove(ssrc)
    }

    /// Every recording file, of speakers present and gone, by SSRC.
    pub fn recordings(&self) -> Vec<(u32, PathBuf)> {
        let mut all = self.closed.clone();
        all.extend(
            self.speakers
                .keys()
                .filter_map(|&ssrc| Some((ssrc, self.sinks.file_path(ssrc)?.to_path_buf()))),
        );
        all.sort();
        all.dedup();
        all
    }

    pub fn mix_path(&self) -> Option<&Path> {
        self.mix.as_ref().map(MixRecorder::path)
    }

    /// Closes every file; the first error is returned after all were tried.
    pub fn finish(self) -> Result<()> {
        let sinks = self.sinks.finish();
        let mix = match self.mix {
            Some(m) => m.finish(),
            None => Ok(()),
        };
        sinks.and(mix)
    }
}
