//! The update fan-out shared by both backends.
//!
//! A backend's reader (the MTProto update loop, or one server-sent-event stream per call) hands
//! every update to the `UpdateHub`. The hub derives the self-related events the engine acts on
//! (removed by the server, joined from another device) from what it knows about this process's
//! own joins, and broadcasts everything to every [`UpdateStream`].
//!
//! The join answer arrives twice on Telegram: in the `Updates` the join request returns, and again
//! in the update stream. `join` returns it; the hub remembers it so that the stream does not hand
//! the same answer out a second time as if the server had sent a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::types::{CallId, Participant, PeerId, SignalingUpdate};

/// How many updates a slow subscriber may fall behind before it gets [`SignalingUpdate::Lagged`].
const CHANNEL_CAPACITY: usize = 1024;
/// How many answers `join` returned are remembered for de-duplication.
const LEDGER_LEN: usize = 16;

/// What this process knows about its own presence in a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinedState {
    /// Every SSRC the accepted payload declared.
    pub sources: Vec<u32>,
    /// The peer the participant appears as, when known (join-as peer, or the account).
    pub as_peer: Option<PeerId>,
}

#[derive(Default)]
struct HubState {
    ledger: VecDeque<String>,
    joined: HashMap<i64, JoinedState>,
}

/// Shared between a backend, its reader tasks and every subscriber.
#[derive(Clone)]
pub(crate) struct UpdateHub {
    tx: broadcast::Sender<SignalingUpdate>,
    state: Arc<Mutex<HubState>>,
}

impl UpdateHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        UpdateHub {
            tx,
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        // A poisoned lock only means a panic elsewhere while holding it; the maps stay usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> UpdateStream {
        UpdateStream {
            rx: self.tx.subscribe(),
            hub: self.clone(),
        }
    }

    /// Broadcasts one update as it is. Having no subscriber is not an error: nobody listens.
    pub fn publish(&self, update: SignalingUpdate) {
        let _ = self.tx.send(update);
    }

    /// Broadcasts a participant list change, followed by the self events it implies.
    pub fn publish_participants(&self, call: CallId, version: i32, participants: Vec<Participant>) {
        let derived = {
            let state = self.state();
            state
                .joined
                .get(&call.id)
                .map(|joined| self_events(call, joined, &participants))
                .unwrap_or_default()
        };
        self.publish(SignalingUpdate::Participants {
            call,
            version,
            participants,
        });
        for d in derived {
            self.publish(d);
        }
    }

    /// Records this process's accepted join, so that later updates about its own entry can be
    /// told apart from another device's.
    pub fn set_joined(&self, call: CallId, joined: JoinedState) {
        self.state().joined.insert(call.id, joined);
    }

    /// Marks the sources of a join about to be sent as this process's own, before the server
    /// answers: its update announcing them can arrive before the join's reply, and must not be
    /// taken for another device (a rejoin would otherwise end itself as "joined elsewhere").
    pub fn expect_sources(&self, call_id: i64, sources: &[u32]) {
        let mut state = self.state();
        let entry = state.joined.entry(call_id).or_insert_with(|| JoinedState {
            sources: Vec::new(),
            as_peer: None,
        });
        for s in sources {
            if !entry.sources.contains(s) {
                entry.sources.push(*s);
            }
        }
    }

    /// Forgets a join (after leaving), so that the server's "left" entry is not read as a removal.
    pub fn clear_joined(&self, call_id: i64) -> Option<JoinedState> {
        self.state().joined.remove(&call_id)
    }

    pub fn joined(&self, call_id: i64) -> Option<JoinedState> {
        self.state().joined.get(&call_id).cloned()
    }

    /// Remembers an answer `join` returned, so the stream does not deliver it again.
    pub fn record_answer(&self, params: &str) {
        let mut state = self.state();
        if state.ledger.iter().any(|p| p == params) {
            return;
        }
        if state.ledger.len() == LEDGER_LEN {
            state.ledger.pop_front();
        }
        state.ledger.push_back(params.to_owned());
    }

    fn answer_was_returned(&self, params: &str) -> bool {
        self.state().ledger.iter().any(|p| p == params)
    }
}

/// The self events a participant list implies for a call this process joined
/// (docs/protocol.md §7.4, tdesktop `applySelfUpdate`).
fn self_events(
    call: CallId,
    joined: &JoinedState,
    participants: &[Participant],
) -> Vec<SignalingUpdate> {
    let mut out = Vec::new();
    for p in participants {
        let mine = p.is_self || joined.as_peer == Some(p.peer);
        if !mine {
            continue;
        }
        let ours = joined.sources.contains(&p.source);
        if p.left && ours {
            out.push(SignalingUpdate::SelfRemoved {
                call,
                source: p.source,
            });
        } else if !p.left && !ours {
            out.push(SignalingUpdate::JoinedElsewhere {
                call,
                source: p.source,
            });
        }
    }
    out
}

/// Waits for a connection answer on a subscription made before the join was sent: the join
/// reply did not carry one, so it has to come through the update stream.
pub(crate) async fn wait_for_answer(
    rx: &mut broadcast::Receiver<SignalingUpdate>,
    timeout: Duration,
) -> Result<String> {
    wait_for(rx, timeout, false).await
}

/// [`wait_for_answer`] for a screen share's connection.
pub(crate) async fn wait_for_presentation_answer(
    rx: &mut broadcast::Receiver<SignalingUpdate>,
    timeout: Duration,
) -> Result<String> {
    wait_for(rx, timeout, true).await
}

async fn wait_for(
    rx: &mut broadcast::Receiver<SignalingUpdate>,
    timeout: Duration,
    presentation: bool,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(SignalingUpdate::Connection {
                presentation: p,
                answer_json,
                ..
            })) if p == presentation => return Ok(answer_json),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                return Err(Error::NoAnswer { waited: timeout })
            }
        }
    }
}

/// A subscription to a backend's updates. Every subscriber sees every update from the moment
/// it subscribed.
pub struct UpdateStream {
    rx: broadcast::Receiver<SignalingUpdate>,
    hub: UpdateHub,
}

impl UpdateStream {
    /// The next update; `None` once the backend is gone.
    pub async fn next(&mut self) -> Option<SignalingUpdate> {
        loop {
            match self.rx.recv().await {
                Ok(SignalingUpdate::Connection {
                    presentation: false,
                    ref answer_json,
                    ..
                }) if self.hub.answer_was_returned(answer_json) => continue,
                Ok(u) => return Some(u),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(SignalingUpdate::Lagged { missed })
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Like [`UpdateStream::next`], without waiting: `None` if nothing is queued now.
    pub fn try_next(&mut self) -> Option<SignalingUpdate> {
        loop {
            match self.rx.try_recv() {
                Ok(SignalingUpdate::Connection {
                    presentation: false,
                    ref answer_json,
                    ..
                }) if self.hub.answer_was_returned(answer_json) => continue,
                Ok(u) => return Some(u),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    return Some(SignalingUpdate::Lagged { missed })
                }
                Err(_) => return None,
            }
        }
    }

    /// The raw receiver for `join`, which must see the answer even though it records it.
    pub(crate) fn raw(&mut self) -> &mut broadcast::Receiver<SignalingUpdate> {
        &mut self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn participant(peer: PeerId, source: u32, left: bool, is_self: bool) -> Participant {
        Participant {
            peer,
            source,
            muted: true,
            can_self_unmute: true,
            left,
            just_joined: !left,
            is_self,
            min: false,
            date: 0,
            volume: None,
            raise_hand_rating: None,
            video_stopped: true,
            video: None,
            presentation: None,
        }
    }

    const CALL: CallId = CallId {
        id: 7,
        access_hash: 9,
    };

    #[test]
    fn own_source_left_is_a_removal_and_a_foreign_source_is_another_device() {
        let me = PeerId::User(5);
        let joined = JoinedState {
            sources: vec![100, 101],
            as_peer: Some(me),
        };
        let ps = [
            participant(me, 100, true, false),
            participant(PeerId::User(6), 200, true, false),
        ];
        assert_eq!(
            self_events(CALL, &joined, &ps),
            vec![SignalingUpdate::SelfRemoved {
                call: CALL,
                source: 100
            }]
        );
        // Telegram's `self` flag identifies the account even when the peer is not known here.
        let ps = [participant(PeerId::User(5), 300, false, true)];
        let joined_unknown_peer = JoinedState {
            sources: vec![100],
            as_peer: None,
        };
        assert_eq!(
            self_events(CALL, &joined_unknown_peer, &ps),
            vec![SignalingUpdate::JoinedElsewhere {
                call: CALL,
                source: 300
            }]
        );
        // Our own join being confirmed, and an old source leaving after a rejoin, imply nothing.
        let ps = [
            participant(me, 100, false, true),
            participant(me, 50, true, true),
        ];
        assert!(self_events(CALL, &joined, &ps).is_empty());
    }

    #[tokio::test]
    async fn a_rejoin_announced_before_its_reply_is_not_another_device() {
        let me = PeerId::User(5);
        let hub = UpdateHub::new();
        hub.set_joined(
            CALL,
            JoinedState {
                sources: vec![100],
                as_peer: Some(me),
            },
        );
        let mut stream = hub.subscribe();
        // The rejoin's payload (source 300) is sent; the server announces it, and the old
        // source leaving, before the join's reply has come back.
        hub.expect_sources(CALL.id, &[300]);
        hub.publish_participants(
            CALL,
            2,
            vec![
                participant(me, 300, false, true),
                participant(me, 100, true, true),
            ],
        );
        let mut derived = Vec::new();
        while let Some(u) = stream.try_next() {
            if !matches!(u, SignalingUpdate::Participants { .. }) {
                derived.push(u);
            }
        }
        assert_eq!(
            derived,
            vec![SignalingUpdate::SelfRemoved {
                call: CALL,
                source: 100
            }],
            "the old source is a removal, the new one is ours"
        );
    }

    #[tokio::test]
    async fn returned_answers_are_not_repeated_but_new_ones_are() {
        let hub = UpdateHub::new();
        let mut s = hub.subscribe();
        let answer = groupcall_media::ServerAnswer::Stream;
        hub.record_answer("{\"stream\":true}");
        for json in ["{\"stream\":true}", "{\"stream\": true}"] {
            hub.publish(SignalingUpdate::Connection {
                presentation: false,
                answer: Box::new(answer.clone()),
                answer_json: json.into(),
            });
        }
        match s.next().await {
            Some(SignalingUpdate::Connection { answer_json, .. }) => {
                assert_eq!(answer_json, "{\"stream\": true}")
            }
            other => panic!("expected the unreturned answer, got {other:?}"),
        }
        assert!(s.try_next().is_none());
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let hub = UpdateHub::new();
        let mut s = hub.subscribe();
        for _ in 0..CHANNEL_CAPACITY + 5 {
            hub.publish(SignalingUpdate::CallDiscarded { call: CALL });
        }
        assert_eq!(s.next().await, Some(SignalingUpdate::Lagged { missed: 5 }));
    }
}
