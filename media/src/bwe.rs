//! The send side's bandwidth estimate, from the transport-cc feedback its receiver sends.
//!
//! Every packet leaves with a transport-wide sequence number (header extension 3,
//! docs/protocol.md §5.1); the receiver (Telegram's server, or the local one) reports when each
//! arrived ([`crate::twcc`]). [`SendSideBwe`] remembers what left when and how big, turns each
//! feedback into per-packet reports and runs Google Congestion Control on them: a growing queue
//! delay or loss lowers the target, a clean path raises it. The video encoder takes its bitrate
//! from the target, and [`active_layers`] says which simulcast layers that bitrate carries, so a
//! camera drops its top layer instead of congesting the link. The estimator itself is
//! rtc-interceptor's (`Gcc`, sans-IO: every instant is a parameter).

use std::time::{Duration, Instant};

use rtc::interceptor::{convert_twcc, BandwidthEstimator, Gcc, History};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

/// Sent packets older than this are forgotten: feedback comes every 100 ms, so anything older
/// was reported or lost with its feedback. Keeps the history bounded.
pub const HISTORY_HORIZON: Duration = Duration::from_secs(2);

/// Where the estimate starts, and its floor and ceiling, in bits per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BweConfig {
    pub initial_bps: u64,
    pub min_bps: u64,
    pub max_bps: u64,
}

impl Default for BweConfig {
    /// libwebrtc's defaults: start at 300 kbit/s; a camera's layers need up to about 3 Mbit/s.
    fn default() -> Self {
        BweConfig {
            initial_bps: 300_000,
            min_bps: 30_000,
            max_bps: 5_000_000,
        }
    }
}

/// The estimate of one transport.
pub struct SendSideBwe {
    history: History,
    gcc: Gcc,
    last_prune: Option<Instant>,
    feedbacks: u64,
    unknown_acks: u64,
}

impl std::fmt::Debug for SendSideBwe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSideBwe")
            .field("target_bps", &self.target_bps())
            .field("pending", &self.history.len())
            .field("feedbacks", &self.feedbacks)
            .finish()
    }
}

impl SendSideBwe {
    pub fn new(config: BweConfig) -> Self {
        SendSideBwe {
            history: History::new(),
            gcc: Gcc::new(
                config.initial_bps as f64,
                config.min_bps as f64,
                config.max_bps as f64,
            ),
            last_prune: None,
            feedbacks: 0,
            unknown_acks: 0,
        }
    }

    /// A packet left at `now` (when it was handed to the socket, not when it was made: a
    /// packet held by a pacer would otherwise count its wait as network delay).
    pub fn on_sent(
        &mut self,
        now: Instant,
        ssrc: u32,
        sequence: u16,
        transport_seq: u16,
        size: usize,
    ) {
        self.history
            .add_outgoing(ssrc, sequence, true, transport_seq, size, now);
        let due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(500));
        if due {
            if let Some(cutoff) = now.checked_sub(HISTORY_HORIZON) {
                self.history.prune_before(cutoff);
            }
            self.last_prune = Some(now);
        }
    }

    /// A transport-cc feedback arrived at `now`. Returns the round-trip time it implies, when
    /// it names a packet still in the history.
    pub fn on_feedback(&mut self, now: Instant, feedback: &TransportLayerCc) -> Option<Duration> {
        self.feedbacks += 1;
        let mut rtt = None;
        for ack in convert_twcc(feedback) {
            match self.history.on_twcc_feedback(now, ack) {
                Some(r) => rtt = Some(r),
                None => self.unknown_acks += 1,
            }
        }
        let reports = self.history.take_reports();
        self.gcc.on_reports(now, &reports);
        rtt
    }

    /// What the sender may send now, in bits per second (all streams of the transport).
    pub fn target_bps(&self) -> u64 {
        self.gcc.target_bitrate() as u64
    }

    /// Feedback packets taken, and acknowledgements of packets no longer (or never) recorded.
    pub fn counters(&self) -> (u64, u64) {
        (self.feedbacks, self.unknown_acks)
    }

    /// Packets sent and not yet reported.
    pub fn pending(&self) -> usize {
        self.history.len()
    }
}

/// A simulcast layer's bitrates in bits per second (libwebrtc's table for a 1280x720 camera:
/// 320x180, 640x360, 1280x720).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerRates {
    pub min: u64,
    pub target: u64,
    pub max: u64,
}

/// A camera's three layers, lowest first.
pub const CAMERA_LAYERS: [LayerRates; 3] = [
    LayerRates {
        min: 30_000,
        target: 150_000,
        max: 200_000,
    },
    LayerRates {
        min: 150_000,
        target: 500_000,
        max: 700_000,
    },
    LayerRates {
        min: 600_000,
        target: 2_500_000,
        max: 2_500_000,
    },
];

/// How many of `layers` (lowest first) a target bitrate carries: a layer is on when what is
/// left after every lower layer got its target still covers its minimum, as libwebrtc's
/// simulcast allocator decides. The lowest layer is always on (it degrades instead).
pub fn active_layers(target_bps: u64, layers: &[LayerRates]) -> usize {
    let mut used = 0u64;
    let mut on = 0;
    for (i, l) in layers.iter().enumerate() {
        if i > 0 && target_bps < used + l.min {
            break;
        }
        used += l.target;
        on = i + 1;
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twcc::TwccRecorder;
    use std::collections::VecDeque;

    /// A bottleneck: one queue served at `rate_bps`, drop-tail at `max_queue`, then a fixed
    /// propagation delay. Returns when a packet of `size` bytes arriving at `at` gets out, or
    /// `None` when the queue is full.
    struct Bottleneck {
        rate_bps: u64,
        max_queue: Duration,
        propagation: Duration,
        free_at: Option<Instant>,
    }

    impl Bottleneck {
        fn pass(&mut self, at: Instant, size: usize) -> Option<Instant> {
            let start = self.free_at.map_or(at, |f| f.max(at));
            if start.saturating_duration_since(at) > self.max_queue {
                return None;
            }
            let serve = Duration::from_nanos(size as u64 * 8 * 1_000_000_000 / self.rate_bps);
            self.free_at = Some(start + serve);
            Some(start + serve + self.propagation)
        }
    }

    /// A sender pacing 1,200-byte packets at the estimate through a bottleneck to a receiver
    /// that sends transport-cc feedback every 100 ms; returns the estimates, one per second.
    fn run(rate_bps: u64, seconds: u64) -> Vec<u64> {
        let t0 = Instant::now();
        let tick = Duration::from_millis(5);
        let mut bwe = SendSideBwe::new(BweConfig::default());
        let mut link = Bottleneck {
            rate_bps,
            max_queue: Duration::from_millis(300),
            propagation: Duration::from_millis(20),
            free_at: None,
        };
        let mut in_flight: VecDeque<(Instant, u16)> = VecDeque::new();
        let mut recorder = TwccRecorder::new(1);
        let mut feedback_in_flight: VecDeque<(Instant, TransportLayerCc)> = VecDeque::new();
        let mut next_feedback = t0 + Duration::from_millis(100);
        let mut budget = 0f64;
        let mut tseq = 0u16;
        let mut estimates = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(seconds) {
            budget += bwe.target_bps() as f64 * tick.as_secs_f64();
            budget = budget.min(bwe.target_bps() as f64 * 0.05);
            while budget >= 1200.0 * 8.0 {
                budget -= 1200.0 * 8.0;
                bwe.on_sent(now, 7, tseq, tseq, 1200);
                if let Some(arrival) = link.pass(now, 1200) {
                    in_flight.push_back((arrival, tseq));
                }
                tseq = tseq.wrapping_add(1);
            }
            now += tick;
            while in_flight.front().is_some_and(|(at, _)| *at <= now) {
                let (at, seq) = in_flight.pop_front().unwrap();
                recorder.record(seq, at.duration_since(t0).as_micros() as i64);
            }
            if now >= next_feedback {
                if let Some(fb) = recorder.build() {
                    feedback_in_flight.push_back((now + Duration::from_millis(20), fb));
                }
                next_feedback += Duration::from_millis(100);
            }
            while feedback_in_flight.front().is_some_and(|(at, _)| *at <= now) {
                let (at, fb) = feedback_in_flight.pop_front().unwrap();
                bwe.on_feedback(at, &fb);
            }
            if (now - t0).as_millis().is_multiple_of(1000) {
                estimates.push(bwe.target_bps());
            }
        }
        assert!(
            bwe.pending() < 2000,
            "the history stays bounded: {}",
            bwe.pending()
        );
        estimates
    }

    #[test]
    fn on_a_500_kbit_bottleneck_the_estimate_settles_near_it_and_the_top_layer_goes_off() {
        let est = run(500_000, 40);
        println!("500 kbit/s link, estimate per second: {est:?}");
        let settled = &est[20..];
        let mean = settled.iter().sum::<u64>() as f64 / settled.len() as f64;
        assert!(
            (350_000.0..=650_000.0).contains(&mean),
            "mean over the last 20 s {mean:.0} b/s; per second {est:?}"
        );
        for e in settled {
            assert!(*e <= 800_000, "never far above the link: {est:?}");
            assert!(
                active_layers(*e, &CAMERA_LAYERS) < 3,
                "the top layer is off: {e}"
            );
        }
    }

    #[test]
    fn on_a_fast_link_the_estimate_grows_past_the_start_and_carries_every_layer() {
        let est = run(5_000_000, 40);
        println!("5 Mbit/s link, estimate per second: {est:?}");
        let last = *est.last().unwrap();
        assert!(last > 1_500_000, "{est:?}");
        assert_eq!(active_layers(last, &CAMERA_LAYERS), 3);
    }

    #[test]
    fn layers_switch_on_as_libwebrtc_allocates_them() {
        assert_eq!(active_layers(0, &CAMERA_LAYERS), 1);
        assert_eq!(active_layers(299_999, &CAMERA_LAYERS), 1);
        assert_eq!(active_layers(300_000, &CAMERA_LAYERS), 2);
        assert_eq!(active_layers(1_249_999, &CAMERA_LAYERS), 2);
        assert_eq!(active_layers(1_250_000, &CAMERA_LAYERS), 3);
    }
}
