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
//!
//! The thread fills the queue in batches: once it is full, the thread sleeps until the call
//! has taken half of it, instead of waking for every frame taken (a blocking send would). A
//! bot host runs one such thread per playing call, and a wake-up every 20 ms per call was a
//! measurable share of its CPU (`docs/performance.md`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use super::{Frame, Next, Pipeline};
use crate::error::{Error, Result};

/// Frames decoded ahead at most: one second of 20 ms frames (or up to 6 s of 120 ms Opus
/// packets), about 190 KB of stereo PCM. Enough to ride out a short stall of the input; a
/// longer one plays as silence (underruns) while the call goes on.
pub(crate) const AHEAD_FRAMES: usize = 50;

/// A full queue wakes its thread again once the call has taken it down to this many frames.
const LOW_WATER: usize = AHEAD_FRAMES / 2;

/// A sleeping thread looks around this often even if nobody woke it: a backstop only, every
/// wake-up it waits for (frames taken, a seek, the source dropped) unparks it.
const BACKSTOP: Duration = Duration::from_secs(1);

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

/// What the thread and the call's side share to sleep and wake without a lock.
#[derive(Default)]
struct Gate {
    /// Messages in the queue (counted before they go in, so never below the truth).
    queued: AtomicUsize,
    /// The thread is asleep (or about to be) on a full queue or an ended file.
    waiting: AtomicBool,
    /// The source was dropped.
    closed: AtomicBool,
}

impl Gate {
    /// Puts `msg` in the queue; on a full one, sleeps until the call has taken it down to
    /// [`LOW_WATER`]. `false` when the source is gone.
    fn send(&self, tx: &SyncSender<Msg>, mut msg: Msg, mut on_full: impl FnMut()) -> bool {
        loop {
            self.queued.fetch_add(1, Ordering::SeqCst);
            match tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    msg = m;
                    on_full();
                    self.sleep(|| self.queued.load(Ordering::SeqCst) > LOW_WATER);
                    if self.closed.load(Ordering::SeqCst) {
                        return false;
                    }
                }
            }
        }
    }

    /// Sleeps while `still` holds, saying so first (a wake-up between the check and the
    /// sleep is kept by the thread's park token, so none is lost).
    fn sleep(&self, still: impl Fn() -> bool) {
        self.waiting.store(true, Ordering::SeqCst);
        if still() && !self.closed.load(Ordering::SeqCst) {
            std::thread::park_timeout(BACKSTOP);
        }
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// The call's side: wakes the thread if it sleeps.
    fn wake(&self, thread: &Thread) {
        if self.waiting.swap(false, Ordering::SeqCst) {
            thread.unpark();
        }
    }
}

/// The call's side of a source read on a thread.
pub(crate) struct ReadAhead {
    name: String,
    rx: Receiver<Msg>,
    recycle: SyncSender<OwnedFrame>,
    gate: Arc<Gate>,
    thread: Thread,
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
        let gate = Arc::new(Gate::default());
        let gate_thread = gate.clone();
        let handle = std::thread::Builder::new()
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
                        if !gate_thread.send(&tx, msg, &mut signal) || failed {
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
                    // The source was dropped: stop reading (and drop the input).
                    if !gate_thread.send(&tx, msg, &mut signal) {
                        return;
                    }
                    if last {
                        signal();
                        if !(ended && seekable) {
                            return;
                        }
                        // A file that played to its end may still be sought back into: sleep
                        // until a seek, or until the source is dropped.
                        loop {
                            let asked = || {
                                seek_thread
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .is_some()
                            };
                            gate_thread.sleep(|| !asked());
                            if gate_thread.closed.load(Ordering::SeqCst) {
                                return;
                            }
                            if asked() {
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
            gate,
            thread: handle.thread().clone(),
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
        // A thread asleep on a full queue or an ended file goes at once.
        self.thread.unpark();
        Ok(())
    }

    /// One message taken from the queue: the thread may wake for the next batch.
    fn took(&self) {
        let left = self.gate.queued.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= LOW_WATER {
            self.gate.wake(&self.thread);
        }
    }

    /// The next frame without waiting: `Idle` when the thread has none ready.
    pub(crate) fn pull(&mut self) -> Result<Next<'_>> {
        if let Some(done) = self.current.take() {
            // A full return queue only means the thread allocates one buffer more.
            let _ = self.recycle.try_send(done);
        }
        while self.awaiting {
            let got = self.rx.try_recv();
            if got.is_ok() {
                self.took();
            }
            match got {
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
        let got = self.rx.try_recv();
        if got.is_ok() {
            self.took();
        }
        match got {
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

impl Drop for ReadAhead {
    /// The thread may sleep on a full queue or an ended file: tell it to go now (it then
    /// drops the input, which kills and reaps an ffmpeg child).
    fn drop(&mut self) {
        self.gate.closed.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PcmReader, ReadOutcome, SourceOptions};
    use super::*;
    use crate::audio::Channels;
    use std::time::Instant;

    /// An endless input that counts the samples read from it.
    struct Counting(Arc<AtomicUsize>);

    impl PcmReader for Counting {
        fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
            out.fill(1000);
            self.0.fetch_add(out.len(), Ordering::SeqCst);
            Ok(ReadOutcome::Samples(out.len()))
        }
        fn rewind(&mut self) -> Result<()> {
            Ok(())
        }
    }

    /// The count once it has not moved for 100 ms.
    fn settled(read: &AtomicUsize) -> usize {
        let mut last = read.load(Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = read.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// A full queue does not wake its thread for each frame taken (a blocking send would, 50
    /// times a second per playing call): the thread reads nothing more until half the queue is
    /// gone, then fills it again in one go.
    #[test]
    fn a_full_queue_is_refilled_in_batches_not_frame_by_frame() {
        let read = Arc::new(AtomicUsize::new(0));
        let options = SourceOptions {
            channels: Channels::Mono,
            looping: false,
        };
        let pipeline = Pipeline::pcm(
            "counting",
            Box::new(Counting(read.clone())),
            48_000,
            1,
            options,
        )
        .unwrap();
        let mut ahead = ReadAhead::spawn("counting", pipeline, true).unwrap();
        let full = settled(&read);
        assert!(full >= AHEAD_FRAMES * 960, "only {full} samples read ahead");

        // On a busy machine the thread may still be filling: wait for each frame a little.
        let take = |ahead: &mut ReadAhead, n: usize| {
            for _ in 0..n {
                let deadline = Instant::now() + Duration::from_secs(2);
                while !matches!(ahead.pull().unwrap(), Next::Frame(_)) {
                    assert!(Instant::now() < deadline, "no frame within 2 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        take(&mut ahead, AHEAD_FRAMES - LOW_WATER - 1);
        assert_eq!(
            settled(&read),
            full,
            "the thread read on before the low-water mark"
        );

        take(&mut ahead, 2);
        let deadline = Instant::now() + Duration::from_secs(2);
        while read.load(Ordering::SeqCst) < full + LOW_WATER * 960 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let refilled = settled(&read) - full;
        assert!(
            refilled >= LOW_WATER * 960,
            "only {refilled} samples read after the queue fell to its low-water mark"
        );
        // And it goes on.
        take(&mut ahead, AHEAD_FRAMES);
    }
}
