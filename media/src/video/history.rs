//! The sender's memory of what it sent, to answer NACKs with RTX retransmissions (RFC 4588).
//!
//! A receiver that misses a video packet asks for it by sequence number (RFC 4585 generic NACK)
//! rather than for a whole new keyframe, which is large and makes the picture stutter. The
//! packet is sent again on the stream's RTX partner (its FID group, docs/protocol.md §1.2): its
//! own SSRC, the RTX payload type (the codec's plus one in Telegram's numbering) and its own
//! sequence numbers, with the original sequence number in the first two bytes of the payload.
//! Retransmitting on a separate stream keeps the media stream's sequence numbers and statistics
//! (loss, jitter) honest.
//!
//! [`SendHistory`] keeps the last packets of one stream, bounded by count and by age: a
//! retransmission that arrives after the receiver gave up on its frame is useless. The same
//! packet is not sent again within a minimum interval (about a round trip): a receiver repeats
//! its NACK once per round trip, and a second copy sent sooner, while the first is still on its
//! way, only adds load to a link that is already losing packets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::packetize::VideoPacket;
use super::seq::SeqExtender;
use crate::answer::VideoCodec;
use crate::rtp::OutgoingRtp;
use crate::transport::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// Bounds and pacing of a [`SendHistory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The most packets kept (libwebrtc keeps 600: about 2 s of a 2.5 Mbit/s stream).
    pub capacity: usize,
    /// Packets sent longer ago than this are forgotten.
    pub max_age: Duration,
    /// A packet is not retransmitted again sooner than this after its last retransmission. A
    /// little under the round-trip time: a receiver repeats a NACK one round trip after the last.
    pub min_resend_interval: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            capacity: 600,
            max_age: Duration::from_secs(1),
            min_resend_interval: Duration::from_millis(50),
        }
    }
}

/// An RTX packet to send: on the RTX SSRC, with the original packet's timestamp and marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtxPacket {
    pub ssrc: u32,
    pub payload_type: u8,
    /// The RTX stream's own sequence number.
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The original sequence number (2 bytes, network order), then the original payload.
    pub payload: Bytes,
}

impl RtxPacket {
    /// The sequence number of the packet this one carries again (`None` only for a payload
    /// built elsewhere and too short to hold one).
    pub fn original_sequence(&self) -> Option<u16> {
        unwrap_rtx(&self.payload).map(|(osn, _)| osn)
    }

    /// The packet to write, without header extensions (the transport stamps its own).
    pub fn to_outgoing(&self) -> OutgoingRtp<'_> {
        OutgoingRtp {
            marker: self.marker,
            ..OutgoingRtp::new(
                self.ssrc,
                self.sequence,
                self.timestamp,
                self.payload_type,
                &self.payload,
            )
        }
    }
}

/// The original sequence number and payload an RTX payload carries (the receiving side of RFC
/// 4588 §4). `None` for a payload shorter than the original sequence number: RTX padding, which
/// senders use to probe bandwidth, carries no packet.
pub fn unwrap_rtx(payload: &Bytes) -> Option<(u16, Bytes)> {
    let osn = payload.get(..2)?;
    Some((u16::from_be_bytes([osn[0], osn[1]]), payload.slice(2..)))
}

/// The RTX payload type of a codec in Telegram's numbering: the codec's plus one.
pub fn rtx_payload_type(codec: VideoCodec) -> u8 {
    codec.payload_type() + 1
}

/// Counters of a [`SendHistory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub recorded: u64,
    /// Packets given to `record` out of order (not kept).
    pub out_of_order: u64,
    pub retransmitted: u64,
    /// Requests for packets not (or no longer) kept.
    pub unknown: u64,
    /// Requests within `min_resend_interval` of the packet's last retransmission.
    pub too_soon: u64,
}

#[derive(Debug)]
struct Entry {
    ext: u64,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
    sent: Instant,
    resent: Option<Instant>,
}

/// The last packets sent on one stream, and the RTX stream that retransmits them.
#[derive(Debug)]
pub struct SendHistory {
    rtx_ssrc: u32,
    rtx_payload_type: u8,
    rtx_sequence: u16,
    config: HistoryConfig,
    seq: SeqExtender,
    packets: VecDeque<Entry>,
    stats: HistoryStats,
}

impl SendHistory {
    /// A history whose retransmissions go out on `rtx_ssrc` with `rtx_payload_type` (see
    /// [`rtx_payload_type`]), numbered from `first_rtx_sequence` (random, as for any stream).
    pub fn new(
        rtx_ssrc: u32,
        rtx_payload_type: u8,
        first_rtx_sequence: u16,
        config: HistoryConfig,
    ) -> Self {
        let config = HistoryConfig {
            capacity: config.capacity.max(1),
            ..config
        };
        SendHistory {
            rtx_ssrc,
            rtx_payload_type,
            rtx_sequence: first_rtx_sequence,
            config,
            seq: SeqExtender::default(),
            packets: VecDeque::with_capacity(config.capacity.min(4096)),
            stats: HistoryStats::default(),
        }
    }

    pub fn stats(&self) -> HistoryStats {
        self.stats
    }

    /// Packets kept.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Follows the round-trip time: the least time between two retransmissions of one packet.
    pub fn set_min_resend_interval(&mut self, interval: Duration) {
        self.config.min_resend_interval = interval;
    }

    /// Remembers a packet just sent at `now`. Packets are recorded in the order they were
    /// numbered; one not after the last recorded is ignored (and counted).
    pub fn record(&mut self, now: Instant, packet: &VideoPacket) {
        let ext = self.seq.extend(packet.sequence);
        if self.packets.back().is_some_and(|b| ext <= b.ext) {
            self.stats.out_of_order += 1;
            return;
        }
        self.seq.extend_and_update(packet.sequence);
        self.packets.push_back(Entry {
            ext,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload: packet.payload.clone(),
            sent: now,
            resent: None,
        });
        self.stats.recorded += 1;
        self.evict(now);
    }

    fn evict(&mut self, now: Instant) {
        while self.packets.len() > self.config.capacity {
            self.packets.pop_front();
        }
        while self
            .packets
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.sent) > self.config.max_age)
        {
            self.packets.pop_front();
        }
    }

    /// The RTX packet that sends `original` again, or `None` when it is not kept (never sent,
    /// pushed out, too old) or was retransmitted less than the minimum interval ago. Each
    /// packet returned takes the RTX stream's next sequence number: send it.
    pub fn rtx_for(&mut self, now: Instant, original: u16) -> Option<RtxPacket> {
        self.evict(now);
        let ext = self.seq.extend(original);
        let Ok(i) = self.packets.binary_search_by_key(&ext, |p| p.ext) else {
            self.stats.unknown += 1;
            return None;
        };
        let p = &mut self.packets[i];
        if p.resent
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.min_resend_interval)
        {
            self.stats.too_soon += 1;
            return None;
        }
        p.resent = Some(now);
        let mut payload = BytesMut::with_capacity(2 + p.payload.len());
        payload.put_u16(original);
        payload.put_slice(&p.payload);
        let sequence = self.rtx_sequence;
        self.rtx_sequence = sequence.wrapping_add(1);
        self.stats.retransmitted += 1;
        Some(RtxPacket {
            ssrc: self.rtx_ssrc,
            payload_type: self.rtx_payload_type,
            sequence,
            timestamp: p.timestamp,
            marker: p.marker,
            payload: payload.freeze(),
        })
    }

    /// Everything a NACK asks for that can be sent, in the order asked. Bounded by the history:
    /// a NACK naming the same packet twice gets it once.
    pub fn handle_nack(&mut self, now: Instant, nack: &TransportLayerNack) -> Vec<RtxPacket> {
        nack.nacks
            .iter()
            .flat_map(|pair| pair.into_iter())
            .filter_map(|seq| self.rtx_for(now, seq))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn packet(sequence: u16, len: usize) -> VideoPacket {
        VideoPacket {
            sequence,
            timestamp: sequence as u32 * 10,
            marker: sequence.is_multiple_of(3),
            payload: Bytes::from(vec![sequence as u8; len]),
        }
    }

    #[test]
    fn a_nacked_packet_comes_back_as_rtx_with_its_original_sequence_number() {
        let t = Instant::now();
        let mut h = SendHistory::new(0xabc, 101, 65_535, HistoryConfig::default());
        for s in 65_530..=65_535u16 {
            h.record(t, &packet(s, 100));
        }
        h.record(t, &packet(0, 100)); // wrapped
        let r = h.rtx_for(t, 65_533).unwrap();
        assert_eq!((r.ssrc, r.payload_type, r.sequence), (0xabc, 101, 65_535));
        assert_eq!(r.original_sequence(), Some(65_533));
        assert_eq!((r.timestamp, r.marker), (655_330, false));
        assert_eq!(&r.payload[2..], &[65_533u16 as u8; 100][..]);
        let (osn, original) = unwrap_rtx(&r.payload).unwrap();
        assert_eq!((osn, original.len()), (65_533, 100));
        // The RTX stream numbers on, across its own wrap.
        assert_eq!(h.rtx_for(t, 0).unwrap().sequence, 0);
        assert_eq!(rtx_payload_type(VideoCodec::H264), 105);
        let out = r.to_outgoing();
        assert_eq!(
            (out.ssrc, out.sequence, out.payload.len()),
            (0xabc, 65_535, 102)
        );
    }

    #[test]
    fn the_same_packet_is_not_resent_within_the_interval_and_old_ones_are_forgotten() {
        let t = Instant::now();
        let cfg = HistoryConfig {
            capacity: 10,
            max_age: Duration::from_millis(500),
            min_resend_interval: Duration::from_millis(40),
        };
        let mut h = SendHistory::new(1, 101, 0, cfg);
        for s in 0..20u16 {
            h.record(t, &packet(s, 10));
        }
        assert_eq!(h.len(), 10);
        assert!(h.rtx_for(t, 9).is_none(), "pushed out by count");
        assert!(h.rtx_for(t, 25).is_none(), "never sent");
        assert!(h.rtx_for(t, 15).is_some());
        assert!(h.rtx_for(t + Duration::from_millis(39), 15).is_none());
        assert!(h.rtx_for(t + Duration::from_millis(40), 15).is_some());
        assert!(
            h.rtx_for(t + Duration::from_millis(501), 16).is_none(),
            "too old"
        );
        assert!(h.is_empty());
        let s = h.stats();
        assert_eq!(
            (s.retransmitted, s.unknown, s.too_soon, s.recorded),
            (2, 3, 1, 20)
        );
        // Out of order: ignored.
        h.record(t, &packet(3, 10));
        h.record(t, &packet(2, 10));
        assert_eq!(h.stats().out_of_order, 1);
    }

    #[test]
    fn a_nack_is_answered_packet_by_packet() {
        let t = Instant::now();
        let mut h = SendHistory::new(1, 101, 0, HistoryConfig::default());
        for s in 100..140u16 {
            h.record(t, &packet(s, 10));
        }
        let nack = TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: 2,
            nacks: vec![
                NackPair {
                    packet_id: 101,
                    lost_packets: 0b101, // 102, 104
                },
                NackPair::new(500),
                NackPair::new(101),
            ],
        };
        let out = h.handle_nack(t, &nack);
        let osns: Vec<u16> = out.iter().filter_map(|r| r.original_sequence()).collect();
        assert_eq!(osns, [101, 102, 104]);
        assert_eq!(
            out.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(unwrap_rtx(&Bytes::from_static(&[1])).is_none());
    }
}
