//! The sending side of a call: the source, paced in 20 ms ticks into the connection's Opus
//! sender, with mute (pulled, not sent), pause (not pulled) and the source's end or failure
//! reported once. Sources queued behind it follow within the same tick: no gap, no silence
//! between tracks.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use crate::audio::{Frame, LoudnessConfig, Next, Normalizer, Source};
use crate::call::CallEvent;
use crate::connection::Connection;
use crate::error::{Error, Result, SharedError};
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
    /// Sources to play after this one, in order ([`crate::Call::enqueue`]).
    pub queue: VecDeque<Source>,
    loudness: Option<LoudnessConfig>,
    /// Made on the first PCM frame (it needs the source's channel count).
    normalizer: Option<Normalizer>,
}

/// Sources a call queues at most. Each queued source has its input open and its read-ahead
/// thread running from the moment it was made, so a queue holds the next tracks, not a library.
const MAX_QUEUE: usize = 64;

impl Outgoing {
    pub(crate) fn new(
        source: Option<Source>,
        muted: bool,
        loudness: Option<LoudnessConfig>,
    ) -> Self {
        Outgoing {
            source,
            muted,
            paused: false,
            budget: 0,
            started_at: None,
            queue: VecDeque::new(),
            loudness,
            normalizer: None,
        }
    }

    pub(crate) fn set_source(&mut self, source: Option<Source>) {
        self.source = source;
        self.budget = 0;
        self.started_at = None;
        self.new_track();
    }

    /// The loudness of a new track is measured afresh.
    fn new_track(&mut self) {
        if let Some(n) = &mut self.normalizer {
            n.new_track();
        }
    }

    /// Plays `source` after the queued ones, or at once when nothing plays.
    pub(crate) fn enqueue(&mut self, source: Source) -> Result<()> {
        if self.source.is_none() {
            self.set_source(Some(source));
        } else if self.queue.len() >= MAX_QUEUE {
            return Err(Error::QueueFull {
                capacity: MAX_QUEUE,
            });
        } else {
            self.queue.push_back(source);
        }
        Ok(())
    }

    /// The next queued source replaces the current one now. The skipped one reports its end
    /// like one that played out, so an application that counts ends (to refill its queue,
    /// to leave after the last track) sees exactly one per source either way.
    pub(crate) fn skip(&mut self, events: &EventSender) {
        if let Some(s) = &self.source {
            events.send(CallEvent::SourceEnded {
                source: s.name().to_owned(),
            });
        }
        let next = self.queue.pop_front();
        self.set_source(next);
    }

    /// The current source finished: the next queued one takes over within this tick.
    fn next_in_queue(&mut self) -> bool {
        self.source = self.queue.pop_front();
        self.started_at = None;
        self.new_track();
        self.source.is_some()
    }

    /// One tick's worth of the source (`tick_samples` per channel: 20 ms, or a whole 40 or 60 ms
    /// packet when the call ticks once per packet): pulled only while connected, so nothing is
    /// lost while (re)connecting; pulled but not sent while muted; not pulled while paused.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        c: &mut Connection,
        events: &EventSender,
        tick_samples: i64,
    ) {
        if !c.transport.is_connected() {
            return;
        }
        if self.source.is_none() {
            return;
        }
        if self.paused {
            c.sender.skip(tick_samples as u32);
            return;
        }
        self.budget = (self.budget + tick_samples).min(tick_samples);
        while self.budget > 0 {
            let Some(source) = self.source.as_mut() else {
                return;
            };
            let channels = source.channels();
            match source.next_frame() {
                Ok(Next::Frame(frame)) => {
                    let samples = frame.samples(channels);
                    self.budget -= i64::from(samples);
                    if self.muted {
                        c.sender.skip(samples);
                        continue;
                    }
                    let frame = match (frame, self.loudness) {
                        (Frame::Pcm(pcm), Some(config)) => {
                            let n = match &mut self.normalizer {
                                Some(n) if n.channels() == channels.count() => Some(n),
                                slot => Normalizer::new(config, channels)
                                    .inspect_err(|e| tracing::warn!("no loudness normalising: {e}"))
                                    .ok()
                                    .map(|n| slot.insert(n)),
                            };
                            match n {
                                Some(n) => Frame::Pcm(n.process(pcm)),
                                None => Frame::Pcm(pcm),
                            }
                        }
                        (f, _) => f,
                    };
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
                    // The rest of the tick is a gap on the timeline.
                    c.sender.skip(self.budget as u32);
                    self.budget = 0;
                }
                Ok(Next::End) => {
                    let name = source.name().to_owned();
                    events.send(CallEvent::SourceEnded { source: name });
                    if !self.next_in_queue() {
                        self.budget = 0;
                        return;
                    }
                    // The rest of this tick's budget comes from the next track: no gap.
                    continue;
                }
                Err(e) => {
                    let name = source.name().to_owned();
                    events.send(CallEvent::SourceError {
                        source: name,
                        error: SharedError::from(e),
                    });
                    // A broken track does not stop the queue.
                    if !self.next_in_queue() {
                        self.budget = 0;
                        return;
                    }
                    continue;
                }
            }
        }
    }
}
