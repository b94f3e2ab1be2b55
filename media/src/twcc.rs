//! Transport-wide congestion-control feedback, the receiving side
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! A libwebrtc sender numbers every packet it sends on a transport (header extension 3,
//! docs/protocol.md §5.1) and estimates the bandwidth from when each one arrived. Without this
//! feedback its estimate stays where it started (300 kbit/s), so a camera never gets past its
//! lowest simulcast layer. [`TwccRecorder`] keeps the arrival times of the packets received since
//! the last feedback and builds the RTCP packet that reports them; the transport sends one every
//! [`crate::TransportConfig::transport_feedback_interval`].

use std::collections::BTreeMap;

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    TransportLayerCc,
};

/// Arrivals kept while waiting for the next feedback; a flood of packets past this keeps the
/// newest (the older ones are reported as lost, which is what they are to the estimate).
pub const MAX_PENDING: usize = 4096;

/// The widest range of sequence numbers one feedback covers.
const MAX_RANGE: i64 = 4096;

/// Records arrivals and builds feedback about them.
#[derive(Debug)]
pub struct TwccRecorder {
    sender_ssrc: u32,
    /// Extended (unwrapped) sequence number → arrival in microseconds.
    arrivals: BTreeMap<i64, i64>,
    last_extended: Option<i64>,
    /// The first sequence number the next feedback reports; older arrivals are late.
    next_base: Option<i64>,
    fb_count: u8,
}

impl TwccRecorder {
    /// `sender_ssrc` is the SSRC the feedback is sent from.
    pub fn new(sender_ssrc: u32) -> Self {
        TwccRecorder {
            sender_ssrc,
            arrivals: BTreeMap::new(),
            last_extended: None,
            next_base: None,
            fb_count: 0,
        }
    }

    /// How many arrivals wait for the next feedback.
    pub fn pending(&self) -> usize {
        self.arrivals.len()
    }

    /// A packet with transport-wide sequence number `seq` arrived at `arrival_us` (any
    /// monotonic clock in microseconds).
    pub fn record(&mut self, seq: u16, arrival_us: i64) {
        let ext = match self.last_extended {
            None => seq as i64,
            Some(last) => {
                let delta = seq.wrapping_sub(last as u16) as i16 as i64;
                last + delta
            }
        };
        if self.last_extended.is_none_or(|l| ext > l) {
            self.last_extended = Some(ext);
        }
        if self.next_base.is_some_and(|b| ext < b) {
            return; // reported lost already; a late arrival changes nothing now
        }
        self.arrivals.insert(ext, arrival_us);
        while self.arrivals.len() > MAX_PENDING {
            self.arrivals.pop_first();
        }
    }

    /// The feedback for everything recorded since the last one, or `None` when nothing was.
    pub fn build(&mut self) -> Option<TransportLayerCc> {
        let (&last, _) = self.arrivals.last_key_value()?;
        let (&first, _) = self.arrivals.first_key_value()?;
        let mut base = self.next_base.unwrap_or(first).min(first);
        if last - base >= MAX_RANGE {
            base = last - MAX_RANGE + 1;
        }
        let first_arrival = self
            .arrivals
            .range(base..)
            .map(|(_, t)| *t)
            .next()
            .unwrap_or_default();
        // 64 ms units, 24 bits, as the draft says.
        let reference = first_arrival.div_euclid(64_000);
        let mut previous = reference * 64_000;

        let mut chunks: Vec<PacketStatusChunk> = Vec::new();
        let mut deltas = Vec::new();
        let mut run: Option<(SymbolTypeTcc, u16)> = None;
        let flush = |run: &mut Option<(SymbolTypeTcc, u16)>,
                     chunks: &mut Vec<PacketStatusChunk>| {
            if let Some((symbol, length)) = run.take() {
                chunks.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: symbol,
                    run_length: length,
                }));
            }
        };
        for seq in base..=last {
            let symbol = match self.arrivals.get(&seq) {
                None => SymbolTypeTcc::PacketNotReceived,
                Some(&at) => {
                    // 250 µs ticks; the next packet's delta is from this one's rounded time.
                    let ticks = (at - previous)
                        .div_euclid(250)
                        .clamp(i16::MIN as i64, i16::MAX as i64);
                    previous += ticks * 250;
                    let symbol = if (0..=255).contains(&ticks) {
                        SymbolTypeTcc::PacketReceivedSmallDelta
                    } else {
                        SymbolTypeTcc::PacketReceivedLargeDelta
                    };
                    deltas.push(RecvDelta {
                        type_tcc_packet: symbol,
                        delta: ticks * 250,
                    });
                    symbol
                }
            };
            match &mut run {
                // 13 bits of run length.
                Some((s, n)) if *s == symbol && *n < 0x1fff => *n += 1,
                _ => {
                    flush(&mut run, &mut chunks);
                    run = Some((symbol, 1));
                }
            }
        }
        flush(&mut run, &mut chunks);

        let feedback = TransportLayerCc {
            sender_ssrc: self.sender_ssrc,
            media_ssrc: 0,
            base_sequence_number: base as u16,
            packet_status_count: (last - base + 1) as u16,
            reference_time: (reference as u32) & 0x00ff_ffff,
            fb_pkt_count: self.fb_count,
            packet_chunks: chunks,
            recv_deltas: deltas,
        };
        self.fb_count = self.fb_count.wrapping_add(1);
        self.next_base = Some(last + 1);
        self.arrivals.clear();
        Some(feedback)
    }
}

/// What a feedback says, packet by packet: its sequence number and its arrival time in
/// microseconds on the receiver's clock (`None`: not received). For tests and diagnostics.
pub fn arrivals(fb: &TransportLayerCc) -> Vec<(u16, Option<i64>)> {
    let mut symbols = Vec::new();
    for c in &fb.packet_chunks {
        match c {
            PacketStatusChunk::RunLengthChunk(r) => symbols.extend(std::iter::repeat_n(
                r.packet_status_symbol,
                r.run_length as usize,
            )),
            PacketStatusChunk::StatusVectorChunk(v) => {
                symbols.extend(v.symbol_list.iter().copied())
            }
        }
    }
    symbols.truncate(fb.packet_status_count as usize);
    let mut t = fb.reference_time as i64 * 64_000;
    let mut deltas = fb.recv_deltas.iter();
    symbols
        .iter()
        .enumerate()
        .map_while(|(i, s)| {
            let seq = fb.base_sequence_number.wrapping_add(i as u16);
            if *s == SymbolTypeTcc::PacketNotReceived {
                return Some((seq, None));
            }
            // A received packet without a delta (a malformed feedback) ends the timeline.
            let d = deltas.next()?;
            t += d.delta;
            Some((seq, Some(t)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::packet::unmarshal;
    use rtc::shared::marshal::Marshal;

    #[test]
    fn feedback_reports_each_arrival_and_each_loss_and_survives_the_wire() {
        let mut r = TwccRecorder::new(1);
        assert!(r.build().is_none(), "nothing received, nothing to say");
        // 65534, 65535, (0 lost), 1, then 2 arrives 100 ms later (a large delta) and 3 early
        // (reordered: before 2).
        let t0 = 5_000_000;
        r.record(65534, t0);
        r.record(65535, t0 + 1_000);
        r.record(1, t0 + 2_000);
        r.record(3, t0 + 2_500);
        r.record(2, t0 + 102_000);
        let fb = r.build().unwrap();
        assert_eq!(fb.base_sequence_number, 65534);
        assert_eq!(fb.packet_status_count, 6);
        let got = arrivals(&fb);
        let expect = [
            (65534, Some(t0)),
            (65535, Some(t0 + 1_000)),
            (0, None),
            (1, Some(t0 + 2_000)),
            (2, Some(t0 + 102_000)),
            (3, Some(t0 + 2_500)),
        ];
        assert_eq!(got, expect);

        // Through the wire format and back: the same.
        let raw = fb.marshal().unwrap();
        let back = unmarshal(&mut &raw[..]).unwrap();
        let back = back[0]
            .as_any()
            .downcast_ref::<TransportLayerCc>()
            .expect("a transport-cc feedback")
            .clone();
        assert_eq!(arrivals(&back), expect);

        // The next feedback starts where this one ended; a late arrival of an old packet is
        // not reported again, and the feedback count goes up.
        r.record(0, t0 + 200_000);
        r.record(4, t0 + 200_000);
        let next = r.build().unwrap();
        assert_eq!(
            (next.base_sequence_number, next.packet_status_count),
            (4, 1)
        );
        assert_eq!(next.fb_pkt_count, fb.fb_pkt_count + 1);
    }

    #[test]
    fn a_flood_keeps_memory_bounded() {
        let mut r = TwccRecorder::new(1);
        for i in 0..(3 * MAX_PENDING as u32) {
            r.record(i as u16, i as i64 * 10);
        }
        assert!(r.pending() <= MAX_PENDING);
        let fb = r.build().unwrap();
        assert!(fb.packet_status_count as i64 <= MAX_RANGE);
        assert!(fb.marshal().is_ok());
    }
}
