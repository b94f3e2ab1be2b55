//! Frames the application pushes (a TTS engine, a synthesiser, another call's audio).
//!
//! A bounded std channel: the application thread blocks (or gets [`Error::PushFull`]) when it
//! runs ahead of real time, and the source never blocks, answering `Idle` when nothing came.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};

use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

/// The application's handle for pushing audio into a [`super::Source::pushed`] source.
/// Cloneable; the source ends once every clone is dropped and what was pushed has been played.
#[derive(Clone, Debug)]
pub struct FramePusher {
    tx: SyncSender<Vec<i16>>,
    channels: usize,
    capacity: usize,
}

impl FramePusher {
    /// Pushes interleaved 48 kHz samples (any whole number of frames), waiting while the
    /// queue is full.
    pub fn push(&self, samples: Vec<i16>) -> Result<()> {
        self.check(&samples)?;
        self.tx.send(samples).map_err(|_| Error::SourceClosed)
    }

    /// Pushes without waiting: [`Error::PushFull`] when the queue is full.
    pub fn try_push(&self, samples: Vec<i16>) -> Result<()> {
        self.check(&samples)?;
        self.tx.try_send(samples).map_err(|e| match e {
            TrySendError::Full(_) => Error::PushFull {
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => Error::SourceClosed,
        })
    }

    fn check(&self, samples: &[i16]) -> Result<()> {
        if samples.len() % self.channels != 0 {
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
    current: Vec<i16>,
    pos: usize,
}

pub(crate) fn channel(capacity: usize, channels: usize) -> (Pushed, FramePusher) {
    let (tx, rx) = sync_channel(capacity);
    (
        Pushed {
            rx,
            current: Vec::new(),
            pos: 0,
        },
        FramePusher {
            tx,
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
