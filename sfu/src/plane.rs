//! The seam between the control plane (this crate's calls and HTTP API) and the media plane (the
//! UDP socket that runs ICE-lite, DTLS and SRTP per participant and forwards RTP).
//!
//! The control plane decides *who* is in a call; the media plane owns the connections. They
//! meet at two points: a join asks the media plane for a connection and its answer
//! ([`MediaPlane`]), and the media plane reports what only it can see, a participant gone
//! silent, as [`MediaEvent`]s on a channel that the server turns into a removal and an update.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use groupcall_media::{JoinPayload, RtcAnswer};
use tokio::sync::mpsc;

use crate::calls::CallId;
use crate::error::Result;

/// What the control plane needs from the media plane.
///
/// Both methods are called with the control plane's state locked, so that the roster and the
/// connections change together (a leave of source X can never remove a later join's X). They
/// must return quickly (no waiting on the network) and must not call back into the server;
/// reporting through [`MediaEvents`] is fine, it never blocks.
pub trait MediaPlane: Send + Sync + 'static {
    /// Sets up the connection of a participant whose join passed every check, keyed by
    /// `(call, payload.audio_ssrc())`, and returns the answer for its `params`
    /// (`updateGroupCallConnection.params`). A connection that already has this key (the same
    /// user rejoining with the same source) is replaced. An error refuses the join with
    /// `GROUPCALL_ADD_PARTICIPANTS_FAILED` (use [`crate::Error::media`]) and leaves the roster as
    /// it was.
    fn add_participant(&self, call: CallId, payload: &JoinPayload) -> Result<RtcAnswer>;

    /// Sets up a participant's screen-share connection (`joinGroupCallPresentation`), keyed
    /// by `(call, payload.audio_ssrc())` like a main connection, and returns its answer. It
    /// only sends. A media plane without screen sharing refuses it, as this default does.
    fn add_presentation(&self, call: CallId, payload: &JoinPayload) -> Result<RtcAnswer> {
        let _ = (call, payload);
        Err(crate::Error::media(
            "this media plane does not carry screen sharing; use the UDP media plane of `groupcall serve`",
        ))
    }

    /// Drops the connection of `(call, source)`: the participant left, was replaced by a rejoin,
    /// was reported silent, or the call was discarded. Unknown keys are ignored (a connection
    /// may already be gone).
    fn remove_participant(&self, call: CallId, source: u32);
}

/// What the media plane reports to the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// No STUN from this participant's connection for [`STUN_SILENCE_TIMEOUT`]: its client is
    /// gone without leaving. The server removes it and publishes it as left.
    Silent { call: CallId, source: u32 },
}

/// The media plane's end of the event channel: cheap to clone, usable from any thread, never
/// blocks.
#[derive(Clone, Debug)]
pub struct MediaEvents(mpsc::UnboundedSender<MediaEvent>);

impl MediaEvents {
    /// Sends an event. False when the server has stopped and nobody listens any more.
    pub fn report(&self, event: MediaEvent) -> bool {
        self.0.send(event).is_ok()
    }
}

/// The server's end of the event channel: give it to [`crate::ServerConfig`].
#[derive(Debug)]
pub struct MediaEventReceiver(pub(crate) mpsc::UnboundedReceiver<MediaEvent>);

/// A channel for [`MediaEvent`]s: the sender goes to the media plane, the receiver to the server.
pub fn media_events() -> (MediaEvents, MediaEventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (MediaEvents(tx), MediaEventReceiver(rx))
}

/// How long a connection may go without STUN before it counts as gone. libwebrtc clients send
/// a Binding Request about every 2.5 s even when muted (docs/protocol.md §3), so 30 s is a dozen
/// missed keepalives: a client that is still there never hits it.
pub const STUN_SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sans-IO bookkeeping of when each connection last sent STUN, for the media plane: it calls
/// [`heard`](Self::heard) on every valid Binding Request (and once when the connection is
/// added, so that a client that never shows up is also removed), [`forget`](Self::forget) when
/// it drops a connection, and [`poll`](Self::poll) at [`next_deadline`](Self::next_deadline),
/// reporting what `poll` returns through [`MediaEvents`].
#[derive(Debug)]
pub struct SilenceTracker {
    timeout: Duration,
    last_heard: HashMap<(CallId, u32), Instant>,
}

impl Default for SilenceTracker {
    fn default() -> Self {
        Self::new(STUN_SILENCE_TIMEOUT)
    }
}

impl SilenceTracker {
    pub fn new(timeout: Duration) -> Self {
        SilenceTracker {
            timeout,
            last_heard: HashMap::new(),
        }
    }

    /// Records STUN from `(call, source)` at `now`; starts tracking it if it was not tracked.
    pub fn heard(&mut self, call: CallId, source: u32, now: Instant) {
        let t = self.last_heard.entry((call, source)).or_insert(now);
        *t = (*t).max(now);
    }

    /// Stops tracking a connection that was dropped.
    pub fn forget(&mut self, call: CallId, source: u32) {
        self.last_heard.remove(&(call, source));
    }

    /// The connections silent for the whole timeout at `now`, ordered by call and source; they
    /// are no longer tracked afterwards, so each is reported once.
    pub fn poll(&mut self, now: Instant) -> Vec<MediaEvent> {
        let timeout = self.timeout;
        let mut expired: Vec<(CallId, u32)> = self
            .last_heard
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        expired.sort_unstable();
        for k in &expired {
            self.last_heard.remove(k);
        }
        expired
            .into_iter()
            .map(|(call, source)| MediaEvent::Silent { call, source })
            .collect()
    }

    /// When the next connection will have been silent for the whole timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.last_heard.values().min().map(|t| *t + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_reported_once_after_the_timeout_and_stun_postpones_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = SilenceTracker::default();
        assert_eq!(t.next_deadline(), None);
        t.heard(CallId(1), 10, t0);
        t.heard(CallId(1), 20, t0);
        t.heard(CallId(2), 10, t0 + s(5));
        assert_eq!(t.next_deadline(), Some(t0 + s(30)));

        t.heard(CallId(1), 20, t0 + s(29));
        // A late, out-of-order timestamp does not move the last-heard time back.
        t.heard(CallId(1), 20, t0 + s(1));
        assert!(t.poll(t0 + s(29)).is_empty());
        assert_eq!(
            t.poll(t0 + s(30)),
            [MediaEvent::Silent {
                call: CallId(1),
                source: 10
            }]
        );
        assert!(t.poll(t0 + s(31)).is_empty(), "reported once");
        assert_eq!(t.next_deadline(), Some(t0 + s(35)));

        t.forget(CallId(2), 10);
        assert_eq!(t.next_deadline(), Some(t0 + s(59)));
        assert_eq!(
            t.poll(t0 + s(100)),
            [MediaEvent::Silent {
                call: CallId(1),
                source: 20
            }]
        );
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn events_reach_the_receiver_until_it_is_dropped() {
        let (tx, mut rx) = media_events();
        let ev = MediaEvent::Silent {
            call: CallId(3),
            source: 7,
        };
        assert!(tx.clone().report(ev.clone()));
        assert_eq!(rx.0.try_recv().unwrap(), ev);
        drop(rx);
        assert!(!tx.report(ev));
    }
}
