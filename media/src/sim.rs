//! A simulated network on virtual time, for deterministic tests of transports (and of anything
//! built on them): datagrams are delayed, jittered, lost or duplicated by a seeded RNG, and time
//! jumps straight to the next timer or delivery, so a 30-second timeout takes microseconds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::transport::{Event, Transmit, Transport};

/// How the network treats every datagram.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkConfig {
    /// Probability in 0..=1 that a datagram is lost.
    pub loss: f64,
    /// Probability in 0..=1 that a datagram is delivered twice.
    pub duplicate: f64,
    pub delay: Duration,
    /// Extra delay drawn uniformly from 0..jitter (reorders packets).
    pub jitter: Duration,
}

struct Pending {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: BytesMut,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Datagrams in flight.
pub struct SimNet {
    queue: BinaryHeap<Reverse<Pending>>,
    rng: StdRng,
    seq: u64,
    pub link: LinkConfig,
    /// Addresses whose traffic (to or from) is silently dropped: a peer that went away.
    pub blackholed: HashSet<SocketAddr>,
    pub sent: u64,
    pub lost: u64,
    pub delivered: u64,
}

impl SimNet {
    pub fn new(seed: u64) -> Self {
        SimNet {
            queue: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            link: LinkConfig::default(),
            blackholed: HashSet::new(),
            sent: 0,
            lost: 0,
            delivered: 0,
        }
    }

    pub fn send(&mut self, now: Instant, from: SocketAddr, t: Transmit) {
        self.sent += 1;
        if self.blackholed.contains(&from)
            || self.blackholed.contains(&t.destination)
            || self.rng.random::<f64>() < self.link.loss
        {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.random::<f64>() < self.link.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.link.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.link.jitter.mul_f64(self.rng.random::<f64>())
            };
            self.seq += 1;
            self.queue.push(Reverse(Pending {
                at: now + self.link.delay + jitter,
                seq: self.seq,
                from,
                to: t.destination,
                data: t.contents.clone(),
            }));
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|p| p.0.at)
    }

    /// The next datagram due at `now`: `(from, to, bytes)`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, BytesMut)> {
        if self.next_delivery()? > now {
            return None;
        }
        let p = self.queue.pop()?.0;
        self.delivered += 1;
        Some((p.from, p.to, p.data))
    }
}

/// Transports on a [`SimNet`], with a virtual clock.
pub struct Sim {
    pub net: SimNet,
    pub now: Instant,
    /// With `Some(period)`, the transports' lenient deadlines ([`Transport::poll_deadlines`])
    /// are served only on a clock of that period, as the engine's driver serves them on its
    /// audio tick; `None` serves every deadline on time.
    pub tick: Option<Duration>,
    start: Instant,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let now = Instant::now();
        Sim {
            net: SimNet::new(seed),
            now,
            tick: None,
            start: now,
        }
    }

    /// When `t` wants [`Transport::handle_timeout`]: its prompt deadline, or its lenient one
    /// put off to the next instant of [`Sim::tick`].
    fn timer_of(&self, t: &mut Transport) -> Option<Instant> {
        let mut d = t.poll_deadlines();
        if let Some(period) = self.tick {
            d.lenient = d.lenient.map(|l| {
                let since = l.saturating_duration_since(self.start).as_nanos();
                let p = period.as_nanos().max(1);
                self.start + Duration::from_nanos((since.div_ceil(p) * p) as u64)
            });
        }
        d.earliest()
    }

    fn flush(&mut self, ts: &mut [&mut Transport], events: &mut [Vec<Event>]) {
        for (i, t) in ts.iter_mut().enumerate() {
            let from = t.local_addr();
            while let Some(tx) = t.poll_transmit() {
                self.net.send(self.now, from, tx);
            }
            while let Some(e) = t.poll_event() {
                events[i].push(e);
            }
        }
    }

    /// Runs until `done` holds or virtual time reaches `deadline`. Returns whether `done` held.
    /// Events of transport `i` are appended to `events[i]`.
    pub fn run_until(
        &mut self,
        ts: &mut [&mut Transport],
        events: &mut [Vec<Event>],
        deadline: Instant,
        mut done: impl FnMut(&[&mut Transport], &[Vec<Event>]) -> bool,
    ) -> bool {
        assert_eq!(ts.len(), events.len(), "one event list per transport");
        loop {
            self.flush(ts, events);
            if done(ts, events) {
                return true;
            }
            let next_timer = ts.iter_mut().filter_map(|t| self.timer_of(t)).min();
            let next = [next_timer, self.net.next_delivery()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                return false;
            };
            if next > deadline {
                self.now = deadline;
                return false;
            }
            self.now = self.now.max(next);
            while let Some((from, to, data)) = self.net.pop_due(self.now) {
                if let Some(t) = ts.iter_mut().find(|t| t.local_addr() == to) {
                    t.handle_datagram(self.now, from, &data);
                }
            }
            for t in ts.iter_mut() {
                if self.timer_of(t).is_some_and(|at| at <= self.now) {
                    t.handle_timeout(self.now);
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, ts: &mut [&mut Transport], events: &mut [Vec<Event>], d: Duration) {
        let deadline = self.now + d;
        self.run_until(ts, events, deadline, |_, _| false);
    }
}
