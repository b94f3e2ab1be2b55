//! Reading ahead on a thread of its own: every source that does I/O (files, pipes, standard
//! input, ffmpeg) decodes on a `groupcall-source` thread and hands finished 20 ms frames to the
//! call's task through a bounded queue.
//!
//! Why: the call's task also runs ICE, DTLS and playout, and shares its tokio worker with other
//! calls. A read that waits (a pipe whose writer is slow, a file on a stalled NFS or FUSE
//! mount, ffmpeg fetching a URL) must stall only this thread, never the task. The task's side
//! is a `try_recv` on a std bounded channel (lock-free when it has frames), so
//! [`super::Source::next_frame`] returns at once: a frame, or `Idle` (counted as an underrun).
//!
//! Frames travel in buffers that go back to the thread after use (a second bounded channel),
//! so steady playback allocates nothing per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Frame, Next, Pipeline};
use crate::error::{Error, Result};

/// Frames decoded ahead at most: one second of 20 ms frames (or up to 6 s of 120 ms Opus
/// packets), about 190 KB of stereo PCM. Enough to ride out a short stall of the input; a
/// longer one plays as silence (underruns) while the call goes on.
pub(crate) const AHEAD_FRAMES: usize = 50;

/// How long a file source's constructor waits for the thread to fill its queue, so that the
/// first pulls find frames. Past it the source starts anyway and is `Idle` until the input
/// catches up.
const PRIME_WAIT: Duration = Duration::from_secs(1);

/// A frame moved between threads, in buffers that are reused.
#[derive(Default)]
pub(crate) struct OwnedFrame {
    pcm: Vec<i16>,
    packet: Vec<u8>,
    /// `Some(duration)` when the frame is an Opus packet to send as it is.
    opus_samples: Option<u32>,
}

impl OwnedFrame {
    fn fill(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Pcm(pcm) => {
                self.pcm.clear();
                self.pcm.extend_from_slice(pcm);
                self.opus_samples = None;
            }
            Frame::Opus { packet, samples } => {
                self.packet.clear();
                self.packet.extend_from_slice(packet);
                self.opus_samples = Some(samples);
            }
        }
    }

    pub(crate) fn view(&self) -> Frame<'_> {
        match self.opus_samples {
            Some(samples) => Frame::Opus {
                packet: &self.packet,
                samples,
            },
            None => Frame::Pcm(&self.pcm),
        }
    }
}

enum Msg {
    Frame(OwnedFrame),
    End,
    Failed(Error),
    /// The thread went where seek request `n` asked (frames before this are from before).
    Seeked(u64),
}

/// A seek asked of the thread: its number and where to.
type SeekRequest = Arc<Mutex<Option<(u64, Duration)>>>;

/// The call's side of a source read on a thread.
pub(crate) struct ReadAhead {
    name: String,
    rx: Receiver<Msg>,
    recycle: SyncSender<OwnedFrame>,
    /// The frame handed out by the last pull; its buffer goes back to the thread on the next.
    current: Option<OwnedFrame>,
    skipped: Arc<AtomicU64>,
    seekable: bool,
    seek: SeekRequest,
    /// The last seek asked, and whether its answer is still awaited (frames until then are
    /// dropped: they were decoded before the jump).
    seeks: u64,
    awaiting: bool,
    /// The thread said End or Failed and stopped.
    finished: bool,
}

impl ReadAhead {
    /// Starts the thread. With `prime`, waits (up to [`PRIME_WAIT`]) until the queue is full
    /// or the input ended, so that a file plays from its first pull.
    pub(crate) fn spawn(name: &str, mut pipeline: Pipeline, prime: bool) -> Result<Self> {
        let (tx, rx) = sync_channel::<Msg>(AHEAD_FRAMES);
        let (recycle, recycled) = sync_channel::<OwnedFrame>(AHEAD_FRAMES + 2);
        let (primed_tx, primed_rx) = sync_channel::<()>(1);
        let skipped = Arc::new(AtomicU64::new(0));
        let skipped_thread = skipped.clone();
        let seekable = pipeline.can_seek();
        let seek: SeekRequest = Arc::default();
        let seek_thread = seek.clone();
        std::thread::Builder::new()
            .name("groupcall-source".into())
            .spawn(move || {
                let mut primed = Some(primed_tx);
                let mut signal = || {
                    if let Some(p) = primed.take() {
                        let _ = p.try_send(());
                    }
                };
                loop {
                    // A seek: decoding goes on from the new place, and the call's side learns
                    // where the frames from there begin.
                    let asked = seek_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some((n, to)) = asked {
                        let msg = match pipeline.seek(to) {
                            Ok(()) => Msg::Seeked(n),
                            Err(e) => Msg::Failed(e),
                        };
                        let failed = matches!(msg, Msg::Failed(_));
                        if tx.send(msg).is_err() || failed {
                            return;
                        }
                    }
                    let msg = match pipeline.pull() {
                        Ok(Next::Frame(frame)) => {
                            let mut owned = recycled.try_recv().unwrap_or_default();
                            owned.fill(frame);
                            Msg::Frame(owned)
                        }
                        // Readers block on this thread; one that cannot (a non-blocking
                        // descriptor handed to `Source::reader`) is polled gently.
                        Ok(Next::Idle) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Ok(Next::End) => Msg::End,
                        Err(e) => Msg::Failed(e),
                    };
                    skipped_thread.store(pipeline.skipped(), Ordering::Relaxed);
                    let last = !matches!(msg, Msg::Frame(_));
                    let ended = matches!(msg, Msg::End);
                    match tx.try_send(msg) {
                        Ok(()) => {}
                        Err(TrySendError::Full(msg)) => {
                            signal();
                            // The source was dropped: stop reading (and drop the input).
                            if tx.send(msg).is_err() {
                                return;
                            }
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                    if last {
                        signal();
                        if !(ended && seekable) {
                            return;
                        }
                        // A file that played to its end may still be sought back into: wait
                        // for a seek, or for the source to be dropped (its recycling channel
                        // then disconnects).
                        loop {
                            match recycled.recv_timeout(Duration::from_millis(10)) {
                                Err(RecvTimeoutError::Disconnected) => return,
                                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                            }
                            if seek_thread
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .is_some()
                            {
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|source| Error::ReadInput {
                input: name.to_owned(),
                source,
            })?;
        if prime {
            // A timeout is not an error: a slow input starts as underruns and catches up.
            let _ = primed_rx.recv_timeout(PRIME_WAIT);
        }
        Ok(ReadAhead {
            name: name.to_owned(),
            rx,
            recycle,
            current: None,
            skipped,
            seekable,
            seek,
            seeks: 0,
            awaiting: false,
            finished: false,
        })
    }

    /// Asks the thread to go to `to`. Frames already decoded are dropped as they come; until
    /// the thread answers, pulls are `Idle`.
    pub(crate) fn seek(&mut self, to: Duration) -> Result<()> {
        let reason = if !self.seekable {
            "only WAV files and files decoded in-process can seek, not streams, ffmpeg or Ogg/Opus passthrough"
        } else if self.finished {
            "it has ended; play it again as a new source"
        } else {
            ""
        };
        if !reason.is_empty() {
            return Err(Error::CannotSeek {
                input: self.name.clone(),
                reason: reason.into(),
            });
        }
        self.seeks += 1;
        self.awaiting = true;
        *self.seek.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.seeks, to));
        Ok(())
    }

    /// The next frame without waiting: `Idle` when the thread has none ready.
    pub(crate) fn pull(&mut self) -> Result<Next<'_>> {
        if let Some(done) = self.current.take() {
            // A full return queue only means the thread allocates one buffer more.
            let _ = self.recycle.try_send(done);
        }
        while self.awaiting {
            match self.rx.try_recv() {
                // Decoded before the jump.
                Ok(Msg::Frame(old)) => {
                    let _ = self.recycle.try_send(old);
                }
                Ok(Msg::Seeked(n)) => self.awaiting = n != self.seeks,
                // The input ended before the thread saw the request; it answers it next.
                Ok(Msg::End) => {}
                Ok(Msg::Failed(e)) => {
                    self.finished = true;
                    self.awaiting = false;
                    return Err(e);
                }
                Err(TryRecvError::Empty) => return Ok(Next::Idle),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        match self.rx.try_recv() {
            Ok(Msg::Frame(frame)) => Ok(Next::Frame(self.current.insert(frame).view())),
            Ok(Msg::Seeked(_)) => Ok(Next::Idle),
            // A file's thread stays, in case it is sought back into.
            Ok(Msg::End) => {
                self.finished = !self.seekable;
                Ok(Next::End)
            }
            Ok(Msg::Failed(e)) => {
                self.finished = true;
                Err(e)
            }
            Err(TryRecvError::Empty) => Ok(Next::Idle),
            // The thread always says End or Failed before it stops, unless it panicked.
            Err(TryRecvError::Disconnected) => Err(Error::ReadInput {
                input: self.name.clone(),
                source: std::io::Error::other("the thread reading it stopped unexpectedly"),
            }),
        }
    }

    /// Packets the pipeline skipped so far (Ogg/Opus packets no decoder accepts).
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}
