//! Received frames handed to the application: a bounded channel or a callback.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use crate::audio::{Channels, FrameKind};
use crate::error::{Error, Result};

/// A Telegram peer id (user, or chat/channel when joined as one), as the roster reports it.
pub type PeerId = i64;

/// One speaker's 20 ms of decoded audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedFrame {
    pub ssrc: u32,
    /// The participant, once the roster has named the SSRC's owner.
    pub peer: Option<PeerId>,
    pub kind: FrameKind,
    pub channels: Channels,
    /// 960 samples per channel at 48 kHz, interleaved.
    pub pcm: Vec<i16>,
}

/// How the application takes received frames.
pub enum AppSink {
    /// A bounded queue. The engine never waits for the application: a full queue is an
    /// [`Error::AppSinkFull`] for that frame.
    Channel {
        tx: SyncSender<ReceivedFrame>,
        capacity: usize,
    },
    /// Called on the engine's audio thread: must return quickly.
    Callback(Box<dyn FnMut(ReceivedFrame) + Send>),
}

impl std::fmt::Debug for AppSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppSink::Channel { capacity, .. } => write!(f, "AppSink::Channel({capacity})"),
            AppSink::Callback(_) => write!(f, "AppSink::Callback"),
        }
    }
}

impl AppSink {
    /// A queue of `capacity` frames (50 = one second of one speaker) and its receiving end.
    pub fn channel(capacity: usize) -> (Self, Receiver<ReceivedFrame>) {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel(capacity);
        (AppSink::Channel { tx, capacity }, rx)
    }

    pub fn callback(f: impl FnMut(ReceivedFrame) + Send + 'static) -> Self {
        AppSink::Callback(Box::new(f))
    }

    pub fn deliver(&mut self, frame: ReceivedFrame) -> Result<()> {
        match self {
            AppSink::Channel { tx, capacity } => {
                let ssrc = frame.ssrc;
                tx.try_send(frame).map_err(|e| match e {
                    TrySendError::Full(_) => Error::AppSinkFull {
                        capacity: *capacity,
                        ssrc,
                    },
                    TrySendError::Disconnected(_) => Error::AppSinkClosed { ssrc },
                })
            }
            AppSink::Callback(f) => {
                f(frame);
                Ok(())
            }
        }
    }
}
