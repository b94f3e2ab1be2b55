//! Counters a person can read to see what a transport did: datagrams per class in each
//! direction, everything dropped and why, and per-SSRC reception quality as RFC 3550 §6.4.1
//! defines it (cumulative loss from the extended highest sequence number; interarrival jitter).

use std::collections::HashMap;
use std::time::Instant;

use crate::demux::PacketClass;

/// Datagram counts per demultiplexed class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    pub stun: u64,
    pub dtls: u64,
    pub rtp: u64,
    pub rtcp: u64,
    pub unknown: u64,
}

impl ClassCounts {
    pub(crate) fn add(&mut self, class: PacketClass) {
        match class {
            PacketClass::Stun => self.stun += 1,
            PacketClass::Dtls => self.dtls += 1,
            PacketClass::Rtp => self.rtp += 1,
            PacketClass::Rtcp => self.rtcp += 1,
            PacketClass::Unknown => self.unknown += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.stun + self.dtls + self.rtp + self.rtcp + self.unknown
    }
}

/// Everything a transport counted. Every received datagram lands in `received`; one that was not
/// used is also counted in exactly one of the drop counters.
#[derive(Clone, Debug, Default)]
pub struct TransportStats {
    pub received: ClassCounts,
    pub sent: ClassCounts,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Parsed and used (STUN answered or consumed, DTLS records consumed, SRTP decrypted).
    pub accepted: u64,
    /// Could not be parsed: bad STUN, unknown first byte, RTP/RTCP that failed to parse after
    /// decryption, DTLS records the handshake rejected.
    pub malformed: u64,
    /// SRTP/SRTCP whose authentication failed (wrong key, corrupted, forged).
    pub decrypt_failures: u64,
    /// SRTP/SRTCP packets seen before (replay protection).
    pub replays: u64,
    /// Non-STUN datagrams from an address ICE has not validated.
    pub unvalidated: u64,
    /// SRTP/SRTCP before keys exist, or anything after the transport failed or closed.
    pub not_ready: u64,
    /// STUN Binding Requests this side sent (a strict ICE-lite side never sends any).
    pub stun_requests_sent: u64,
    /// Per remote SSRC reception statistics.
    pub ssrcs: HashMap<u32, SsrcStats>,
}

impl TransportStats {
    pub fn dropped(&self) -> u64 {
        self.malformed + self.decrypt_failures + self.replays + self.unvalidated + self.not_ready
    }
}

/// RFC 3550 reception statistics for one SSRC.
#[derive(Clone, Debug, PartialEq)]
pub struct SsrcStats {
    pub packets: u64,
    pub bytes: u64,
    base_seq: u32,
    /// Extended highest sequence number received (cycles << 16 | seq).
    max_ext_seq: u32,
    transit: Option<i64>,
    /// Interarrival jitter in RTP timestamp units (RFC 3550 A.8).
    pub jitter: f64,
    pub clock_rate: u32,
    pub last_packet: Instant,
    /// Expected and received counts when the previous reception report was made, for the
    /// interval's fraction lost (RFC 3550 A.3).
    expected_prior: u64,
    received_prior: u64,
    /// The middle 32 bits of the NTP time of the last sender report from this source, and when
    /// it arrived: a report block echoes both so the sender can measure the round trip.
    last_sr: Option<(u32, Instant)>,
}

impl SsrcStats {
    pub(crate) fn new(seq: u16, clock_rate: u32, now: Instant) -> Self {
        SsrcStats {
            packets: 0,
            bytes: 0,
            base_seq: seq as u32,
            max_ext_seq: seq as u32,
            transit: None,
            jitter: 0.0,
            clock_rate,
            last_packet: now,
            expected_prior: 0,
            received_prior: 0,
            last_sr: None,
        }
    }

    /// Notes a sender report from this source (its 64-bit NTP time) arriving at `now`.
    pub(crate) fn on_sender_report(&mut self, ntp_time: u64, now: Instant) {
        self.last_sr = Some(((ntp_time >> 16) as u32, now));
    }

    /// The RFC 3550 §6.4.1 report block for this source at `now`, and the start of the next
    /// interval.
    pub(crate) fn report_block(&mut self, ssrc: u32, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.packets.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.packets;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (last_sr, delay) = match self.last_sr {
            // Units of 1/65536 s; saturates rather than wraps for a report absurdly old.
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                let units = (d.as_micros() << 16) / 1_000_000;
                (lsr, u32::try_from(units).unwrap_or(u32::MAX))
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            // A 24-bit field: clamp rather than wrap into nonsense.
            total_lost: self.lost().min(0x7f_ffff) as u32,
            extended_highest_seq: self.max_ext_seq,
            jitter: self.jitter as u32,
            last_sr,
            delay_since_last_sr: delay,
        }
    }

    /// Counts one packet. `arrival` is the arrival time in RTP timestamp units.
    pub(crate) fn on_packet(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        arrival: i64,
        len: usize,
        now: Instant,
    ) {
        self.packets += 1;
        self.bytes += len as u64;
        self.last_packet = now;
        let max_seq = self.max_ext_seq as u16;
        let delta = seq.wrapping_sub(max_seq);
        if delta != 0 && delta < 0x8000 {
            // In order (possibly after a gap); a wrap of the 16-bit number starts a new cycle.
            if seq < max_seq {
                self.max_ext_seq = self.max_ext_seq.wrapping_add(1 << 16);
            }
            self.max_ext_seq = (self.max_ext_seq & 0xffff_0000) | seq as u32;
        }
        let transit = arrival.wrapping_sub(rtp_ts as i64);
        if let Some(prev) = self.transit {
            let d = (transit - prev).unsigned_abs() as f64;
            // Ignore absurd steps (timestamp jumps of a new talkspurt or stream restart).
            if d < self.clock_rate as f64 * 10.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.transit = Some(transit);
    }

    pub fn extended_highest_seq(&self) -> u32 {
        self.max_ext_seq
    }

    /// Packets expected from the first to the highest sequence number seen.
    pub fn expected(&self) -> u64 {
        self.max_ext_seq.wrapping_sub(self.base_seq) as u64 + 1
    }

    /// Cumulative packets lost (never negative; duplicates can make received exceed expected).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// Loss as a fraction of the expected packets.
    pub fn loss_fraction(&self) -> f64 {
        self.lost() as f64 / self.expected().max(1) as f64
    }

    /// Jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock_rate.max(1) as f64
    }
}

/// One reception report block (RFC 3550 §6.4.1), as this side computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Lost in the interval since the previous report, in 1/256.
    pub fraction_lost: u8,
    pub total_lost: u32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_gaps_and_survives_wraparound() {
        let now = Instant::now();
        let mut s = SsrcStats::new(65530, 48000, now);
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 3] {
            s.on_packet(seq, 0, 0, 10, now);
        }
        assert_eq!(s.extended_highest_seq(), (1 << 16) | 3);
        assert_eq!(s.expected(), 10);
        assert_eq!(s.lost(), 3);
        // A late packet fills a hole without moving the highest sequence number back.
        s.on_packet(65532, 0, 0, 10, now);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.extended_highest_seq(), (1 << 16) | 3);
    }

    #[test]
    fn report_blocks_count_the_interval_and_echo_the_sender_report() {
        let t0 = Instant::now();
        let mut s = SsrcStats::new(100, 48000, t0);
        // 100..=109 with 103 and 107 missing: 10 expected, 8 received.
        for seq in (100u16..110).filter(|q| *q != 103 && *q != 107) {
            s.on_packet(seq, 0, 0, 10, t0);
        }
        s.on_sender_report(0x0123_4567_89ab_cdef, t0);
        let b = s.report_block(5, t0 + std::time::Duration::from_millis(500));
        assert_eq!((b.ssrc, b.total_lost, b.extended_highest_seq), (5, 2, 109));
        assert_eq!(b.fraction_lost, 51); // 2/10 of 256, rounded down
        assert_eq!(b.last_sr, 0x4567_89ab);
        assert_eq!(b.delay_since_last_sr, 32768);
        // The next interval: 110..=119 all received; the cumulative count stays.
        for seq in 110u16..120 {
            s.on_packet(seq, 0, 0, 10, t0);
        }
        let b = s.report_block(5, t0);
        assert_eq!((b.fraction_lost, b.total_lost), (0, 2));
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let now = Instant::now();
        let mut s = SsrcStats::new(0, 48000, now);
        // Packets 20 ms apart in RTP time, arriving alternately 0 and 10 ms late.
        for i in 0..2000u32 {
            let ts = i * 960;
            let late = if i % 2 == 0 { 0 } else { 480 };
            s.on_packet(i as u16, ts, ts as i64 + late, 10, now);
        }
        // |D| is always 480 units (10 ms): the estimate converges to it.
        assert!((s.jitter_ms() - 10.0).abs() < 0.5, "{}", s.jitter_ms());
    }
}
