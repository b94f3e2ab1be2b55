//! Pacing: packets leave at a steady rate instead of in the bursts an encoder makes.
//!
//! A keyframe is tens of packets made at once. Sent in one burst it fills the bottleneck's
//! queue, the transport-cc feedback reads the queueing as congestion, the estimate drops and
//! the next frames are lost or late. Like libwebrtc, [`PacedQueue`] lets video out at a multiple
//! of the estimate ([`PACING_FACTOR`]), a couple of packets at a time, and lets audio jump the
//! queue: it is small, steady, and what people notice first. The token bucket is
//! rtc-interceptor's (`Pacer`, sans-IO: every instant is a parameter).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{Pacer, PACER_MIN_BURST_BITS};

/// Video leaves at this multiple of the bandwidth estimate (libwebrtc's factor): fast enough
/// that a keyframe does not hold up the frames behind it, slow enough not to burst.
pub const PACING_FACTOR: f64 = 2.5;

/// The most that leaves at once: two full packets.
pub const BURST_BITS: f64 = 2.0 * PACER_MIN_BURST_BITS;

/// Video waiting longer than this is dropped from the front (the receiver would ask for a
/// keyframe anyway), so a stalled link cannot grow the queue without bound.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(2);

/// The most packets queued; past it the oldest video goes.
pub const MAX_QUEUED: usize = 4096;

/// What a packet is, for the queue's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Sent at once, ahead of any video, and not counted against the video budget's wait.
    Audio,
    /// Paced.
    Video,
}

/// Counters of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerStats {
    pub sent: u64,
    pub dropped_late: u64,
    pub dropped_full: u64,
}

/// A paced send queue of items `T` (packets, or handles to them).
pub struct PacedQueue<T> {
    bucket: Pacer,
    audio: VecDeque<T>,
    video: VecDeque<(Instant, T, usize)>,
    stats: PacerStats,
}

impl<T> std::fmt::Debug for PacedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacedQueue")
            .field("rate_bps", &self.bucket.target_bitrate())
            .field("audio", &self.audio.len())
            .field("video", &self.video.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T> PacedQueue<T> {
    /// A queue for a sender whose bandwidth estimate is `target_bps`.
    pub fn new(target_bps: u64) -> Self {
        PacedQueue {
            bucket: Pacer::new(target_bps as f64 * PACING_FACTOR).with_burst_bits(BURST_BITS),
            audio: VecDeque::new(),
            video: VecDeque::new(),
            stats: PacerStats::default(),
        }
    }

    /// Follows a new estimate.
    pub fn set_target(&mut self, target_bps: u64) {
        self.bucket
            .set_target_bitrate(target_bps as f64 * PACING_FACTOR);
    }

    pub fn push(&mut self, now: Instant, item: T, size: usize, priority: Priority) {
        match priority {
            Priority::Audio => self.audio.push_back(item),
            Priority::Video => {
                if self.audio.len() + self.video.len() >= MAX_QUEUED
                    && self.video.pop_front().is_some()
                {
                    self.stats.dropped_full += 1;
                }
                self.video.push_back((now, item, size));
            }
        }
    }

    /// The next packet to send now, if any may go.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        if let Some(a) = self.audio.pop_front() {
            self.stats.sent += 1;
            return Some(a);
        }
        while self
            .video
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) > MAX_QUEUE_DELAY)
        {
            self.video.pop_front();
            self.stats.dropped_late += 1;
        }
        let (_, _, size) = self.video.front()?;
        let bits = *size as f64 * 8.0;
        self.bucket.refill(now);
        if !self.bucket.can_afford(bits) {
            return None;
        }
        self.bucket.consume(bits);
        self.stats.sent += 1;
        self.video.pop_front().map(|(_, item, _)| item)
    }

    /// When a packet may next go: now if audio waits, else when the next video packet is
    /// affordable; `None` when nothing waits.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.audio.is_empty() {
            return Some(now);
        }
        let (_, _, size) = self.video.front()?;
        let bits = *size as f64 * 8.0;
        Some(self.bucket.affordable_at(bits).map_or(now, |t| t.max(now)))
    }

    pub fn len(&self) -> usize {
        self.audio.len() + self.video.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the queue on 1 ms steps until empty; returns (item, send time in ms) in order.
    fn drain<T: Copy>(q: &mut PacedQueue<T>, t0: Instant, until_ms: u64) -> Vec<(T, u64)> {
        let mut out = Vec::new();
        for ms in 0..until_ms {
            let now = t0 + Duration::from_millis(ms);
            while let Some(x) = q.pop(now) {
                out.push((x, ms));
            }
        }
        out
    }

    #[test]
    fn a_keyframe_leaves_spread_at_the_pacing_rate_and_audio_jumps_the_queue() {
        let t0 = Instant::now();
        // 1 Mbit/s estimate: video paced at 2.5 Mbit/s. A 100 KB keyframe in 85 packets.
        let mut q = PacedQueue::new(1_000_000);
        for i in 0..85u32 {
            q.push(t0, i, 1200, Priority::Video);
        }
        // Audio made 10 ms later goes out at once, ahead of the rest of the keyframe.
        let mut sent = drain(&mut q, t0, 10);
        q.push(t0 + Duration::from_millis(10), 1000, 120, Priority::Audio);
        let more = drain(&mut q, t0 + Duration::from_millis(10), 1000);
        sent.extend(more.into_iter().map(|(x, ms)| (x, ms + 10)));
        assert_eq!(sent.len(), 86);
        let audio_at = sent.iter().position(|(x, _)| *x == 1000).unwrap();
        assert!(
            sent[audio_at].1 == 10,
            "audio at once: {:?}",
            sent[audio_at]
        );
        assert!(audio_at < 40, "ahead of most of the keyframe");

        let video: Vec<u64> = sent
            .iter()
            .filter(|(x, _)| *x < 1000)
            .map(|(_, ms)| *ms)
            .collect();
        // 85 x 1200 bytes at 2.5 Mbit/s is 326 ms; within 10 % of that, not at once.
        let span = *video.last().unwrap();
        assert!(
            (290..=360).contains(&span),
            "keyframe spread over {span} ms"
        );
        // No 10 ms window carries more than 2.5 Mbit/s x 10 ms (3 packets) plus the burst (2).
        for w in 0..span {
            let n = video.iter().filter(|ms| (w..w + 10).contains(*ms)).count();
            assert!(n <= 5, "{n} packets within 10 ms from {w} ms");
        }
        assert_eq!(q.stats().sent, 86);
    }

    #[test]
    fn a_stalled_queue_drops_old_video_and_stays_bounded() {
        let t0 = Instant::now();
        let mut q = PacedQueue::new(0); // nothing affordable
        for i in 0..(MAX_QUEUED as u32 + 10) {
            q.push(t0, i, 1200, Priority::Video);
        }
        assert_eq!(q.len(), MAX_QUEUED);
        assert_eq!(q.stats().dropped_full, 10);
        assert_eq!(q.pop(t0 + Duration::from_secs(3)), None);
        assert_eq!(q.stats().dropped_late, MAX_QUEUED as u64);
        assert!(q.is_empty());
        // Audio still goes at a zero rate.
        q.push(t0, 7, 100, Priority::Audio);
        assert_eq!(q.pop(t0), Some(7));
    }

    #[test]
    fn the_rate_follows_the_estimate() {
        let t0 = Instant::now();
        let mut q = PacedQueue::new(400_000); // 1 Mbit/s pacing
        for i in 0..50u32 {
            q.push(t0, i, 1250, Priority::Video);
        }
        let slow = drain(&mut q, t0, 100).len();
        q.set_target(4_000_000); // 10 Mbit/s pacing
        let fast = drain(&mut q, t0 + Duration::from_millis(100), 100).len();
        // 100 ms: about 10 packets at 1 Mbit/s, the rest (up to 100) at 10 Mbit/s.
        assert!((9..=13).contains(&slow), "{slow}");
        assert_eq!(slow + fast, 50);
        assert!(q.poll_timeout(t0).is_none(), "nothing waits");
    }
}
