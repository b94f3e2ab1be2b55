//! The call task's side of a published video: each encoded layer frame becomes RTP on the
//! layer's SSRC (the sources `JoinPayload` declared: layer i on `audio + 1 + 2i`, its RTX on the
//! next), every packet is kept for retransmission, and the receivers' feedback is answered —
//! NACK with RTX from the history, PLI and FIR with a keyframe request to the encoder thread.
//!
//! Sans-IO like the audio sender: it is handed the transport and `now`, and says what it did.

use std::time::Instant;

use groupcall_media::bwe::{active_layers, BweConfig, LayerRates, SendSideBwe, CAMERA_LAYERS};
use groupcall_media::transport::rtcp;
use groupcall_media::transport::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use groupcall_media::video::history::rtx_payload_type;
use groupcall_media::video::packetize::DEFAULT_MAX_PAYLOAD;
use groupcall_media::video::{HistoryConfig, HistoryStats, Packetizer, SendHistory};
use groupcall_media::{OutgoingRtp, Transport, VideoCodec, VideoPublish};
use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::error::Result;

struct Layer {
    ssrc: u32,
    /// The last frame's RTP timestamp and when it went out: the RTP clock now, for reports.
    last: Option<(u32, Instant)>,
    packetizer: Packetizer,
    history: SendHistory,
    frames: u64,
    packets: u64,
    bytes: u64,
}

/// What a published video sent, for [`crate::CallStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoSendStats {
    /// Frames sent per layer, lowest first (3 for a camera, 2 for a screen).
    pub frames: [u64; 3],
    pub packets: u64,
    pub bytes: u64,
    pub keyframes: u64,
    /// Keyframe requests (PLI, FIR) received.
    pub keyframe_requests: u64,
    /// NACKed packets answered with RTX, and NACKed ones too old to answer.
    pub retransmitted: u64,
    pub history_misses: u64,
    /// The send-side bandwidth estimate (transport-cc feedback through GCC), bits per second.
    pub estimate_bps: u64,
    /// Layers the estimate carries (the encoder runs at most these, fewer if nobody watches).
    pub estimate_layers: usize,
}

/// What the receivers' feedback asks of the encoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Feedback {
    /// A PLI or FIR: the next frame of every layer is a keyframe.
    pub keyframe: bool,
    /// The estimate changed how many layers fit.
    pub layers: Option<usize>,
}

/// The RTP side of one published video on one connection.
pub(crate) struct VideoSender {
    codec: VideoCodec,
    layers: Vec<Layer>,
    keyframes: u64,
    keyframe_requests: u64,
    bwe: SendSideBwe,
    /// Each layer's rates, scaled from libwebrtc's 720p table to this source's size.
    rates: Vec<LayerRates>,
    estimate_layers: usize,
}

impl VideoSender {
    /// The layers `publish` declares for `audio_ssrc`, sending `codec`.
    pub(crate) fn new(
        audio_ssrc: u32,
        publish: VideoPublish,
        codec: VideoCodec,
        start_bps: Option<u64>,
    ) -> Result<Self> {
        let groups = publish.ssrc_groups(audio_ssrc);
        let mut layers = Vec::new();
        for g in groups.iter().filter(|g| g.semantics == "FID") {
            let (ssrc, rtx) = (g.sources[0].0, g.sources[1].0);
            layers.push(Layer {
                ssrc,
                last: None,
                packetizer: Packetizer::new(
                    codec,
                    DEFAULT_MAX_PAYLOAD,
                    rand::random(),
                    rand::random(),
                )?,
                history: SendHistory::new(
                    rtx,
                    rtx_payload_type(codec),
                    rand::random(),
                    HistoryConfig::default(),
                ),
                frames: 0,
                packets: 0,
                bytes: 0,
            });
        }
        // The top layers of libwebrtc's table, as many as this stream has (a screen's two
        // are a camera's upper two).
        let rates = CAMERA_LAYERS[CAMERA_LAYERS.len() - layers.len().min(3)..].to_vec();
        let config = BweConfig {
            initial_bps: start_bps.unwrap_or(BweConfig::default().initial_bps),
            ..BweConfig::default()
        };
        let estimate_layers = active_layers(config.initial_bps, &rates);
        Ok(VideoSender {
            codec,
            layers,
            keyframes: 0,
            keyframe_requests: 0,
            bwe: SendSideBwe::new(config),
            rates,
            estimate_layers,
        })
    }

    /// How many layers the estimate carries now.
    pub(crate) fn estimate_layers(&self) -> usize {
        self.estimate_layers
    }

    pub(crate) fn codec(&self) -> VideoCodec {
        self.codec
    }

    pub(crate) fn owns(&self, ssrc: u32) -> bool {
        self.layers.iter().any(|l| l.ssrc == ssrc)
    }

    /// Packetizes and sends one encoded frame of `layer`. Packets the transport cannot take yet
    /// (not connected) are dropped: a receiver starts from a keyframe anyway.
    pub(crate) fn send_frame(
        &mut self,
        now: Instant,
        transport: &mut Transport,
        layer: usize,
        rtp_timestamp: u32,
        keyframe: bool,
        data: &[u8],
    ) -> Result<usize> {
        let pt = self.codec.payload_type();
        let Some(l) = self.layers.get_mut(layer) else {
            return Ok(0);
        };
        let packets = l.packetizer.packetize(rtp_timestamp, data)?;
        let n = packets.len();
        for p in &packets {
            l.history.record(now, p);
            let out = OutgoingRtp {
                marker: p.marker,
                ..OutgoingRtp::new(l.ssrc, p.sequence, p.timestamp, pt, &p.payload)
            };
            let tseq = transport.next_transport_seq();
            if transport.send_rtp(now, &out).is_ok() {
                l.packets += 1;
                l.bytes += p.payload.len() as u64;
                if let Some(t) = tseq {
                    // Header, extensions and SRTP tag on top of the payload.
                    let size = p.payload.len() + groupcall_media::video::packetize::PACKET_OVERHEAD;
                    self.bwe.on_sent(now, l.ssrc, p.sequence, t, size);
                }
            }
        }
        l.frames += 1;
        l.last = Some((rtp_timestamp, now));
        if keyframe {
            self.keyframes += 1;
        }
        Ok(n)
    }

    /// Answers what an RTCP compound says about our layers: NACKs with RTX, transport-cc
    /// feedback into the estimate; says what the encoder must do.
    pub(crate) fn on_rtcp(
        &mut self,
        now: Instant,
        transport: &mut Transport,
        packets: &[Box<dyn rtcp::packet::Packet>],
    ) -> Feedback {
        let mut keyframe = false;
        let mut layers = None;
        for p in packets {
            let any = p.as_any();
            if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                self.bwe.on_feedback(now, cc);
                let fit = active_layers(self.bwe.target_bps(), &self.rates);
                if fit != self.estimate_layers {
                    tracing::debug!(
                        estimate_bps = self.bwe.target_bps(),
                        layers = fit,
                        "bandwidth estimate moved"
                    );
                    self.estimate_layers = fit;
                    layers = Some(fit);
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                if let Some(l) = self.layers.iter_mut().find(|l| l.ssrc == nack.media_ssrc) {
                    for rtx in l.history.handle_nack(now, nack) {
                        let _ = transport.send_rtp(now, &rtx.to_outgoing());
                    }
                }
            } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                if self.owns(pli.media_ssrc) {
                    keyframe = true;
                }
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                if fir.fir.iter().any(|e| self.owns(e.ssrc)) || self.owns(fir.media_ssrc) {
                    keyframe = true;
                }
            }
        }
        if keyframe {
            self.keyframe_requests += 1;
        }
        Feedback { keyframe, layers }
    }

    /// Sender reports for the layers that sent anything: each layer's RTP clock at `now`,
    /// carried on from its last frame at 90 kHz.
    pub(crate) fn sender_reports(&self, now: Instant) -> Vec<groupcall_media::SenderInfo> {
        self.layers
            .iter()
            .filter_map(|l| {
                let (rtp, at) = l.last?;
                let ticks = (now.saturating_duration_since(at).as_micros() * 9 / 100) as u32;
                Some(groupcall_media::SenderInfo {
                    ssrc: l.ssrc,
                    rtp_time: rtp.wrapping_add(ticks),
                    packets: l.packets as u32,
                    octets: l.bytes as u32,
                })
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> VideoSendStats {
        let mut s = VideoSendStats {
            keyframes: self.keyframes,
            keyframe_requests: self.keyframe_requests,
            estimate_bps: self.bwe.target_bps(),
            estimate_layers: self.estimate_layers,
            ..Default::default()
        };
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(f) = s.frames.get_mut(i) {
                *f = l.frames;
            }
            s.packets += l.packets;
            s.bytes += l.bytes;
            let h: HistoryStats = l.history.stats();
            s.retransmitted += h.retransmitted;
            s.history_misses += h.unknown;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sender_reports_carry_each_layers_rtp_clock_on_from_its_last_frame() {
        let mut s = VideoSender::new(1000, VideoPublish::Camera, VideoCodec::H264, None).unwrap();
        assert!(
            s.sender_reports(Instant::now()).is_empty(),
            "nothing sent yet"
        );
        let t0 = Instant::now();
        s.layers[2].last = Some((u32::MAX - 1000, t0));
        s.layers[2].packets = 7;
        let r = s.sender_reports(t0 + Duration::from_millis(500));
        assert_eq!(r.len(), 1, "only the layer that sent");
        assert_eq!(r[0].ssrc, 1000 + 1 + 2 * 2);
        // Half a second at 90 kHz, wrapping.
        assert_eq!(r[0].rtp_time, (u32::MAX - 1000).wrapping_add(45_000));
        assert_eq!(r[0].packets, 7);
    }
}
