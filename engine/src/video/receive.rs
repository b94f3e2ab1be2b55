//! Every participant's video on the way in: RTP to whole frames on the call's task (with NACKs
//! for what is missing and a PLI when a frame is lost for good), and whole frames to pictures on
//! one decoder thread per call, which hands them to the application and writes the recordings.
//!
//! The server sends each receiver one layer of each video, re-stamped onto the group's first
//! SSRC (`SIM[0]`) and its RTX partner, so a participant's camera is one stream here whatever
//! layer it is on; a layer switch shows as a new keyframe of another size.
//!
//! Nothing is decoded that nothing consumes: without a sink and a recording directory, video
//! packets are counted and dropped on arrival.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use groupcall_media::transport::rtcp;
use groupcall_media::video::{
    unwrap_rtx, AssemblerConfig, AssemblerEvent, FrameAssembler, NackConfig, NackFeedback,
    NackGenerator, VideoPacket,
};
use groupcall_media::{RtpPacket, Transport, VideoCodec};
use groupcall_signaling::ParticipantVideo;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use super::codec::VideoDecoder;
use super::frame::Frame;
use super::publish::VideoKind;
use super::y4m::Y4mWriter;
use crate::error::{Error, Result};
use groupcall_signaling::PeerId;

/// Whole frames waiting for the decoder thread (about a second of one 30 fps stream). When it
/// is full a frame is dropped and the stream asks for a keyframe.
const DECODE_QUEUE: usize = 32;
/// Keyframe requests for one stream are at least this far apart (the server merges them too).
const PLI_INTERVAL: Duration = Duration::from_millis(300);
/// The most video streams followed at once (a camera and a screen per participant).
pub const MAX_STREAMS: usize = 512;
/// Recordings are written at this rate: each received picture is placed by its RTP timestamp,
/// the last one repeated over gaps, so the file plays at the pace it was sent.
pub const RECORD_FPS: u32 = 30;
/// Files one received stream may be recorded into (a new one per size change or jump).
pub const MAX_PARTS: u32 = 100;
/// A timestamp jump larger than this starts the recording's timeline again rather than filling
/// the gap with copies.
const MAX_GAP: Duration = Duration::from_secs(5);

/// One decoded picture of a participant's camera or screen.
#[derive(Clone, Debug)]
pub struct ReceivedVideo {
    /// The participant's audio SSRC, as its audio frames and files are keyed.
    pub source: u32,
    pub peer: Option<PeerId>,
    pub kind: VideoKind,
    /// The stream's endpoint id, as `ReceiverVideoConstraints` name it.
    pub endpoint: String,
    /// 90 kHz, the sender's clock.
    pub rtp_timestamp: u32,
    pub frame: Frame,
}

/// How the application takes decoded video.
pub enum VideoSink {
    /// A bounded queue; the engine never waits: a full queue drops the picture (counted).
    Channel(SyncSender<ReceivedVideo>),
    /// Called on the call's decoder thread: must return quickly.
    Callback(Box<dyn FnMut(ReceivedVideo) + Send>),
}

impl std::fmt::Debug for VideoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VideoSink::Channel(_) => "VideoSink::Channel",
            VideoSink::Callback(_) => "VideoSink::Callback",
        })
    }
}

impl VideoSink {
    /// A queue of `capacity` pictures and its receiving end.
    pub fn channel(capacity: usize) -> (Self, Receiver<ReceivedVideo>) {
        let (tx, rx) = sync_channel(capacity.max(1));
        (VideoSink::Channel(tx), rx)
    }

    pub fn callback(f: impl FnMut(ReceivedVideo) + Send + 'static) -> Self {
        VideoSink::Callback(Box::new(f))
    }
}

/// Counters of received video, for [`crate::CallStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoReceiveStats {
    pub streams: usize,
    pub packets: u64,
    /// Retransmissions (RTX) among them.
    pub rtx_packets: u64,
    /// Video packets dropped on arrival because nothing consumes video.
    pub ignored: u64,
    pub frames: u64,
    pub frames_dropped: u64,
    pub nacks_sent: u64,
    pub keyframe_requests: u64,
    pub decoded: u64,
    pub decode_errors: u64,
    /// Pictures the application's queue had no room for, and frames the decoder had no room for.
    pub sink_dropped: u64,
    pub decode_queue_full: u64,
    pub recorded: u64,
}

struct Stream {
    owner: u32,
    kind: VideoKind,
    endpoint: Arc<str>,
    nack: NackGenerator,
    assembler: Option<(VideoCodec, FrameAssembler)>,
    /// Set by the decoder thread when it cannot decode: ask for a keyframe.
    needs_keyframe: Arc<AtomicBool>,
    last_pli: Option<Instant>,
    /// Frames after a loss are skipped until the next keyframe.
    skipping: bool,
}

/// Every received video stream of one call.
pub(crate) struct VideoReceivers {
    streams: HashMap<u32, Stream>,
    /// RTX SSRC to its stream's SSRC.
    rtx: HashMap<u32, u32>,
    /// A participant's streams by (owner, kind), to replace them when the roster changes.
    declared: HashMap<(u32, VideoKind), (u32, u32)>,
    decoder: Option<DecodeThread>,
    stats: VideoReceiveStats,
    /// SSRCs of streams dropped since the driver last asked, for the transport to forget.
    forgotten: Vec<u32>,
    /// Streams whose close the decoder thread's full queue refused, to send again.
    closing: Vec<Key>,
}

impl VideoReceivers {
    /// Receivers that decode for `sink` and record into `record_dir`; with neither, video is
    /// ignored.
    pub(crate) fn new(sink: Option<VideoSink>, record_dir: Option<PathBuf>) -> Result<Self> {
        let decoder = if sink.is_some() || record_dir.is_some() {
            Some(DecodeThread::start(sink, record_dir)?)
        } else {
            None
        };
        Ok(VideoReceivers {
            streams: HashMap::new(),
            rtx: HashMap::new(),
            declared: HashMap::new(),
            decoder,
            stats: VideoReceiveStats::default(),
            forgotten: Vec::new(),
            closing: Vec::new(),
        })
    }

    /// The SSRCs of the streams dropped since the last call (their statistics can go).
    pub(crate) fn take_forgotten(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.forgotten)
    }

    /// Whether `ssrc` is a declared video stream or its RTX (not a speaker).
    pub(crate) fn is_video_ssrc(&self, ssrc: u32) -> bool {
        self.streams.contains_key(&ssrc) || self.rtx.contains_key(&ssrc)
    }

    pub(crate) fn is_consuming(&self) -> bool {
        self.decoder.is_some()
    }

    /// What the roster says `owner` publishes as `kind` (`None`: nothing, or stopped).
    /// Returns whether that changed.
    pub(crate) fn declare(
        &mut self,
        own_ssrc: u32,
        owner: u32,
        kind: VideoKind,
        video: Option<&ParticipantVideo>,
    ) -> bool {
        let wanted = video.and_then(|v| {
            let primary = v
                .source_groups
                .iter()
                .find(|g| g.semantics == "SIM")
                .and_then(|g| g.sources.first().copied())
                .or_else(|| {
                    v.source_groups
                        .iter()
                        .find(|g| g.semantics == "FID")
                        .and_then(|g| g.sources.first().copied())
                })?;
            let rtx = v
                .source_groups
                .iter()
                .find(|g| g.semantics == "FID" && g.sources.first() == Some(&primary))
                .and_then(|g| g.sources.get(1).copied())
                .unwrap_or(0);
            Some((primary, rtx, v.endpoint.clone()))
        });
        let key = (owner, kind);
        let old = self.declared.get(&key).copied();
        if old == wanted.as_ref().map(|(p, r, _)| (*p, *r)) {
            return false;
        }
        if let Some((p, r)) = old {
            self.drop_stream(key, p, r);
        }
        let Some((primary, rtx, endpoint)) = wanted else {
            return old.is_some();
        };
        if self.streams.len() >= MAX_STREAMS || self.streams.contains_key(&primary) {
            return false;
        }
        self.declared.insert(key, (primary, rtx));
        if rtx != 0 {
            self.rtx.insert(rtx, primary);
        }
        self.streams.insert(
            primary,
            Stream {
                owner,
                kind,
                endpoint: endpoint.into(),
                nack: NackGenerator::new(own_ssrc, primary, NackConfig::default()),
                assembler: None,
                needs_keyframe: Arc::new(AtomicBool::new(false)),
                last_pli: None,
                skipping: false,
            },
        );
        self.stats.streams = self.streams.len();
        true
    }

    /// Forgets every stream of `owner` (it left).
    pub(crate) fn forget(&mut self, owner: u32) {
        for kind in [VideoKind::Camera, VideoKind::Screen] {
            if let Some((p, r)) = self.declared.get(&(owner, kind)).copied() {
                self.drop_stream((owner, kind), p, r);
            }
        }
    }

    fn drop_stream(&mut self, key: (u32, VideoKind), primary: u32, rtx: u32) {
        self.declared.remove(&key);
        self.streams.remove(&primary);
        self.rtx.remove(&rtx);
        if self.forgotten.len() < 2 * MAX_STREAMS {
            self.forgotten.extend([primary, rtx]);
        }
        if let Some(d) = &self.decoder {
            if !d.close(key) && self.closing.len() < MAX_STREAMS {
                self.closing.push(key);
            }
        }
        self.stats.streams = self.streams.len();
    }

    /// Takes a received video packet. `false` when it belongs to no declared stream.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        packet: &RtpPacket,
        peer: impl Fn(u32) -> Option<PeerId>,
    ) -> bool {
        let (primary, is_rtx) = match self.rtx.get(&packet.ssrc) {
            Some(&p) => (p, true),
            None => (packet.ssrc, false),
        };
        let Some(stream) = self.streams.get_mut(&primary) else {
            return false;
        };
        let Some(decoder) = &self.decoder else {
            self.stats.ignored += 1;
            return true;
        };
        let Some(codec) = VideoCodec::from_payload_type(packet.payload_type) else {
            return true;
        };
        let (sequence, payload) = if is_rtx {
            let Some((seq, payload)) = unwrap_rtx(&packet.payload) else {
                return true;
            };
            if payload.is_empty() {
                // Padding on the RTX stream (bandwidth probing): nothing to assemble.
                return true;
            }
            self.stats.rtx_packets += 1;
            (seq, payload)
        } else {
            (packet.sequence, packet.payload.clone())
        };
        self.stats.packets += 1;
        stream.nack.on_packet(now, sequence);
        let assembler = match &mut stream.assembler {
            Some((c, a)) if *c == codec => a,
            slot => {
                // A new codec (or the first packet): a new frame line.
                &mut slot
                    .insert((
                        codec,
                        FrameAssembler::new(codec, AssemblerConfig::default()),
                    ))
                    .1
            }
        };
        assembler.push(
            now,
            VideoPacket {
                sequence,
                timestamp: packet.timestamp,
                marker: packet.marker,
                payload,
            },
        );
        let peer = peer(stream.owner);
        drain(stream, decoder, &mut self.stats, codec, peer);
        true
    }

    /// Sends the NACKs and keyframe requests that are due, and moves the assemblers' clocks.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        own_ssrc: u32,
        transport: &mut Transport,
        peer: impl Fn(u32) -> Option<PeerId>,
    ) {
        let Some(decoder) = &self.decoder else {
            return;
        };
        self.closing.retain(|&key| !decoder.close(key));
        for (&ssrc, stream) in self.streams.iter_mut() {
            if let Some((codec, a)) = &mut stream.assembler {
                let codec = *codec;
                if a.poll_timeout().is_some_and(|t| t <= now) {
                    a.handle_timeout(now);
                    let peer = peer(stream.owner);
                    drain(stream, decoder, &mut self.stats, codec, peer);
                }
            }
            while let Some(fb) = stream.nack.poll(now) {
                match fb {
                    NackFeedback::Nack(n) => {
                        if transport.send_rtcp(&[Box::new(n)]).is_ok() {
                            self.stats.nacks_sent += 1;
                        }
                    }
                    NackFeedback::KeyframeRequest => {
                        stream.needs_keyframe.store(true, Ordering::Relaxed)
                    }
                }
            }
            if stream.needs_keyframe.load(Ordering::Relaxed)
                && stream
                    .last_pli
                    .is_none_or(|t| now.saturating_duration_since(t) >= PLI_INTERVAL)
            {
                stream.needs_keyframe.store(false, Ordering::Relaxed);
                stream.last_pli = Some(now);
                let pli = PictureLossIndication {
                    sender_ssrc: own_ssrc,
                    media_ssrc: ssrc,
                };
                if transport.send_rtcp(&[Box::new(pli)]).is_ok() {
                    self.stats.keyframe_requests += 1;
                }
            }
        }
    }

    /// The earliest NACK retry or assembler deadline. A keyframe request the decoder thread
    /// raised waits for the call task's next pass: the stream's next packet at the latest.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.decoder.as_ref()?;
        self.streams
            .values()
            .flat_map(|s| {
                [
                    s.nack.poll_timeout(),
                    s.assembler.as_ref().and_then(|(_, a)| a.poll_timeout()),
                ]
            })
            .flatten()
            .min()
    }

    pub(crate) fn stats(&self) -> VideoReceiveStats {
        let mut s = self.stats;
        if let Some(d) = &self.decoder {
            let c = &d.counters;
            s.decoded = c.decoded.load(Ordering::Relaxed);
            s.decode_errors = c.errors.load(Ordering::Relaxed);
            s.sink_dropped = c.sink_dropped.load(Ordering::Relaxed);
            s.recorded = c.recorded.load(Ordering::Relaxed);
        }
        s
    }

    /// The recordings made so far.
    pub(crate) fn recordings(&self) -> Vec<PathBuf> {
        self.decoder
            .as_ref()
            .map(|d| {
                d.recordings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Ends the decoder thread after the frames it holds, closing the recordings. The first
    /// write error, if any.
    pub(crate) fn finish(&mut self) -> Result<()> {
        match self.decoder.take() {
            Some(d) => d.finish(),
            None => Ok(()),
        }
    }
}

/// Hands the assembler's frames to the decoder and turns its drops into keyframe requests.
fn drain(
    stream: &mut Stream,
    decoder: &DecodeThread,
    stats: &mut VideoReceiveStats,
    codec: VideoCodec,
    peer: Option<PeerId>,
) {
    let Some((_, a)) = &mut stream.assembler else {
        return;
    };
    while let Some(e) = a.poll_event() {
        match e {
            AssemblerEvent::Frame(f) => {
                stats.frames += 1;
                if f.keyframe {
                    stream.skipping = false;
                } else if f.after_loss || stream.skipping {
                    stream.skipping = true;
                    continue;
                }
                let job = Job::Frame {
                    key: (stream.owner, stream.kind),
                    peer,
                    endpoint: stream.endpoint.clone(),
                    codec,
                    rtp_timestamp: f.timestamp,
                    data: f.data,
                    needs_keyframe: stream.needs_keyframe.clone(),
                };
                if !decoder.submit(job) {
                    stats.decode_queue_full += 1;
                    stream.skipping = true;
                    stream.needs_keyframe.store(true, Ordering::Relaxed);
                }
            }
            AssemblerEvent::Dropped { frames, .. } => {
                stats.frames_dropped += u64::from(frames.max(1));
                stream.skipping = true;
                stream.needs_keyframe.store(true, Ordering::Relaxed);
            }
        }
    }
}

type Key = (u32, VideoKind);

enum Job {
    Frame {
        key: Key,
        peer: Option<PeerId>,
        endpoint: Arc<str>,
        codec: VideoCodec,
        rtp_timestamp: u32,
        data: Bytes,
        needs_keyframe: Arc<AtomicBool>,
    },
    Close(Key),
}

#[derive(Default)]
struct Counters {
    decoded: AtomicU64,
    errors: AtomicU64,
    sink_dropped: AtomicU64,
    recorded: AtomicU64,
}

struct DecodeThread {
    jobs: SyncSender<Job>,
    counters: Arc<Counters>,
    recordings: Arc<Mutex<Vec<PathBuf>>>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl DecodeThread {
    fn start(sink: Option<VideoSink>, record_dir: Option<PathBuf>) -> Result<Self> {
        if let Some(dir) = &record_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateSink {
                path: dir.clone(),
                source,
            })?;
        }
        let (tx, rx) = sync_channel(DECODE_QUEUE);
        let counters = Arc::new(Counters::default());
        let recordings = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker {
            sink,
            dir: record_dir,
            counters: counters.clone(),
            recordings: recordings.clone(),
            streams: HashMap::new(),
            error: None,
        };
        let thread = std::thread::Builder::new()
            .name("groupcall-video-in".into())
            .spawn(move || worker.run(rx))
            .map_err(Error::RecorderStart)?;
        Ok(DecodeThread {
            jobs: tx,
            counters,
            recordings,
            thread,
        })
    }

    fn submit(&self, job: Job) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            // The thread ended on an error it reports at `finish`.
            Err(TrySendError::Disconnected(_)) => true,
        }
    }

    /// Asks the thread to close a stream's decoder and file; `false` when its queue is full
    /// (the caller tries again later: the call's task never waits for the thread).
    fn close(&self, key: Key) -> bool {
        !matches!(
            self.jobs.try_send(Job::Close(key)),
            Err(TrySendError::Full(_))
        )
    }

    fn finish(self) -> Result<()> {
        drop(self.jobs);
        self.thread.join().unwrap_or_else(|_| {
            Err(Error::RecorderStart(std::io::Error::other(
                "the video decoder thread panicked",
            )))
        })
    }
}

/// One stream on the decoder thread.
struct Decoding {
    decoder: Option<(VideoCodec, VideoDecoder)>,
    recording: Option<Recording>,
    part: u32,
}

struct Recording {
    writer: Y4mWriter<BufWriter<File>>,
    path: PathBuf,
    /// The last picture written, its RTP timestamp and its place on the file's timeline: each
    /// new picture is placed from the one before, so the 32-bit timestamp may wrap.
    last: Option<Frame>,
    last_rtp: u32,
    last_index: u64,
}

struct Worker {
    sink: Option<VideoSink>,
    dir: Option<PathBuf>,
    counters: Arc<Counters>,
    recordings: Arc<Mutex<Vec<PathBuf>>>,
    streams: HashMap<Key, Decoding>,
    error: Option<Error>,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>) -> Result<()> {
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Frame {
                    key,
                    peer,
                    endpoint,
                    codec,
                    rtp_timestamp,
                    data,
                    needs_keyframe,
                } => match self.decode(key, codec, &data) {
                    Ok(Some(frame)) => {
                        self.counters.decoded.fetch_add(1, Ordering::Relaxed);
                        self.record(key, peer, rtp_timestamp, &frame);
                        self.deliver(ReceivedVideo {
                            source: key.0,
                            peer,
                            kind: key.1,
                            endpoint: endpoint.to_string(),
                            rtp_timestamp,
                            frame,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(source = key.0, "video frame not decoded: {e}");
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        needs_keyframe.store(true, Ordering::Relaxed);
                    }
                },
                Job::Close(key) => {
                    if let Some(d) = self.streams.remove(&key) {
                        self.close(d.recording);
                    }
                }
            }
        }
        let streams: Vec<Decoding> = self.streams.drain().map(|(_, d)| d).collect();
        for d in streams {
            self.close(d.recording);
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn decode(&mut self, key: Key, codec: VideoCodec, data: &[u8]) -> Result<Option<Frame>> {
        let d = self.streams.entry(key).or_insert_with(|| Decoding {
            decoder: None,
            recording: None,
            part: 0,
        });
        // A stream that changes codec gets a new decoder.
        let decoder = match &mut d.decoder {
            Some((c, dec)) if *c == codec => dec,
            slot => &mut slot.insert((codec, VideoDecoder::new(codec)?)).1,
        };
        decoder.decode(data, Duration::ZERO)
    }

    fn record(&mut self, key: Key, peer: Option<PeerId>, rtp: u32, frame: &Frame) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let Some(d) = self.streams.get_mut(&key) else {
            return;
        };
        let tick = i64::from(90_000 / RECORD_FPS);
        let max_gap = MAX_GAP.as_secs() as i64 * i64::from(RECORD_FPS);
        // How many places on the timeline after the last picture this one belongs (negative:
        // a late picture, not written).
        let step = |r: &Recording| {
            let delta = i64::from(rtp.wrapping_sub(r.last_rtp) as i32);
            (delta + tick / 2).div_euclid(tick)
        };
        // A new file when the picture's size changes (a layer switch) or the timeline jumps.
        let restart = d
            .recording
            .as_ref()
            .is_some_and(|r| r.writer.size() != (frame.width, frame.height) || step(r) > max_gap);
        if restart {
            let r = d.recording.take();
            self.close(r);
        }
        let Some(d) = self.streams.get_mut(&key) else {
            return;
        };
        if d.recording.is_none() {
            if d.part >= MAX_PARTS {
                // A sender whose pictures change size or jump in time all the time would
                // otherwise make a file per picture.
                if d.part == MAX_PARTS {
                    d.part += 1;
                    self.error.get_or_insert(Error::RecordingParts {
                        path: recording_path(&dir, key, peer, MAX_PARTS),
                        parts: MAX_PARTS,
                    });
                }
                return;
            }
            d.part += 1;
            let path = recording_path(&dir, key, peer, d.part);
            let opened = File::create(&path).and_then(|f| {
                Y4mWriter::new(
                    BufWriter::new(f),
                    frame.width,
                    frame.height,
                    RECORD_FPS as f32,
                )
            });
            match opened {
                Ok(writer) => {
                    self.recordings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(path.clone());
                    d.recording = Some(Recording {
                        writer,
                        path,
                        last: None,
                        last_rtp: rtp,
                        last_index: 0,
                    });
                }
                Err(source) => {
                    tracing::warn!("cannot create {}: {source}", path.display());
                    self.error.get_or_insert(Error::CreateSink { path, source });
                    return;
                }
            }
        }
        let Some(r) = d.recording.as_mut() else {
            return;
        };
        // The picture's place on the file's 30 fps timeline; earlier places still empty get
        // the previous picture again, a place already written is not written twice.
        let step = step(r);
        if r.last.is_some() && step < 0 {
            return;
        }
        let index = r.last_index + step.max(0) as u64;
        r.last_rtp = rtp;
        r.last_index = index;
        let mut result = Ok(());
        while r.writer.frames() < index && result.is_ok() {
            result = match &r.last {
                Some(prev) => r.writer.write(prev),
                None => r.writer.write(frame),
            };
        }
        if r.writer.frames() <= index && result.is_ok() {
            result = r.writer.write(frame);
            self.counters.recorded.fetch_add(1, Ordering::Relaxed);
        }
        r.last = Some(frame.clone());
        if let Err(source) = result {
            let path = r.path.clone();
            tracing::warn!("cannot write {}: {source}", path.display());
            d.recording = None;
            self.error.get_or_insert(Error::WriteSink { path, source });
        }
    }

    fn close(&mut self, recording: Option<Recording>) {
        if let Some(mut r) = recording {
            if let Err(source) = r.writer.flush() {
                self.error.get_or_insert(Error::WriteSink {
                    path: r.path,
                    source,
                });
            }
        }
    }

    fn deliver(&mut self, v: ReceivedVideo) {
        match &mut self.sink {
            Some(VideoSink::Channel(tx)) => match tx.try_send(v) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.counters.sink_dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
            Some(VideoSink::Callback(f)) => f(v),
            None => {}
        }
    }
}

/// `peer<PEER>_ssrc<SSRC>_camera.y4m` (the audio recordings' names with the kind), `…_part2`
/// and on after a change of size; `ssrc<SSRC>_…` while the roster has not named the owner.
fn recording_path(dir: &Path, key: Key, peer: Option<PeerId>, part: u32) -> PathBuf {
    let who = match peer {
        Some(p) => format!("peer{}_ssrc{}", p.dialog_id(), key.0),
        None => format!("ssrc{}", key.0),
    };
    let suffix = if part > 1 {
        format!("_part{part}")
    } else {
        String::new()
    };
    dir.join(format!("{who}_{}{suffix}.y4m", key.1.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern;
    use crate::video::y4m::Y4mReader;

    fn worker(dir: &Path) -> Worker {
        Worker {
            sink: None,
            dir: Some(dir.to_path_buf()),
            counters: Arc::new(Counters::default()),
            recordings: Arc::new(Mutex::new(Vec::new())),
            streams: HashMap::new(),
            error: None,
        }
    }

    fn counters_in(path: &Path) -> Vec<Option<u32>> {
        let mut r = Y4mReader::new(File::open(path).unwrap(), "rec").unwrap();
        std::iter::from_fn(|| r.next_frame().unwrap())
            .map(|f| pattern::read_counter(&f))
            .collect()
    }

    /// Pictures go on a 30 fps timeline by their RTP time, across the 32-bit wrap: a gap is
    /// filled with the picture before it, a late picture is left out, a jump of more than 5 s
    /// or a change of size starts a new file, and a stream that does that all the time stops
    /// being recorded after 100 files, with an error.
    #[test]
    fn recordings_follow_rtp_time_across_the_wrap_and_are_bounded_in_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path());
        let key = (7, VideoKind::Camera);
        w.streams.insert(
            key,
            Decoding {
                decoder: None,
                recording: None,
                part: 0,
            },
        );
        let pic = |n| pattern::draw(64, 48, n, Duration::ZERO).unwrap();
        let start = u32::MAX - 4_000;
        // 0, 1, (2 missing), 3, then 1 again (late), then 4 after the wrap.
        for (n, rtp) in [(0, 0u32), (1, 3000), (3, 9000), (1, 3000), (4, 12_000)] {
            w.record(key, None, start.wrapping_add(rtp), &pic(n));
        }
        let first = w.recordings.lock().unwrap()[0].clone();
        // A jump of 10 s: a new file.
        w.record(key, None, start.wrapping_add(12_000 + 900_000), &pic(5));
        let r = w.streams.get_mut(&key).unwrap().recording.take();
        w.close(r);
        assert_eq!(
            counters_in(&first),
            [Some(0), Some(1), Some(1), Some(3), Some(4)]
        );
        assert_eq!(w.recordings.lock().unwrap().len(), 2);
        // A size change on every picture: 100 files in all, then an error, then nothing.
        for i in 0..200u32 {
            let size = if i % 2 == 0 { (32, 32) } else { (64, 48) };
            let f = pattern::draw(size.0, size.1, i, Duration::ZERO).unwrap();
            w.record(key, None, i * 3000, &f);
        }
        assert_eq!(w.recordings.lock().unwrap().len(), MAX_PARTS as usize);
        assert!(
            matches!(w.error, Some(Error::RecordingParts { parts: 100, .. })),
            "{:?}",
            w.error
        );
    }
}
