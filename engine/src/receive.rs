//! The receive side of one call: every decrypted RTP packet goes to its SSRC's jitter buffer;
//! every 20 ms each buffer gives a frame, which goes to the participant sinks (one file per
//! speaker, the application) and into the mix; every 100 ms each speaker's level is reported.
//!
//! Sans-IO like the rest of the audio pipeline: the driver calls [`Receivers::insert`] with the
//! packet's arrival time and [`Receivers::tick`] on its 20 ms clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use groupcall_media::{PayloadKind, RtpPacket};

use crate::audio::{
    Channels, Decoder, FrameKind, JitterBuffer, JitterConfig, JitterStats, LevelMeter, MixRecorder,
    ParticipantSinks, SpeakingLevel,
};
use crate::error::{Error, Result};

/// Senders decoded at once. A voice chat has a handful of speakers at a time and the server
/// forwards only declared sources; this bounds what a broken or hostile server can make us
/// keep (each sender holds a decoder and a jitter buffer).
pub(crate) const MAX_SPEAKERS: usize = 1024;

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
    /// The speaker device failed: it was dropped.
    #[cfg(feature = "devices")]
    pub device_failures: Vec<crate::audio::device::DeviceFailure>,
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
    /// Packets of new senders refused because [`MAX_SPEAKERS`] were kept.
    pub refused: u64,
    /// Wall-clock time of the mix file's first sample (the file is continuous from there).
    pub mix_started_at: Option<SystemTime>,
    /// The speaker device and the mixer that feeds it.
    #[cfg(feature = "devices")]
    speaker: Option<(crate::audio::device::SpeakerOut, crate::audio::Mixer)>,
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
            refused: 0,
            mix_started_at: None,
            #[cfg(feature = "devices")]
            speaker: None,
        }
    }

    /// Plays the mix of everyone on a speaker device from the next tick (or stops).
    #[cfg(feature = "devices")]
    pub fn set_speaker(
        &mut self,
        speaker: Option<crate::audio::device::SpeakerOut>,
    ) -> Option<crate::audio::device::SpeakerOut> {
        if speaker.is_some() {
            self.decode_from_now();
        }
        // A new speaker takes over the old one's echo reference (the microphone's canceller
        // goes on hearing what is played).
        let mut speaker = speaker;
        let echo = self.speaker.as_mut().and_then(|(s, _)| s.echo.take());
        if let Some(new) = speaker.as_mut().filter(|s| s.echo.is_none()) {
            new.echo = echo;
        }
        let mixer = crate::audio::Mixer::new(self.channels);
        std::mem::replace(&mut self.speaker, speaker.map(|s| (s, mixer))).map(|(s, _)| s)
    }

    /// Speakers heard before had nothing to decode for: they are decoded from now on.
    fn decode_from_now(&mut self) {
        if !self.decode {
            self.decode = true;
            for s in self.speakers.values_mut().filter(|s| s.jitter.is_none()) {
                if let Ok(d) = Decoder::new(self.channels) {
                    s.jitter = Some(JitterBuffer::new(self.jitter_config, d));
                }
            }
        }
    }

    /// Starts recording mid-call: a file per speaker in `dir` and/or the mix into `mix`
    /// (created by the caller, off the call's task). Each starts with the next tick; what
    /// is already recorded is an error, and nothing is started then.
    pub fn start_recording(
        &mut self,
        dir: Option<(PathBuf, crate::audio::FileFormat)>,
        mix: Option<MixRecorder>,
    ) -> Result<()> {
        if let (Some(_), Some(current)) = (&mix, &self.mix) {
            return Err(Error::InvalidConfig(format!(
                "the call already records the mix into {}",
                current.path().display()
            )));
        }
        if let Some((dir, format)) = dir {
            self.sinks.start_files(dir, format)?;
            if let Some(m) = mix.as_ref().or(self.mix.as_ref()) {
                self.sinks.share_writer(m.writer());
            }
        }
        if mix.is_some() {
            self.mix = mix;
        }
        self.decode_from_now();
        Ok(())
    }

    /// Hands what the speaker plays to a (new) microphone's echo canceller.
    #[cfg(feature = "devices")]
    pub fn set_echo(&mut self, echo: Option<rtrb::Producer<i16>>) {
        if let Some((s, _)) = self.speaker.as_mut() {
            s.echo = echo;
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
        if self.speakers.len() >= MAX_SPEAKERS && !self.speakers.contains_key(&packet.ssrc) {
            self.refused += 1;
            return Ok(false);
        }
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
            // Pulled every tick, silent or not: the buffer's clock keeps running through the
            // speaker's pauses (so speech after one plays on time, none of it skipped), and
            // their file keeps the call's timeline.
            let pulled = jitter.pull(now);
            let (kind, pcm) = (pulled.kind, pulled.pcm);
            if let Err(e) = self.sinks.write(ssrc, kind, pcm) {
                self.sink_errors += 1;
                if !self.sink_failed {
                    self.sink_failed = true;
                    report.errors.push(e);
                }
            }
            if let Some(mix) = self.mix.as_mut().filter(|_| kind != FrameKind::Silence) {
                // Adding can only fail on a frame of the wrong size, which the jitter buffer
                // never produces.
                let _ = mix.add(pcm, gain);
            }
            #[cfg(feature = "devices")]
            if let Some((_, m)) = self.speaker.as_mut().filter(|_| kind != FrameKind::Silence) {
                let _ = m.add(pcm, gain);
            }
        }
        // The speaker gets a frame every tick, silent or not: a device that is not fed
        // underruns.
        #[cfg(feature = "devices")]
        if let Some((out, m)) = self.speaker.as_mut() {
            out.play(m.finish(), self.channels.count());
            if let Some(f) = out.failure() {
                report.device_failures.push(f);
                self.speaker = None;
            }
        }
        if let Some(mix) = self.mix.as_mut() {
            self.mix_started_at.get_or_insert_with(SystemTime::now);
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

    /// Senders heard from for the last time more than `timeout` ago: the driver forgets them
    /// even if no roster update said they left.
    pub fn idle_since(&self, now: Instant, timeout: Duration) -> Vec<u32> {
        self.speakers
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_packet) > timeout)
            .map(|(&ssrc, _)| ssrc)
            .collect()
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

    /// What `ssrc`'s jitter buffer did, when its audio is decoded.
    pub fn jitter_stats(&self, ssrc: u32) -> Option<JitterStats> {
        self.speakers.get(&ssrc)?.jitter.as_ref().map(|j| j.stats())
    }

    /// How many senders are kept now.
    pub fn len(&self) -> usize {
        self.speakers.len()
    }

    /// Whether the 20 ms tick has work here: senders to play out or meter, a mix file whose
    /// timeline goes on through silence, a speaker device that needs its silence.
    pub fn needs_tick(&self) -> bool {
        #[cfg(feature = "devices")]
        if self.speaker.is_some() {
            return true;
        }
        !self.speakers.is_empty() || self.mix.is_some()
    }

    /// The owner of `ssrc` left (or went silent for good): its buffer goes, its file is closed.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{Encoder, EncoderConfig};
    use bytes::Bytes;

    fn opus_packet(encoder: &mut Encoder, ssrc: u32, seq: u16) -> RtpPacket {
        let pcm: Vec<i16> = (0..crate::audio::FRAME_SAMPLES)
            .map(|i| ((i as f32 * 0.13).sin() * 8000.0) as i16)
            .collect();
        let payload = Bytes::copy_from_slice(encoder.encode(&pcm).unwrap());
        RtpPacket {
            ssrc,
            sequence: seq,
            timestamp: u32::from(seq) * 960,
            payload_type: 111,
            kind: PayloadKind::Opus,
            marker: false,
            audio_level: None,
            abs_send_time: None,
            transport_seq: None,
            raw: payload.clone(),
            payload,
        }
    }

    /// 200 senders appear, speak for a second and go silent, and no roster update ever says
    /// they left: after the timeout every one of them is reported idle, and removing them
    /// frees their decoders, buffers and files.
    #[test]
    fn two_hundred_silent_senders_are_found_idle_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = ParticipantSinks::new(Channels::Mono, Duration::from_millis(0))
            .with_files(dir.path(), crate::audio::FileFormat::Wav);
        let mut r = Receivers::new(Channels::Mono, JitterConfig::default(), sinks, None);
        let mut encoder = Encoder::new(&EncoderConfig::default()).unwrap();
        let t0 = Instant::now();
        for step in 0..50u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(step));
            for ssrc in 1..=200u32 {
                r.insert(now, &opus_packet(&mut encoder, ssrc, step))
                    .unwrap();
            }
            r.tick(now, 1.0);
        }
        assert_eq!(r.len(), 200);
        let timeout = Duration::from_secs(60);
        let last = t0 + Duration::from_millis(20 * 49);
        assert!(r.idle_since(last + timeout, timeout).is_empty(), "not yet");
        let idle = r.idle_since(last + timeout + Duration::from_millis(1), timeout);
        assert_eq!(idle.len(), 200);
        for ssrc in idle {
            r.remove(ssrc).unwrap();
        }
        assert_eq!(r.len(), 0, "all state freed");
        assert_eq!(r.recordings().len(), 200, "their files are still listed");
        r.finish().unwrap();
    }

    /// A speaker talks for 1 s, pauses 2 s (nothing sent, as with DTX), talks for 1 s more.
    /// Returns the per-speaker file and the mix, as samples, with `trim` applied to the file.
    fn talk_pause_talk(trim: Option<Duration>) -> (Vec<i16>, Vec<i16>) {
        let dir = tempfile::tempdir().unwrap();
        let mut sinks = ParticipantSinks::new(Channels::Mono, Duration::from_millis(0))
            .with_files(dir.path(), crate::audio::FileFormat::Wav);
        if let Some(keep) = trim {
            sinks = sinks.trim_silence(keep);
        }
        let mix_path = dir.path().join("mix.wav");
        let mix =
            MixRecorder::create(&mix_path, crate::audio::FileFormat::Wav, Channels::Mono).unwrap();
        let mut r = Receivers::new(Channels::Mono, JitterConfig::default(), sinks, Some(mix));
        let mut encoder = Encoder::new(&EncoderConfig::default()).unwrap();
        let t0 = Instant::now();
        let mut seq = 0u16;
        for tick in 0..250u32 {
            let now = t0 + Duration::from_millis(20 * u64::from(tick));
            if tick < 50 || (150..200).contains(&tick) {
                let mut p = opus_packet(&mut encoder, 7, seq);
                p.timestamp = tick * 960; // the RTP clock runs through the pause
                seq += 1;
                r.insert(now, &p).unwrap();
            }
            r.tick(now, 1.0);
        }
        let file = r.recordings()[0].1.clone();
        r.finish().unwrap();
        let read = |p: &Path| -> Vec<i16> {
            hound::WavReader::open(p)
                .unwrap()
                .into_samples::<i16>()
                .map(|s| s.unwrap())
                .collect()
        };
        (read(&file), read(&mix_path))
    }

    /// Index of the first 20 ms block at or after `from` that holds sound.
    fn onset(pcm: &[i16], from: usize) -> usize {
        pcm.chunks(960)
            .enumerate()
            .skip(from)
            .find(|(_, b)| b.iter().any(|&s| s.unsigned_abs() > 500))
            .map(|(i, _)| i)
            .expect("sound")
    }

    fn sounding(pcm: &[i16]) -> usize {
        pcm.chunks(960)
            .filter(|b| b.iter().any(|&s| s.unsigned_abs() > 500))
            .count()
    }

    /// The speaker's file keeps the pause, so the second sentence starts at the same place as
    /// in the mix (3 s after the first); and none of the second sentence is skipped.
    #[test]
    fn a_speakers_file_keeps_the_timeline_of_the_mix() {
        let (file, mix) = talk_pause_talk(None);
        let (first_file, first_mix) = (onset(&file, 0), onset(&mix, 0));
        let second_file = onset(&file, first_file + 70);
        let second_mix = onset(&mix, first_mix + 70);
        assert_eq!(second_file - first_file, 150, "pause kept in the file");
        assert_eq!(second_mix - first_mix, 150, "pause kept in the mix");
        assert_eq!(file.len() / 960 - first_file, mix.len() / 960 - first_mix);
        // Both sentences whole, each followed by up to 200 ms of concealment (the tone stops
        // dead, with no silence before it, so the buffer first takes it for a loss).
        let heard = sounding(&file);
        assert!((100..=122).contains(&heard), "{heard} blocks of sound");
    }

    #[test]
    fn trimmed_files_leave_long_silences_out() {
        let (file, _) = talk_pause_talk(Some(Duration::from_millis(500)));
        let first = onset(&file, 0);
        let second = onset(&file, first + 70);
        // 50 blocks of speech, 10 of concealment, then 25 silent blocks kept of the pause.
        assert!((83..=87).contains(&(second - first)), "{}", second - first);
        assert!((100..=122).contains(&sounding(&file)));
    }

    #[test]
    fn new_senders_past_the_bound_are_refused_and_counted() {
        let sinks = ParticipantSinks::new(Channels::Mono, Duration::from_millis(0));
        let mut r = Receivers::new(Channels::Mono, JitterConfig::default(), sinks, None);
        let mut encoder = Encoder::new(&EncoderConfig::default()).unwrap();
        let now = Instant::now();
        for ssrc in 0..(MAX_SPEAKERS as u32 + 5) {
            r.insert(now, &opus_packet(&mut encoder, ssrc, 0)).unwrap();
        }
        assert_eq!(r.len(), MAX_SPEAKERS);
        assert_eq!(r.refused, 5);
    }
}
