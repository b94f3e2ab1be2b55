//! The encoder thread of one published video (a camera or a screen): it reads the source at
//! its frame rate, encodes each picture on the simulcast layers that are on, and hands the
//! encoded frames to the call's task through a bounded queue.
//!
//! Encoding a 720p frame takes milliseconds, more than a call's task may spend between two
//! datagrams; on its own thread it delays nothing else, and a source that blocks (a pipe, a
//! slow disk, an application that stops pushing) blocks only this thread. The task never waits
//! for it: it reads the queue in its `select!` and sends the layer changes, bitrates and
//! keyframe requests the network asks for back through a channel the thread reads between frames.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use groupcall_media::VideoCodec;

use super::simulcast::SimulcastEncoder;
use super::source::{Next, VideoSource};
use crate::error::{Error, Result};

/// Encoded frames waiting for the call's task (a few frames of every layer). When it is full
/// the thread drops the frame and asks its encoders for a keyframe, so receivers recover.
const QUEUE: usize = 16;
/// A source this far behind its clock (a stalled pipe) starts its clock again rather than
/// sending the frames it owes in a burst.
const MAX_BEHIND: Duration = Duration::from_millis(500);

/// Camera or screen: how many layers, and how the encoder is tuned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoKind {
    Camera,
    Screen,
}

impl VideoKind {
    pub fn layers(self) -> usize {
        match self {
            VideoKind::Camera => 3,
            VideoKind::Screen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VideoKind::Camera => "camera",
            VideoKind::Screen => "screen",
        }
    }
}

/// What the call's task tells the thread.
#[derive(Debug)]
pub(crate) enum Control {
    /// The next frame of every layer is a keyframe (a receiver's PLI or FIR).
    Keyframe,
    /// Only the lowest N layers run (the bandwidth estimate, the receivers' constraints).
    Layers(usize),
    /// Pictures are read but not sent (`video_paused`).
    Paused(bool),
    /// Encode with this codec from the next frame (the server's answer decides it).
    Codec(VideoCodec),
}

/// What the thread hands the call's task.
#[derive(Debug)]
pub(crate) enum Published {
    Frame {
        layer: usize,
        /// 90 kHz, from the source's clock.
        rtp_timestamp: u32,
        keyframe: bool,
        data: Vec<u8>,
    },
    /// The source ended (end of file, the pusher dropped).
    Ended,
    /// The source or the encoder failed; nothing more comes.
    Failed(Error),
}

/// The bitrate a layer of `width` x `height` at `fps` aims at: about 0.08 bits a pixel, so
/// 2.2 Mbit/s for 720p30, 550 kbit/s for 360p30 and 140 kbit/s for 180p30, close to
/// libwebrtc's table (`groupcall_media::bwe::CAMERA_LAYERS`).
fn layer_bitrate(width: u32, height: u32, fps: f32, screen: bool) -> u32 {
    let bits_per_pixel = if screen { 0.05 } else { 0.08 };
    let bps = f64::from(width) * f64::from(height) * f64::from(fps) * bits_per_pixel;
    bps.clamp(50_000.0, 4_000_000.0) as u32
}

/// One running encoder thread. Dropping it stops the thread (at its next frame).
pub(crate) struct Publisher {
    pub name: String,
    pub frames: mpsc::Receiver<Published>,
    control: std_mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
    /// Frames the thread dropped because the task was behind.
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Publisher {
    /// Starts the thread for `source`, sending `layers` layers at first.
    pub(crate) fn start(source: VideoSource, kind: VideoKind, rtp_base: u32) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ctl_tx, ctl_rx) = std_mpsc::channel();
        let name = source.name().to_owned();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = dropped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("groupcall-{}", kind.as_str()))
            .spawn(move || run(source, kind, rtp_base, tx, ctl_rx, counter))
            .map_err(Error::RecorderStart)?;
        Ok(Publisher {
            name,
            frames: rx,
            control: ctl_tx,
            thread: Some(thread),
            dropped,
        })
    }

    pub(crate) fn send(&self, c: Control) {
        // A thread that ended has said why through `frames`.
        let _ = self.control.send(c);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Closing both channels ends the thread at its next frame; it is not joined here (a
        // source blocked in a read would block the call's task), only detached.
        self.frames.close();
        drop(self.thread.take());
    }
}

fn run(
    mut source: VideoSource,
    kind: VideoKind,
    rtp_base: u32,
    out: mpsc::Sender<Published>,
    control: std_mpsc::Receiver<Control>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let (w, h, fps) = (source.width(), source.height(), source.fps());
    let screen = kind == VideoKind::Screen;
    let bitrates: Vec<u32> = (0..kind.layers())
        .map(|i| {
            let halvings = (kind.layers() - 1 - i) as u32;
            layer_bitrate(w >> halvings, h >> halvings, fps, screen)
        })
        .collect();
    let mut codec = super::simulcast::encodable()
        .first()
        .copied()
        .unwrap_or(VideoCodec::H264);
    let mut encoder = match SimulcastEncoder::new(codec, w, h, fps, &bitrates, screen) {
        Ok(e) => e,
        Err(e) => {
            let _ = out.blocking_send(Published::Failed(e));
            return;
        }
    };
    let mut active = kind.layers();
    let mut paused = false;
    let frame_time = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut start = Instant::now();
    let mut n: u32 = 0;
    // The RTP clock runs on the source's own time, so that audio and video of one source stay
    // together whatever the thread's scheduling.
    let mut media_frames: u64 = 0;
    loop {
        loop {
            match control.try_recv() {
                Ok(Control::Keyframe) => encoder.request_keyframe(),
                Ok(Control::Layers(k)) => active = k.min(kind.layers()),
                Ok(Control::Paused(p)) => paused = p,
                Ok(Control::Codec(c)) if c != codec => {
                    match SimulcastEncoder::new(c, w, h, fps, &bitrates, screen) {
                        Ok(e) => {
                            encoder = e;
                            codec = c;
                        }
                        Err(e) => {
                            let _ = out.blocking_send(Published::Failed(e));
                            return;
                        }
                    }
                }
                Ok(Control::Codec(_)) => {}
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if out.is_closed() {
            return;
        }
        if !source.is_pushed() {
            let due = start + frame_time * n;
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            } else if now - due > MAX_BEHIND {
                start = now;
                n = 0;
            }
        }
        // Pushed frames are waited for a little at a time, so that a call that ended (or
        // replaced this source) is noticed even while the application pushes nothing.
        let frame = match source.next_frame_within(Duration::from_millis(200)) {
            Ok(Next::Frame(f)) => f,
            Ok(Next::Nothing) => continue,
            Ok(Next::End) => {
                let _ = out.blocking_send(Published::Ended);
                return;
            }
            Err(e) => {
                let _ = out.blocking_send(Published::Failed(e));
                return;
            }
        };
        n = n.wrapping_add(1);
        let ticks = (media_frames as f64 * 90_000.0 / f64::from(fps)).round() as u64 as u32;
        media_frames += 1;
        if paused {
            continue;
        }
        let rtp_timestamp = rtp_base.wrapping_add(ticks);
        let encoded = match encoder.encode(&frame, active) {
            Ok(e) => e,
            Err(e) => {
                let _ = out.blocking_send(Published::Failed(e));
                return;
            }
        };
        for (layer, e) in encoded {
            let item = Published::Frame {
                layer,
                rtp_timestamp,
                keyframe: e.keyframe,
                data: e.data,
            };
            match out.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    encoder.request_keyframe();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

#[cfg(all(test, feature = "h264"))]
mod tests {
    use super::*;
    use crate::video::h264::H264Decoder;
    use crate::video::pattern;

    #[tokio::test]
    async fn a_pattern_is_encoded_on_every_layer_at_its_rate_and_ends() {
        let source = VideoSource::pattern_frames(320, 180, 30.0, Some(10)).unwrap();
        let mut p = Publisher::start(source, VideoKind::Camera, 1000).unwrap();
        let mut decoders: Vec<H264Decoder> = (0..3).map(|_| H264Decoder::new().unwrap()).collect();
        let mut stamps = vec![Vec::new(); 3];
        let mut counters = vec![Vec::new(); 3];
        let started = Instant::now();
        loop {
            match p.frames.recv().await.unwrap() {
                Published::Frame {
                    layer,
                    rtp_timestamp,
                    data,
                    ..
                } => {
                    stamps[layer].push(rtp_timestamp);
                    if let Some(f) = decoders[layer].decode(&data, Duration::ZERO).unwrap() {
                        counters[layer].push(pattern::read_counter(&f));
                    }
                }
                Published::Ended => break,
                Published::Failed(e) => panic!("{e}"),
            }
        }
        // Ten frames at 30 fps take 300 ms of the source's clock: the thread paces them.
        assert!(started.elapsed() >= Duration::from_millis(250));
        let want: Vec<u32> = (0..10).map(|i| 1000 + i * 3000).collect();
        for (layer, got) in stamps.iter().enumerate() {
            assert_eq!(*got, want, "layer {layer}");
        }
        // The top layer (320x180) reads every counter.
        assert_eq!(counters[2], (0..10).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_dropped_publisher_lets_go_of_its_pushed_source_while_the_application_pushes_nothing() {
        let (source, pusher) = VideoSource::pushed(64, 48, 30.0).unwrap();
        let p = Publisher::start(source, VideoKind::Camera, 0).unwrap();
        drop(p);
        let deadline = Instant::now() + Duration::from_secs(5);
        let frame = pattern::draw(64, 48, 0, Duration::ZERO).unwrap();
        loop {
            match pusher.push(frame.clone()) {
                Err(Error::SourceClosed) => break,
                _ if Instant::now() > deadline => {
                    panic!("the encoder thread still holds the source")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
