//! Frames the application pushes (a TTS engine, a synthesiser, another call's audio).
//!
//! A bounded std channel of chunks: the call's task takes from it with `try_recv` (lock-free,
//! never waiting) and answers `Idle` when nothing came. The application gets backpressure
//! instead of growth or silent loss: [`FramePusher::push`] awaits room, [`FramePusher::try_push`]
//! says [`Error::PushFull`], [`FramePusher::push_blocking`] waits on a plain thread.
//!
//! The async wait is a `tokio::sync::Notify` the task pokes after each chunk it takes:
//! `notify_one` is an atomic operation when nobody waits, so the pull path takes no lock
//! unless a pusher is actually waiting.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use tokio::sync::Notify;

use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

/// The application's handle for pushing audio into a [`super::Source::pushed`] source.
/// Cloneable; the source ends once every clone is dropped and what was pushed has been played.
///
/// The queue holds at most [`FramePusher::capacity`] chunks, whatever their length: push
/// 20 ms chunks (960 samples per channel) and a capacity of 50 is one second ahead.
#[derive(Clone, Debug)]
pub struct FramePusher {
    tx: SyncSender<Vec<i16>>,
    room: Arc<Notify>,
    channels: usize,
    capacity: usize,
}

impl FramePusher {
    /// Pushes interleaved 48 kHz samples (any whole number of frames), waiting (without
    /// blocking the thread) while the queue is full. [`Error::SourceClosed`] once the source
    /// is gone. Cancel-safe: a push dropped while waiting has queued nothing.
    pub async fn push(&self, samples: Vec<i16>) -> Result<()> {
        self.check(&samples)?;
        let mut samples = samples;
        loop {
            // Registered before trying, so that room made between the try and the wait wakes
            // this push rather than being missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.tx.try_send(samples) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(Error::SourceClosed),
                Err(TrySendError::Full(back)) => samples = back,
            }
            room.await;
        }
    }

    /// Pushes without waiting: [`Error::PushFull`] when the queue is full (nothing is queued
    /// then; push the same samples again later).
    pub fn try_push(&self, samples: Vec<i16>) -> Result<()> {
        self.check(&samples)?;
        self.tx.try_send(samples).map_err(|e| match e {
            TrySendError::Full(_) => Error::PushFull {
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => Error::SourceClosed,
        })
    }

    /// Pushes from a plain thread, blocking it while the queue is full. Never call this on an
    /// async runtime's thread: use [`FramePusher::push`] there.
    pub fn push_blocking(&self, samples: Vec<i16>) -> Result<()> {
        self.check(&samples)?;
        self.tx.send(samples).map_err(|_| Error::SourceClosed)
    }

    /// The most chunks that wait in the queue.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn check(&self, samples: &[i16]) -> Result<()> {
        if !samples.len().is_multiple_of(self.channels) {
            return Err(Error::PushedSamples {
                got: samples.len(),
                channels: self.channels,
            });
        }
        Ok(())
    }
}

pub(crate) struct Pushed {
    rx: Receiver<Vec<i16>>,
    room: Arc<Notify>,
    current: Vec<i16>,
    pos: usize,
}

impl Drop for Pushed {
    fn drop(&mut self) {
        // Closed before waking the waiting pushers, so that their next try finds it closed
        // (a pusher on another thread may retry at once).
        drop(std::mem::replace(&mut self.rx, sync_channel(0).1));
        self.room.notify_waiters();
    }
}

pub(crate) fn channel(capacity: usize, channels: usize) -> (Pushed, FramePusher) {
    let (tx, rx) = sync_channel(capacity);
    let room = Arc::new(Notify::new());
    (
        Pushed {
            rx,
            room: room.clone(),
            current: Vec::new(),
            pos: 0,
        },
        FramePusher {
            tx,
            room,
            channels,
            capacity,
        },
    )
}

impl PcmReader for Pushed {
    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
        while self.pos == self.current.len() {
            match self.rx.try_recv() {
                Ok(v) => {
                    self.current = v;
                    self.pos = 0;
                    self.room.notify_one();
                }
                Err(TryRecvError::Empty) => return Ok(ReadOutcome::Pending),
                Err(TryRecvError::Disconnected) => return Ok(ReadOutcome::End),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(ReadOutcome::Samples(n))
    }

    fn rewind(&mut self) -> Result<()> {
        Err(Error::CannotLoop {
            input: "pushed frames".into(),
        })
    }
}
