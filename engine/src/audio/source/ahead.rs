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
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
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
}

/// The call's side of a source read on a thread.
pub(crate) struct ReadAhead {
    name: String,
    rx: Receiver<Msg>,
    recycle: SyncSender<OwnedFrame>,
    /// The frame handed out by the last pull; its buffer goes back to the thread on the next.
    current: Option<OwnedFrame>,
    skipped: Arc<AtomicU64>,
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
                        return;
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
        })
    }

    /// The next frame without waiting: `Idle` when the thread has none ready.
    pub(crate) fn pull(&mut self) -> Result<Next<'_>> {
        if let Some(done) = self.current.take() {
            // A full return queue only means the thread allocates one buffer more.
            let _ = self.recycle.try_send(done);
        }
        match self.rx.try_recv() {
            Ok(Msg::Frame(frame)) => Ok(Next::Frame(self.current.insert(frame).view())),
            Ok(Msg::End) => Ok(Next::End),
            Ok(Msg::Failed(e)) => Err(e),
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
