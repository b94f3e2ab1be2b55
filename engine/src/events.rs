//! The queue between a call's task and the application's [`Call::next_event`]: bounded, never
//! blocking the call, and honest about what it dropped.
//!
//! An application that reads only frames, or stops reading for a while, must not make the call
//! grow without limit: `Speaking` alone comes ten times a second per speaker. The policy, in
//! order:
//! 1. a `Speaking` for a speaker whose previous `Speaking` is still queued replaces it in place
//!    (the reader sees the latest level, once): *coalesced*;
//! 2. when the queue is full, the oldest queued `Speaking` makes room; failing that, a new
//!    `Speaking` is dropped; failing that, the oldest event is dropped: *dropped*;
//! 3. `Ended` is always delivered (it may go one past the bound): it is the last event.
//!
//! Both counts are in [`CallStats`](crate::CallStats) (`events_coalesced`, `events_dropped`). The
//! lock is held for a push or a pop of one event, never across an await, and the call's task
//! never waits for the reader.
//!
//! [`Call::next_event`]: crate::Call::next_event

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::call::CallEvent;

/// Events queued for the application by default.
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

struct Inner {
    events: VecDeque<CallEvent>,
    senders: usize,
    receiver_gone: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
    coalesced: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-changed (every change is
        // one VecDeque operation), so a poisoned lock is still a valid queue.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            events: VecDeque::new(),
            senders: 1,
            receiver_gone: false,
        }),
        notify: Notify::new(),
        capacity: capacity.max(1),
        coalesced: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    (
        EventSender {
            shared: shared.clone(),
        },
        EventReceiver { shared },
    )
}

pub(crate) struct EventSender {
    shared: Arc<Shared>,
}

impl Clone for EventSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        EventSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        self.shared.notify.notify_one();
    }
}

fn speaking_ssrc(e: &CallEvent) -> Option<u32> {
    match e {
        CallEvent::Speaking { ssrc, .. } => Some(*ssrc),
        _ => None,
    }
}

impl EventSender {
    /// Queues `event` by the policy above. Never waits.
    pub(crate) fn send(&self, event: CallEvent) {
        let s = &self.shared;
        {
            let mut inner = s.lock();
            if inner.receiver_gone {
                return;
            }
            let q = &mut inner.events;
            if let Some(ssrc) = speaking_ssrc(&event) {
                if let Some(slot) = q.iter_mut().find(|e| speaking_ssrc(e) == Some(ssrc)) {
                    *slot = event;
                    s.coalesced.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            if q.len() >= s.capacity && !matches!(event, CallEvent::Ended { .. }) {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = q.iter().position(|e| speaking_ssrc(e).is_some()) {
                    q.remove(i);
                } else if speaking_ssrc(&event).is_some() {
                    return;
                } else {
                    q.pop_front();
                }
            }
            q.push_back(event);
        }
        s.notify.notify_one();
    }

    pub(crate) fn coalesced(&self) -> u64 {
        self.shared.coalesced.load(Ordering::Relaxed)
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

pub(crate) struct EventReceiver {
    shared: Arc<Shared>,
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.receiver_gone = true;
        inner.events.clear();
    }
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<CallEvent> {
        loop {
            {
                let mut inner = self.shared.lock();
                if let Some(e) = inner.events.pop_front() {
                    return Some(e);
                }
                if inner.senders == 0 {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a push between the check above
            // and this wait is not missed.
            self.shared.notify.notified().await;
        }
    }

    pub(crate) fn try_recv(&mut self) -> Option<CallEvent> {
        self.shared.lock().events.pop_front()
    }

    /// Stops taking events: whatever is queued is dropped, and later sends are discarded.
    pub(crate) fn close(&mut self) {
        let mut inner = self.shared.lock();
        inner.receiver_gone = true;
        inner.events.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::EndReason;

    fn speaking(ssrc: u32, level: f32) -> CallEvent {
        CallEvent::Speaking {
            ssrc,
            peer: None,
            level,
            voice: true,
        }
    }

    #[test]
    fn speaking_is_coalesced_per_speaker() {
        let (tx, mut rx) = channel(8);
        for i in 0..100 {
            tx.send(speaking(1, i as f32 / 100.0));
            tx.send(speaking(2, 0.5));
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(tx.coalesced(), 198);
        assert_eq!(rx.try_recv(), Some(speaking(1, 0.99)), "the latest level");
        assert_eq!(rx.try_recv(), Some(speaking(2, 0.5)));
        assert_eq!(tx.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_speaking_first_then_the_oldest_and_always_keeps_ended() {
        let (tx, mut rx) = channel(3);
        tx.send(speaking(1, 0.1));
        tx.send(CallEvent::Rejoined { ssrc: 1 });
        tx.send(CallEvent::Rejoined { ssrc: 2 });
        // Full: the queued Speaking makes room.
        tx.send(CallEvent::Rejoined { ssrc: 3 });
        assert_eq!(tx.dropped(), 1);
        // Full, no Speaking queued: a new Speaking is dropped, not an older event.
        tx.send(speaking(9, 0.9));
        assert_eq!(tx.dropped(), 2);
        // Full: the oldest goes.
        tx.send(CallEvent::Rejoined { ssrc: 4 });
        assert_eq!(tx.dropped(), 3);
        tx.send(CallEvent::Ended {
            reason: EndReason::Left,
        });
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(
            got,
            vec![
                CallEvent::Rejoined { ssrc: 2 },
                CallEvent::Rejoined { ssrc: 3 },
                CallEvent::Rejoined { ssrc: 4 },
                CallEvent::Ended {
                    reason: EndReason::Left
                },
            ]
        );
    }

    /// An application that never reads events while 8 people speak for 60 s (10 levels a
    /// second each), with roster changes and state changes in between: the queue stays at its
    /// bound and says what it dropped.
    #[test]
    fn sixty_seconds_unread_stay_bounded_and_counted() {
        let capacity = 64;
        let (tx, rx) = channel(capacity);
        let mut sent = 0u64;
        let mut peak = 0;
        for tick in 0..600u32 {
            for ssrc in 0..8 {
                tx.send(speaking(ssrc, (tick % 100) as f32 / 100.0));
                sent += 1;
            }
            if tick % 10 == 0 {
                tx.send(CallEvent::Rejoined { ssrc: tick });
                sent += 1;
            }
            peak = peak.max(rx.len());
        }
        assert!(peak <= capacity, "peak {peak}");
        let (dropped, coalesced) = (tx.dropped(), tx.coalesced());
        assert_eq!(
            rx.len() as u64 + dropped + coalesced,
            sent,
            "every event is delivered, dropped or coalesced"
        );
        assert!(coalesced > 4000, "levels merged: {coalesced}");
        assert!(
            dropped > 0,
            "60 non-level events cannot all fit in 64 slots with 8 levels"
        );
    }

    #[tokio::test]
    async fn the_receiver_ends_when_the_senders_are_gone_and_wakes_on_a_push() {
        let (tx, mut rx) = channel(4);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.send(CallEvent::Rejoined { ssrc: 5 });
        drop(tx);
        let (first, end) = waiter.await.unwrap();
        assert_eq!(first, Some(CallEvent::Rejoined { ssrc: 5 }));
        assert_eq!(end, None);
    }
}
