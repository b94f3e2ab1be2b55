//! Microphones and speakers, through cpal (ALSA and PulseAudio on Linux; whatever cpal
//! supports elsewhere). Only with the `devices` feature.
//!
//! A device's callback runs on the audio system's thread and must never wait, so it only
//! moves samples through a lock-free ring (`rtrb`):
//! - **microphone**: callback → ring → [`MicReader`], pulled by the call each tick (an inline
//!   source: no read-ahead queue, so no added latency), where the samples are brought to the
//!   call's clock ([`DriftResampler`]), made 20 ms mono frames and processed (echo
//!   cancellation with the speaker's frames as reference, noise suppression, gain);
//! - **speaker**: the call's mix each tick → ring → callback, brought to the device's clock the
//!   same way, and the same frames to the microphone's echo canceller.
//!
//! Each stream lives on a thread of its own (cpal streams cannot move between threads on
//! every platform), which holds it until the call lets go. A device that fails is reported
//! ([`DeviceFailure`]) and the call goes on without it; a new one can be opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, StreamConfig};
use rtrb::{Consumer, Producer, RingBuffer};

use super::drift::DriftResampler;
use super::processing::{processor, ProcessingConfig, VoiceProcessor};
use super::source::{PcmReader, ReadOutcome};
use super::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, Result};

/// What the microphone ring holds at most (device samples): a second at 48 kHz.
const MIC_RING: usize = 48_000;
/// What the speaker ring holds at most (48 kHz samples): half a second.
const SPEAKER_RING: usize = 24_000;
/// The echo reference ring (48 kHz samples): a second.
const ECHO_RING: usize = 48_000;
/// The fill the drift control steers to: 40 ms, enough for a device's period and a tick.
const TARGET_MS: usize = 40;
/// A buffer this far above its target means one side stalled (the call, or the device): the
/// excess is dropped rather than played late.
const MAX_BACKLOG_FACTOR: usize = 3;

/// A device as the audio system lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// The audio system (`ALSA`, `PulseAudio`, ...).
    pub host: String,
    /// What `--mic NAME` / `--speaker NAME` match first: the device's own id.
    pub id: String,
    /// A person's name for it.
    pub name: String,
    pub input: bool,
    pub output: bool,
    /// The system's default input (or output, for an output device).
    pub is_default: bool,
    /// Its default rate and channel count, if it says.
    pub rate: Option<u32>,
    pub channels: Option<u16>,
    pub sample_format: Option<String>,
}

/// A device failed (it was unplugged, the sound server went away): the call goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceFailure {
    pub device: String,
    pub error: String,
}

/// Every input and output of every audio system that answers.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    let mut out = Vec::new();
    for id in cpal::available_hosts() {
        let Ok(host) = cpal::host_from_id(id) else {
            continue;
        };
        let default_in = host.default_input_device().and_then(|d| d.id().ok());
        let default_out = host.default_output_device().and_then(|d| d.id().ok());
        let Ok(list) = host.devices() else { continue };
        for d in list {
            let Ok(did) = d.id() else { continue };
            let (input, output) = (d.supports_input(), d.supports_output());
            let config = if input {
                d.default_input_config().ok()
            } else {
                d.default_output_config().ok()
            };
            out.push(DeviceInfo {
                host: id.name().to_owned(),
                id: device_key(&did),
                name: d
                    .description()
                    .map(|n| n.name().to_owned())
                    .unwrap_or_default(),
                input,
                output,
                is_default: Some(&did) == default_in.as_ref() && input
                    || Some(&did) == default_out.as_ref() && output,
                rate: config.as_ref().map(|c| c.sample_rate()),
                channels: config.as_ref().map(|c| c.channels()),
                sample_format: config.as_ref().map(|c| c.sample_format().to_string()),
            });
        }
    }
    Ok(out)
}

/// The device's own id, without the host (what people type).
fn device_key(id: &cpal::DeviceId) -> String {
    let s = id.to_string();
    match s.split_once(':') {
        Some((_, rest)) => rest.to_owned(),
        None => s,
    }
}

/// Finds a device by name (its id, `host:id`, or its description; exact first, then a part),
/// or the default one; PulseAudio is asked before ALSA when it runs.
fn find(name: Option<&str>, input: bool) -> Result<cpal::Device> {
    let what = if input { "input" } else { "output" };
    let mut hosts = cpal::available_hosts();
    // PulseAudio (or PipeWire's) first: it is what a desktop routes through.
    hosts.sort_by_key(|h| h.name() != "PulseAudio");
    let mut candidates = Vec::new();
    for id in hosts {
        let Ok(host) = cpal::host_from_id(id) else {
            continue;
        };
        match name {
            None => {
                let d = if input {
                    host.default_input_device()
                } else {
                    host.default_output_device()
                };
                if let Some(d) = d {
                    return Ok(d);
                }
            }
            Some(_) => {
                let Ok(list) = host.devices() else { continue };
                for d in list {
                    if (input && d.supports_input()) || (!input && d.supports_output()) {
                        candidates.push(d);
                    }
                }
            }
        }
    }
    let Some(name) = name else {
        return Err(Error::Device {
            device: format!("the default {what}"),
            reason: "there is none: no sound card, and no sound server (PulseAudio, PipeWire) answered; run `groupcall devices`".into(),
        });
    };
    let want = name.to_lowercase();
    let keys = |d: &cpal::Device| -> Vec<String> {
        let mut k = Vec::new();
        if let Ok(id) = d.id() {
            k.push(id.to_string().to_lowercase());
            k.push(device_key(&id).to_lowercase());
        }
        if let Ok(desc) = d.description() {
            k.push(desc.name().to_lowercase());
        }
        k
    };
    if let Some(i) = candidates.iter().position(|d| keys(d).contains(&want)) {
        return Ok(candidates.swap_remove(i));
    }
    if let Some(i) = candidates
        .iter()
        .position(|d| keys(d).iter().any(|k| k.contains(&want)))
    {
        return Ok(candidates.swap_remove(i));
    }
    Err(Error::Device {
        device: name.to_owned(),
        reason: format!("no {what} device has that name; `groupcall devices` lists them"),
    })
}

/// A configuration for `device`: 48 kHz when it can (no resampling then), else its default.
fn config_for(device: &cpal::Device, input: bool) -> Result<(StreamConfig, SampleFormat)> {
    let name = device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_default();
    let fail = |e: cpal::Error| Error::Device {
        device: name.clone(),
        reason: e.to_string(),
    };
    let default = if input {
        device.default_input_config().map_err(fail)?
    } else {
        device.default_output_config().map_err(fail)?
    };
    let ranges: Vec<_> = if input {
        device
            .supported_input_configs()
            .map(|r| r.collect())
            .unwrap_or_default()
    } else {
        device
            .supported_output_configs()
            .map(|r| r.collect())
            .unwrap_or_default()
    };
    let at_48k = ranges.into_iter().find(|r| {
        r.channels() == default.channels()
            && r.sample_format() == default.sample_format()
            && (r.min_sample_rate()..=r.max_sample_rate()).contains(&SAMPLE_RATE)
    });
    let chosen = match at_48k {
        Some(r) => r.with_sample_rate(SAMPLE_RATE),
        None => default,
    };
    let mut config = chosen.config();
    // A period of 10 ms where the device lets us choose. Left to itself a sound server may
    // pick seconds (PulseAudio's default for a playback stream is 2 s), which would be the
    // call's latency.
    let period = config.sample_rate / 100;
    config.buffer_size = match chosen.buffer_size() {
        cpal::SupportedBufferSize::Range { min, max } => {
            cpal::BufferSize::Fixed(period.clamp(*min, (*max).max(*min)))
        }
        cpal::SupportedBufferSize::Unknown => cpal::BufferSize::Default,
    };
    Ok((config, chosen.sample_format()))
}

/// Holds a device's stream on its own thread until dropped.
pub(crate) struct DeviceHandle {
    pub name: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens a stream on a thread of its own: `build` finds the device and makes the stream.
fn spawn_stream<B>(label: &str, build: B) -> Result<DeviceHandle>
where
    B: FnOnce() -> Result<(String, cpal::Stream)> + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<String>>(1);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("groupcall-{label}"))
        .spawn(move || {
            let (name, stream) = match build() {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = stream.play() {
                let _ = ready_tx.send(Err(Error::Device {
                    device: name,
                    reason: format!("cannot start it: {e}"),
                }));
                return;
            }
            let _ = ready_tx.send(Ok(name));
            // Held until the call lets go (the sender is dropped).
            let _ = stop_rx.recv();
            drop(stream);
        })
        .map_err(|e| Error::Device {
            device: label.to_owned(),
            reason: format!("cannot start its thread: {e}"),
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(name)) => Ok(DeviceHandle {
            name,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(Error::Device {
            device: label.to_owned(),
            reason: "the audio system did not open it within 10 s".into(),
        }),
    }
}

/// Reports a stream's errors to the call, without ever waiting.
fn reporter(
    name: String,
    failures: SyncSender<DeviceFailure>,
) -> impl FnMut(cpal::Error) + Send + 'static {
    move |e| {
        let _ = failures.try_send(DeviceFailure {
            device: name.clone(),
            error: e.to_string(),
        });
    }
}

/// The callback's samples as `f32` (-1..1) in `scratch`, whatever the device's format.
fn read_frames<'a>(data: &cpal::Data, scratch: &'a mut Vec<f32>) -> &'a [f32] {
    use cpal::Sample;
    scratch.clear();
    macro_rules! take {
        ($t:ty) => {
            if let Some(input) = data.as_slice::<$t>() {
                scratch.extend(input.iter().map(|s| s.to_sample::<f32>()));
            }
        };
    }
    match data.sample_format() {
        SampleFormat::F32 => take!(f32),
        SampleFormat::I16 => take!(i16),
        SampleFormat::I32 => take!(i32),
        SampleFormat::U8 => take!(u8),
        SampleFormat::U16 => take!(u16),
        SampleFormat::F64 => take!(f64),
        _ => {}
    }
    scratch
}

/// What the microphone needs to know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MicrophoneConfig {
    /// The device (see [`devices`]); `None` is the system's default input.
    pub device: Option<String>,
    pub processing: ProcessingConfig,
}

/// What the speaker needs to know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeakerConfig {
    /// The device (see [`devices`]); `None` is the system's default output.
    pub device: Option<String>,
}

/// Figures of a device path, shared with its callback.
#[derive(Debug)]
pub struct DeviceCounters {
    /// Samples the ring had no room for (the consumer fell behind).
    pub overflowed: AtomicU64,
    /// Samples the ring did not have when they were needed (the producer fell behind).
    pub underran: AtomicU64,
    /// When the device's callback last ran, in ms since `since`.
    heartbeat: AtomicU64,
    since: std::time::Instant,
}

/// A device whose callback has not run for this long has stopped, whether or not the audio
/// system said so (a PulseAudio sink that is unloaded kills its streams silently).
const STALLED: Duration = Duration::from_secs(2);

impl Default for DeviceCounters {
    fn default() -> Self {
        DeviceCounters {
            overflowed: AtomicU64::new(0),
            underran: AtomicU64::new(0),
            heartbeat: AtomicU64::new(0),
            since: std::time::Instant::now(),
        }
    }
}

impl DeviceCounters {
    fn beat(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.heartbeat.store(ms, Ordering::Relaxed);
    }

    /// How long since the callback last ran.
    fn silent_for(&self) -> Duration {
        let now = self.since.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat.load(Ordering::Relaxed)))
    }
}

/// Opens a microphone: its stream runs on its own thread; the returned reader makes the
/// call's 20 ms frames from it.
pub(crate) fn open_microphone(
    config: &MicrophoneConfig,
    echo: Option<Consumer<i16>>,
) -> Result<(MicReader, DeviceHandle)> {
    let (failures, failed) = failure_channel();
    let (mut tx, rx) = RingBuffer::<f32>::new(MIC_RING);
    let counters = Arc::new(DeviceCounters::default());
    let wanted = config.device.clone();
    let (rate_tx, rate_rx) = mpsc::sync_channel::<u32>(1);
    let shared = counters.clone();
    let chunk = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunk_seen = chunk.clone();
    let handle = spawn_stream("microphone", move || {
        let device = find(wanted.as_deref(), true)?;
        let name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_default();
        let (config, format) = config_for(&device, true)?;
        let channels = usize::from(config.channels.max(1));
        let _ = rate_tx.send(config.sample_rate);
        let mut scratch = Vec::with_capacity(8192);
        let stream = device
            .build_input_stream_raw(
                config,
                format,
                move |data, _| {
                    shared.beat();
                    chunk_seen.fetch_max(data.len() / channels, Ordering::Relaxed);
                    // Down to mono: the average of the channels.
                    for frame in read_frames(data, &mut scratch).chunks_exact(channels) {
                        let s = frame.iter().sum::<f32>() / channels as f32;
                        if tx.push(s).is_err() {
                            shared.overflowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                },
                reporter(name.clone(), failures),
                Some(Duration::from_secs(5)),
            )
            .map_err(|e| Error::Device {
                device: name.clone(),
                reason: e.to_string(),
            })?;
        Ok((name, stream))
    })?;
    let rate = rate_rx.recv().unwrap_or(SAMPLE_RATE);
    let target = rate as usize * TARGET_MS / 1000;
    let reader = MicReader {
        ring: rx,
        drift: DriftResampler::new(rate, SAMPLE_RATE, target),
        target,
        primed: false,
        buf: vec![0.0; FRAME_SAMPLES],
        have: 0,
        frame: vec![0; FRAME_SAMPLES],
        given: FRAME_SAMPLES,
        processor: processor(config.processing)?,
        echo,
        reference: vec![0; FRAME_SAMPLES],
        counters,
        failed,
        chunk,
    };
    Ok((reader, handle))
}

/// The microphone's side in the call: device samples to processed 20 ms frames at 48 kHz.
pub(crate) struct MicReader {
    ring: Consumer<f32>,
    drift: DriftResampler,
    target: usize,
    primed: bool,
    buf: Vec<f32>,
    have: usize,
    frame: Vec<i16>,
    /// How much of `frame` was handed out.
    given: usize,
    processor: Option<Box<dyn VoiceProcessor>>,
    echo: Option<Consumer<i16>>,
    reference: Vec<i16>,
    pub(crate) counters: Arc<DeviceCounters>,
    failed: Receiver<DeviceFailure>,
    /// The largest block the device has delivered at once.
    chunk: Arc<std::sync::atomic::AtomicUsize>,
}

impl MicReader {
    /// Makes the next frame, if the device has given enough.
    fn next_frame(&mut self) -> bool {
        // A device that delivers in big blocks needs a buffer of a block and a half to never
        // run dry between them.
        let block = self.chunk.load(Ordering::Relaxed) * 3 / 2;
        if block > self.target {
            self.target = block;
            self.drift.set_target(block);
        }
        let buffered = self.ring.slots();
        if !self.primed {
            if buffered < self.target {
                return false;
            }
            self.primed = true;
        }
        // The call stalled: what piled up is dropped, not played late.
        if buffered > self.target * MAX_BACKLOG_FACTOR {
            let drop = buffered - self.target;
            if let Ok(chunk) = self.ring.read_chunk(drop) {
                chunk.commit_all();
            }
        }
        self.drift.observe_fill(self.ring.slots());
        let ring = &mut self.ring;
        let n = self
            .drift
            .process(|| ring.pop().ok(), &mut self.buf[self.have..]);
        self.have += n;
        if self.have < FRAME_SAMPLES {
            self.counters
                .underran
                .fetch_add((FRAME_SAMPLES - self.have) as u64, Ordering::Relaxed);
            return false;
        }
        self.have = 0;
        for (o, &s) in self.frame.iter_mut().zip(&self.buf) {
            *o = (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        if let Some(p) = self.processor.as_mut() {
            // What the speaker played since the last frame, as the echo's reference.
            if let Some(echo) = self.echo.as_mut() {
                while echo.slots() >= FRAME_SAMPLES {
                    if let Ok(chunk) = echo.read_chunk(FRAME_SAMPLES) {
                        let (a, b) = chunk.as_slices();
                        self.reference[..a.len()].copy_from_slice(a);
                        self.reference[a.len()..].copy_from_slice(b);
                        chunk.commit_all();
                        p.render(&self.reference);
                    }
                }
            }
            p.capture(&mut self.frame);
        }
        self.given = 0;
        true
    }
}

impl PcmReader for MicReader {
    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
        // A device that failed ends the source (one `SourceError`); the call goes on.
        if let Ok(f) = self.failed.try_recv() {
            return Err(Error::Device {
                device: f.device,
                reason: format!("{}; the call goes on without it: open another", f.error),
            });
        }
        if self.counters.silent_for() > STALLED {
            return Err(Error::Device {
                device: "the microphone".into(),
                reason: format!(
                    "it has given nothing for {} s (unplugged, or its sound server went away); the call goes on without it: open another",
                    STALLED.as_secs()
                ),
            });
        }
        if self.given == self.frame.len() && !self.next_frame() {
            return Ok(ReadOutcome::Pending);
        }
        let n = out.len().min(self.frame.len() - self.given);
        out[..n].copy_from_slice(&self.frame[self.given..self.given + n]);
        self.given += n;
        Ok(ReadOutcome::Samples(n))
    }

    fn rewind(&mut self) -> Result<()> {
        Err(Error::CannotLoop {
            input: "the microphone".into(),
        })
    }
}

/// The call's side of a speaker: the mix goes in each tick.
pub(crate) struct SpeakerOut {
    ring: Producer<i16>,
    pub(crate) echo: Option<Producer<i16>>,
    pub(crate) counters: Arc<DeviceCounters>,
    /// Keeps the device open while the speaker is.
    pub(crate) _handle: DeviceHandle,
    failed: Receiver<DeviceFailure>,
    mono: Vec<i16>,
}

impl SpeakerOut {
    /// Plays a 20 ms frame of `channels` interleaved channels (as mono), and hands it to the
    /// microphone's echo canceller.
    pub(crate) fn play(&mut self, frame: &[i16], channels: usize) {
        self.mono.clear();
        self.mono.extend(
            frame
                .chunks_exact(channels.max(1))
                .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16),
        );
        for &s in &self.mono {
            if self.ring.push(s).is_err() {
                self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(echo) = self.echo.as_mut() {
            for &s in &self.mono {
                // A microphone that is not pulled (paused, gone) leaves the ring full: the
                // reference is dropped then, which is what it should be.
                let _ = echo.push(s);
            }
        }
    }

    /// Whether the device failed (then the call drops it and says so).
    pub(crate) fn failure(&self) -> Option<DeviceFailure> {
        self.failed.try_recv().ok().or_else(|| {
            (self.counters.silent_for() > STALLED).then(|| DeviceFailure {
                device: self._handle.name.clone(),
                error: format!(
                    "it has taken nothing for {} s (unplugged, or its sound server went away)",
                    STALLED.as_secs()
                ),
            })
        })
    }
}

/// Opens a speaker. With `echo`, what it plays is also handed to a microphone's canceller.
pub(crate) fn open_speaker(
    config: &SpeakerConfig,
    echo: Option<Producer<i16>>,
) -> Result<SpeakerOut> {
    let (failures, failed) = failure_channel();
    let (tx, mut rx) = RingBuffer::<i16>::new(SPEAKER_RING);
    let counters = Arc::new(DeviceCounters::default());
    let shared = counters.clone();
    let wanted = config.device.clone();
    let handle = spawn_stream("speaker", move || {
        let device = find(wanted.as_deref(), false)?;
        let name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_default();
        let (config, format) = config_for(&device, false)?;
        let channels = usize::from(config.channels.max(1));
        let rate = config.sample_rate.max(1);
        let mut target = SAMPLE_RATE as usize * TARGET_MS / 1000;
        let mut drift = DriftResampler::new(SAMPLE_RATE, config.sample_rate, target);
        let mut mono: Vec<f32> = Vec::with_capacity(8192);
        let mut primed = false;
        let stream = device
            .build_output_stream_raw(
                config,
                format,
                move |data, _| {
                    shared.beat();
                    let frames = data.len() / channels;

                    // Big device blocks need a buffer of a block and a half (in 48 kHz samples).
                    let block = frames * 3 / 2 * SAMPLE_RATE as usize / rate as usize;
                    if block > target {
                        target = block;
                        drift.set_target(block);
                    }
                    mono.clear();
                    mono.resize(frames, 0.0);
                    if !primed && rx.slots() >= target {
                        primed = true;
                    }
                    // The device stalled while the call went on (it started late, the system
                    // was busy): what piled up is dropped, not played late.
                    let buffered = rx.slots();
                    if buffered > target * MAX_BACKLOG_FACTOR {
                        if let Ok(chunk) = rx.read_chunk(buffered - target) {
                            chunk.commit_all();
                        }
                    }
                    let made = if primed {
                        drift.observe_fill(rx.slots());
                        drift.process(|| rx.pop().ok().map(|s| s as f32 / 32768.0), &mut mono)
                    } else {
                        0
                    };
                    if made < frames {
                        shared
                            .underran
                            .fetch_add((frames - made) as u64, Ordering::Relaxed);
                        // Dry: wait for the target again rather than click on every packet.
                        primed = false;
                    }
                    write_frames(data, &mono, channels);
                },
                reporter(name.clone(), failures),
                Some(Duration::from_secs(5)),
            )
            .map_err(|e| Error::Device {
                device: name.clone(),
                reason: e.to_string(),
            })?;
        Ok((name, stream))
    })?;
    Ok(SpeakerOut {
        ring: tx,
        echo,
        counters,
        _handle: handle,
        failed,
        mono: Vec::with_capacity(FRAME_SAMPLES),
    })
}

/// Writes mono samples to every channel of an output buffer of any format.
fn write_frames(data: &mut cpal::Data, mono: &[f32], channels: usize) {
    use cpal::Sample;
    macro_rules! fill {
        ($t:ty) => {
            if let Some(out) = data.as_slice_mut::<$t>() {
                for (frame, &s) in out.chunks_exact_mut(channels).zip(mono) {
                    frame.fill(s.to_sample::<$t>());
                }
            }
        };
    }
    match data.sample_format() {
        SampleFormat::F32 => fill!(f32),
        SampleFormat::I16 => fill!(i16),
        SampleFormat::I32 => fill!(i32),
        SampleFormat::U8 => fill!(u8),
        SampleFormat::U16 => fill!(u16),
        SampleFormat::F64 => fill!(f64),
        _ => {}
    }
}

/// The ring that carries the speaker's frames to the microphone's echo canceller.
pub(crate) fn echo_path() -> (Producer<i16>, Consumer<i16>) {
    RingBuffer::new(ECHO_RING)
}

/// A channel for a device's failures (a few are enough: the first says it).
fn failure_channel() -> (SyncSender<DeviceFailure>, Receiver<DeviceFailure>) {
    mpsc::sync_channel(8)
}
