//! The receiver's side of retransmission: which packets of one SSRC to ask for again.
//!
//! A gap in the sequence numbers is a loss, or a reordering the next millisecond repairs; so a
//! missing number is asked for only after a short reordering allowance, then again once per
//! round trip while it stays missing (the NACK or the retransmission may be lost too), a bounded
//! number of times, and forgotten once too old to help. The requests go out as RFC 4585 generic
//! NACKs (rtc's `TransportLayerNack`, each `NackPair` naming a number and a bitmask of the 16
//! after it), which the sender answers from its history with RTX ([`super::history`]).
//!
//! When too much is missing at once (a burst, or the sender's numbering jumped), asking for
//! every packet would cost more than a fresh keyframe and most would come too late: the list is
//! dropped and the generator says to ask for a keyframe (PLI) instead.
//!
//! Sans-IO: [`NackGenerator::on_packet`] for every packet received (originals, and the original
//! sequence number of every RTX), then [`NackGenerator::poll`] until it returns `None`, and again
//! at [`NackGenerator::poll_timeout`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::seq::SeqExtender;
use crate::transport::rtcp::transport_feedbacks::transport_layer_nack::{
    NackPair, TransportLayerNack,
};

/// Timing and bounds of a [`NackGenerator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackConfig {
    /// How long a gap may be a reordering before its numbers are asked for.
    pub reorder_wait: Duration,
    /// How many times one number is asked for.
    pub max_retries: u32,
    /// A number missing for longer than this is forgotten: the receiver has given up its frame.
    pub max_age: Duration,
    /// The most numbers tracked; a loss that would go over asks for a keyframe instead.
    pub max_missing: usize,
    /// The round-trip time assumed until [`NackGenerator::set_rtt`] says otherwise.
    pub initial_rtt: Duration,
}

impl Default for NackConfig {
    fn default() -> Self {
        NackConfig {
            reorder_wait: Duration::from_millis(10),
            max_retries: 10,
            max_age: Duration::from_millis(1000),
            max_missing: 1000,
            initial_rtt: Duration::from_millis(100),
        }
    }
}

/// What to send to the media sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NackFeedback {
    Nack(TransportLayerNack),
    /// Too much is missing to ask for: ask for a keyframe (PLI) instead.
    KeyframeRequest,
}

/// Counters of a [`NackGenerator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NackStats {
    pub packets: u64,
    /// Sequence numbers found missing.
    pub missing: u64,
    /// Missing numbers that arrived after all.
    pub recovered: u64,
    /// NACK packets made.
    pub nacks: u64,
    /// Sequence numbers asked for, retries included.
    pub requested: u64,
    /// Numbers asked for `max_retries` times in vain.
    pub given_up: u64,
    /// Numbers forgotten after `max_age`.
    pub expired: u64,
    pub keyframe_requests: u64,
    /// Times the sender's numbering was taken as restarted.
    pub restarts: u64,
}

/// At most this many pairs per NACK (rtc refuses to write more than 253), about 800 bytes.
pub const MAX_PAIRS_PER_NACK: usize = 200;

/// Retries are never closer than this, whatever the round-trip time says.
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(5);

/// This many packets in a row far behind the newest mean the sender restarted its numbering.
const RESTART_AFTER: u32 = 64;

#[derive(Clone, Copy, Debug)]
struct Missing {
    detected: Instant,
    /// When it is next due (first ask, retry, or being given up after the last).
    due: Instant,
    asked: u32,
}

/// Missing sequence numbers of one received SSRC, and when to ask for them.
#[derive(Debug)]
pub struct NackGenerator {
    sender_ssrc: u32,
    media_ssrc: u32,
    config: NackConfig,
    rtt: Duration,
    seq: SeqExtender,
    missing: BTreeMap<u64, Missing>,
    /// The lowest number seen: a packet of the stream's first burst that arrives after later
    /// ones extends the line back, and what lies between is missing too.
    lowest: Option<u64>,
    keyframe_since: Option<Instant>,
    stale: u32,
    stats: NackStats,
}

impl NackGenerator {
    /// NACKs about `media_ssrc`, sent from `sender_ssrc` (the receiver's own reporting SSRC).
    pub fn new(sender_ssrc: u32, media_ssrc: u32, config: NackConfig) -> Self {
        NackGenerator {
            sender_ssrc,
            media_ssrc,
            config,
            rtt: config.initial_rtt,
            seq: SeqExtender::default(),
            missing: BTreeMap::new(),
            lowest: None,
            keyframe_since: None,
            stale: 0,
            stats: NackStats::default(),
        }
    }

    pub fn stats(&self) -> NackStats {
        self.stats
    }

    /// Sequence numbers currently missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// The round-trip time to the sender: the spacing of retries.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// A packet of the stream arrived (for an RTX packet: the original sequence number).
    pub fn on_packet(&mut self, now: Instant, sequence: u16) {
        self.stats.packets += 1;
        let Some(highest) = self.seq.highest() else {
            self.lowest = Some(self.seq.extend_and_update(sequence));
            return;
        };
        let ext = self.seq.extend(sequence);
        if ext > highest {
            self.stale = 0;
            self.seq.extend_and_update(sequence);
            self.add_missing(now, highest + 1, ext);
        } else if self.missing.remove(&ext).is_some() {
            self.stale = 0;
            self.stats.recovered += 1;
        } else if highest - ext > self.config.max_missing as u64 {
            self.stale += 1;
            if self.stale >= RESTART_AFTER {
                self.stats.restarts += 1;
                self.missing.clear();
                self.seq.reset();
                self.lowest = Some(self.seq.extend_and_update(sequence));
                self.stale = 0;
            }
        } else if let Some(lowest) = self.lowest.filter(|l| ext < *l) {
            // Before everything seen so far (the stream's first packets, reordered): nothing
            // between this one and the lowest has arrived.
            self.stale = 0;
            self.lowest = Some(ext);
            self.add_missing(now, ext + 1, lowest);
        }
    }

    /// Numbers `from..to`, none of which has arrived, are missing; too many ask for a keyframe.
    fn add_missing(&mut self, now: Instant, from: u64, to: u64) {
        let gap = to.saturating_sub(from);
        if gap == 0 {
            return;
        }
        if self.missing.len() as u64 + gap > self.config.max_missing as u64 {
            self.give_up_all(now);
            return;
        }
        self.stats.missing += gap;
        let first = Missing {
            detected: now,
            due: now + self.config.reorder_wait,
            asked: 0,
        };
        self.missing.extend((from..to).map(|e| (e, first)));
    }

    /// Forgets every missing number and asks for a keyframe.
    fn give_up_all(&mut self, now: Instant) {
        self.missing.clear();
        self.stats.keyframe_requests += 1;
        self.keyframe_since.get_or_insert(now);
    }

    /// When [`NackGenerator::poll`] has something to say next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let asks = self
            .missing
            .values()
            .filter(|m| m.asked < self.config.max_retries)
            .map(|m| m.due)
            .min();
        [asks, self.keyframe_since].into_iter().flatten().min()
    }

    /// The next NACK or keyframe request due at `now`; call until `None`. A NACK lists at most
    /// [`MAX_PAIRS_PER_NACK`] pairs; what does not fit comes with the next call.
    pub fn poll(&mut self, now: Instant) -> Option<NackFeedback> {
        if self.keyframe_since.take().is_some() {
            return Some(NackFeedback::KeyframeRequest);
        }
        let (max_age, max_retries) = (self.config.max_age, self.config.max_retries);
        let (mut expired, mut given_up) = (0, 0);
        self.missing.retain(|_, m| {
            if now.saturating_duration_since(m.detected) >= max_age {
                expired += 1;
                false
            } else if m.asked >= max_retries && now >= m.due {
                given_up += 1;
                false
            } else {
                true
            }
        });
        self.stats.expired += expired;
        self.stats.given_up += given_up;

        let retry = self.rtt.max(MIN_RETRY_INTERVAL);
        let mut pairs: Vec<NackPair> = Vec::new();
        let mut base = 0u64;
        for (&ext, m) in self.missing.iter_mut() {
            if m.asked >= max_retries || m.due > now {
                continue;
            }
            let full = pairs.len() == MAX_PAIRS_PER_NACK;
            match pairs.last_mut() {
                Some(p) if (1..=16).contains(&(ext - base)) => {
                    p.lost_packets |= 1 << (ext - base - 1);
                }
                _ if full => break,
                _ => {
                    pairs.push(NackPair::new(ext as u16));
                    base = ext;
                }
            }
            m.asked += 1;
            m.due = now + retry;
            self.stats.requested += 1;
        }
        if pairs.is_empty() {
            return None;
        }
        self.stats.nacks += 1;
        Some(NackFeedback::Nack(TransportLayerNack {
            sender_ssrc: self.sender_ssrc,
            media_ssrc: self.media_ssrc,
            nacks: pairs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn asked(f: Option<NackFeedback>) -> Vec<u16> {
        match f {
            Some(NackFeedback::Nack(n)) => n.nacks.iter().flat_map(|p| p.into_iter()).collect(),
            other => panic!("expected a NACK, got {other:?}"),
        }
    }

    #[test]
    fn a_gap_is_asked_for_after_the_reordering_allowance_then_once_per_rtt() {
        let t = Instant::now();
        let mut g = NackGenerator::new(1, 2, NackConfig::default());
        g.set_rtt(ms(40));
        g.on_packet(t, 65_530);
        // 65,531, 65,533, 0 and 1 are missing (across the wrap); 65,532 was reordered.
        for s in [65_532, 65_534, 65_535, 2] {
            g.on_packet(t, s);
        }
        g.on_packet(t + ms(3), 65_531);
        assert_eq!(g.missing(), 3);
        assert_eq!(g.poll(t + ms(9)), None);
        assert_eq!(g.poll_timeout(), Some(t + ms(10)));
        assert_eq!(asked(g.poll(t + ms(10))), [65_533, 0, 1]);
        assert_eq!(g.poll(t + ms(10)), None);
        assert_eq!(g.poll_timeout(), Some(t + ms(50)));
        g.on_packet(t + ms(30), 0);
        assert_eq!(asked(g.poll(t + ms(50))), [65_533, 1]);
        let s = g.stats();
        assert_eq!((s.missing, s.recovered, s.requested, s.nacks), (4, 2, 5, 2));
    }

    #[test]
    fn a_number_is_asked_for_a_bounded_number_of_times_and_old_ones_are_forgotten() {
        let t = Instant::now();
        let cfg = NackConfig {
            max_retries: 3,
            ..Default::default()
        };
        let mut g = NackGenerator::new(1, 2, cfg);
        g.set_rtt(ms(20));
        g.on_packet(t, 10);
        g.on_packet(t, 12);
        let mut times = 0;
        let mut now = t;
        while let Some(at) = g.poll_timeout() {
            now = at;
            while let Some(f) = g.poll(now) {
                assert_eq!(asked(Some(f)), [11]);
                times += 1;
            }
        }
        assert_eq!(times, 3);
        assert_eq!(now, t + ms(10 + 2 * 20));
        // One round trip after the last request it is given up.
        assert_eq!(g.poll(now + ms(20)), None);
        assert_eq!((g.missing(), g.stats().given_up), (0, 1));

        // Too old: forgotten however few times it was asked for.
        let mut g = NackGenerator::new(1, 2, NackConfig::default());
        g.on_packet(t, 10);
        g.on_packet(t, 12);
        assert_eq!(g.poll(t + ms(1000)), None);
        assert_eq!((g.missing(), g.stats().expired), (0, 1));
    }

    #[test]
    fn pairs_cover_16_numbers_after_their_first_and_a_nack_holds_at_most_200() {
        use crate::transport::rtcp::packet::{marshal, Packet};
        let t = Instant::now();
        let mut g = NackGenerator::new(7, 8, NackConfig::default());
        g.on_packet(t, 0);
        // Every other number missing from 1 to 39.
        for s in (2..=40).step_by(2) {
            g.on_packet(t, s);
        }
        let Some(NackFeedback::Nack(first)) = g.poll(t + ms(10)) else {
            panic!("a NACK is due");
        };
        assert_eq!((first.sender_ssrc, first.media_ssrc), (7, 8));
        assert_eq!(first.nacks[0].packet_id, 1);
        assert_eq!(first.nacks[0].lost_packets, 0b1010_1010_1010_1010);
        let all: Vec<u16> = first.nacks.iter().flat_map(|p| p.into_iter()).collect();
        assert_eq!(all, (1..40).step_by(2).collect::<Vec<u16>>());

        // 250 numbers 20 apart: one pair each, 200 in the first NACK and the rest in the next.
        let mut g = NackGenerator::new(7, 8, NackConfig::default());
        for s in (0..=5000u16).filter(|s| s % 20 != 10) {
            g.on_packet(t, s);
        }
        let (mut sizes, mut all) = (Vec::new(), Vec::new());
        while let Some(NackFeedback::Nack(n)) = g.poll(t + ms(10)) {
            sizes.push(n.nacks.len());
            all.extend(n.nacks.iter().flat_map(|p| p.into_iter()));
            // rtc writes it as one RTCP packet.
            assert!(marshal(&[Box::new(n) as Box<dyn Packet>]).is_ok());
        }
        assert_eq!(sizes, [MAX_PAIRS_PER_NACK, 50]);
        assert_eq!(all, (10..5000).step_by(20).collect::<Vec<u16>>());
    }

    #[test]
    fn packets_of_the_first_burst_arriving_late_extend_the_line_back() {
        let t = Instant::now();
        let mut g = NackGenerator::new(1, 2, NackConfig::default());
        // 100..=110 sent at once; 105 arrives first, 100 later, 102 and 103 never.
        for s in [105, 106, 107, 108, 109, 110, 101, 100, 104] {
            g.on_packet(t, s);
        }
        assert_eq!(asked(g.poll(t + ms(10))), [102, 103]);
    }

    #[test]
    fn too_much_missing_asks_for_a_keyframe_instead() {
        let t = Instant::now();
        let mut g = NackGenerator::new(1, 2, NackConfig::default());
        g.on_packet(t, 100);
        g.on_packet(t, 110);
        g.on_packet(t, 2000);
        assert_eq!(g.poll(t), Some(NackFeedback::KeyframeRequest));
        assert_eq!(g.missing(), 0);
        assert_eq!(g.poll(t + ms(100)), None);
        assert_eq!(g.stats().keyframe_requests, 1);
        // The numbering goes on from the new place.
        g.on_packet(t, 2002);
        assert_eq!(asked(g.poll(t + ms(10))), [2001]);
    }

    #[test]
    fn a_restarted_numbering_is_followed() {
        let t = Instant::now();
        let mut g = NackGenerator::new(1, 2, NackConfig::default());
        g.on_packet(t, 40_000);
        for s in 10_000..10_100u16 {
            g.on_packet(t, s);
        }
        assert_eq!(g.stats().restarts, 1);
        assert_eq!(g.missing(), 0);
        g.on_packet(t, 10_101);
        assert_eq!(asked(g.poll(t + ms(10))), [10_100]);
    }
}
