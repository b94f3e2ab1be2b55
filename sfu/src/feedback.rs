//! Receivers' video feedback, routed to the publisher it is about.
//!
//! A receiver asks for a keyframe (PLI, FIR) when it starts decoding a stream or loses its
//! reference, and for retransmissions (NACK) of lost packets. The server forwards video with the
//! publisher's SSRCs, so the feedback names the publisher's own SSRC: it goes to whoever declared
//! that source, as it came. Keyframe requests from many receivers are merged: at most one per
//! source per [`KEYFRAME_REQUEST_INTERVAL`], since every keyframe costs the publisher's whole
//! uplink for a moment and one serves every receiver.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use groupcall_media::rtcp;
use rtcp::packet::Packet;
use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// The shortest time between two keyframe requests the server passes on for one source.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);

/// What a receiver's feedback asks of one publisher's source.
#[derive(Debug)]
pub struct Request {
    /// The publisher's SSRC the feedback is about.
    pub media_ssrc: u32,
    pub packet: Box<dyn Packet>,
    pub kind: RequestKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Keyframe,
    Nack,
}

/// Counters of what was routed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedbackStats {
    pub keyframe_requests_in: u64,
    /// Passed on to a publisher (the rest were merged into an earlier one).
    pub keyframe_requests_out: u64,
    pub nacks: u64,
}

/// Picks the feedback out of an RTCP compound packet and merges keyframe requests.
#[derive(Debug, Default)]
pub struct FeedbackRouter {
    last_keyframe_request: HashMap<u32, Instant>,
    stats: FeedbackStats,
}

impl FeedbackRouter {
    pub fn stats(&self) -> FeedbackStats {
        self.stats
    }

    /// The requests in `packets` that should reach a publisher now.
    pub fn route(&mut self, now: Instant, packets: &[Box<dyn Packet>], out: &mut Vec<Request>) {
        for p in packets {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                self.keyframe(now, pli.media_ssrc, Box::new(pli.clone()), out);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                // FIR names its sources in its entries; media_ssrc is 0 by RFC 5104.
                for e in &fir.fir {
                    let one = FullIntraRequest {
                        sender_ssrc: fir.sender_ssrc,
                        media_ssrc: 0,
                        fir: vec![e.clone()],
                    };
                    self.keyframe(now, e.ssrc, Box::new(one), out);
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                self.stats.nacks += 1;
                out.push(Request {
                    media_ssrc: nack.media_ssrc,
                    packet: Box::new(nack.clone()),
                    kind: RequestKind::Nack,
                });
            }
        }
    }

    fn keyframe(
        &mut self,
        now: Instant,
        ssrc: u32,
        packet: Box<dyn Packet>,
        out: &mut Vec<Request>,
    ) {
        self.stats.keyframe_requests_in += 1;
        if !self.may_request_keyframe(now, ssrc) {
            return;
        }
        out.push(Request {
            media_ssrc: ssrc,
            packet,
            kind: RequestKind::Keyframe,
        });
    }

    /// Whether a keyframe request for `ssrc` may go out now (none did for
    /// [`KEYFRAME_REQUEST_INTERVAL`]); if so, it is counted as sent. The server's own requests
    /// (a receiver switching layers) share the limit with receivers'.
    pub fn may_request_keyframe(&mut self, now: Instant, ssrc: u32) -> bool {
        if let Some(last) = self.last_keyframe_request.get(&ssrc) {
            if now.saturating_duration_since(*last) < KEYFRAME_REQUEST_INTERVAL {
                return false;
            }
        }
        self.last_keyframe_request.insert(ssrc, now);
        self.stats.keyframe_requests_out += 1;
        true
    }

    /// Forgets a source whose publisher left (keeps the map bounded by the live sources).
    pub fn forget(&mut self, ssrc: u32) {
        self.last_keyframe_request.remove(&ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::payload_feedbacks::full_intra_request::FirEntry;
    use rtcp::receiver_report::ReceiverReport;
    use rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn pli(media: u32) -> Box<dyn Packet> {
        Box::new(PictureLossIndication {
            sender_ssrc: 7,
            media_ssrc: media,
        })
    }

    #[test]
    fn keyframe_requests_are_merged_per_source_and_nacks_pass() {
        let t0 = Instant::now();
        let mut r = FeedbackRouter::default();
        let mut out = Vec::new();
        let nack: Box<dyn Packet> = Box::new(TransportLayerNack {
            sender_ssrc: 7,
            media_ssrc: 500,
            nacks: vec![NackPair {
                packet_id: 10,
                lost_packets: 0,
            }],
        });
        r.route(
            t0,
            &[Box::new(ReceiverReport::default()), pli(100), nack],
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].media_ssrc, out[0].kind),
            (100, RequestKind::Keyframe)
        );
        assert_eq!((out[1].media_ssrc, out[1].kind), (500, RequestKind::Nack));

        // Another receiver asks for the same source at once: merged. Another source: passed.
        out.clear();
        r.route(
            t0 + Duration::from_millis(100),
            &[pli(100), pli(200)],
            &mut out,
        );
        assert_eq!(out.iter().map(|q| q.media_ssrc).collect::<Vec<_>>(), [200]);

        // After the interval the next request passes again; FIR entries count per source.
        out.clear();
        let fir: Box<dyn Packet> = Box::new(FullIntraRequest {
            sender_ssrc: 7,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: 100,
                sequence_number: 1,
            }],
        });
        r.route(t0 + KEYFRAME_REQUEST_INTERVAL, &[fir], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].media_ssrc, 100);
        assert_eq!(
            r.stats(),
            FeedbackStats {
                keyframe_requests_in: 4,
                keyframe_requests_out: 3,
                nacks: 1
            }
        );
    }
}
