//! The sending side of a call: the source, paced in 20 ms ticks into the connection's Opus
//! sender, with mute (pulled, not sent), pause (not pulled) and the source's end or failure
//! reported once.

use std::time::{Instant, SystemTime};

use crate::audio::{Next, Source, FRAME_SAMPLES};
use crate::call::CallEvent;
use crate::connection::Connection;
use crate::error::SharedError;
use crate::events::EventSender;

pub(crate) struct Outgoing {
    pub source: Option<Source>,
    pub muted: bool,
    pub paused: bool,
    /// Samples (per channel, 48 kHz) the source may still send this tick; Opus packets from a
    /// file can be 10-120 ms, so pacing counts samples, not packets.
    pub budget: i64,
    /// Wall-clock time the current source's first frame was sent: where its timeline starts,
    /// for lining up with recordings elsewhere (mouth-to-ear measurements, transcripts).
    pub started_at: Option<SystemTime>,
}

impl Outgoing {
    pub(crate) fn new(source: Option<Source>, muted: bool) -> Self {
        Outgoing {
            source,
            muted,
            paused: false,
            budget: 0,
            started_at: None,
        }
    }

    pub(crate) fn set_source(&mut self, source: Option<Source>) {
        self.source = source;
        self.budget = 0;
        self.started_at = None;
    }

    /// One tick's worth of the source: pulled only while connected, so nothing is lost while
    /// (re)connecting; pulled but not sent while muted; not pulled while paused.
    pub(crate) fn tick(&mut self, now: Instant, c: &mut Connection, events: &EventSender) {
        if !c.transport.is_connected() {
            return;
        }
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if self.paused {
            c.sender.skip(FRAME_SAMPLES as u32);
            return;
        }
        self.budget = (self.budget + FRAME_SAMPLES as i64).min(FRAME_SAMPLES as i64);
        while self.budget > 0 {
            let channels = source.channels();
            match source.next_frame() {
                Ok(Next::Frame(frame)) => {
                    let samples = frame.samples(channels);
                    self.budget -= i64::from(samples);
                    if self.muted {
                        c.sender.skip(samples);
                        continue;
                    }
                    match c.sender.send(frame) {
                        Ok(Some(rtp)) => {
                            self.started_at.get_or_insert_with(SystemTime::now);
                            if let Err(e) = c.transport.send_rtp(now, &rtp) {
                                tracing::debug!("RTP not sent: {e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("frame not sent: {e}");
                        }
                    }
                }
                Ok(Next::Idle) => {
                    self.budget = 0;
                    c.sender.skip(FRAME_SAMPLES as u32);
                }
                Ok(Next::End) => {
                    let name = source.name().to_owned();
                    self.source = None;
                    self.budget = 0;
                    events.send(CallEvent::SourceEnded { source: name });
                    return;
                }
                Err(e) => {
                    let name = source.name().to_owned();
                    self.source = None;
                    self.budget = 0;
                    events.send(CallEvent::SourceError {
                        source: name,
                        error: SharedError::from(e),
                    });
                    return;
                }
            }
        }
    }
}
