//! One speaker's adaptive jitter buffer: Opus packets in (any order, duplicated, late, 10..120 ms
//! long), exactly 20 ms of decoded PCM out per pull.
//!
//! The buffer keeps a playout cursor in RTP time and a "delay": how far the cursor runs behind
//! the sender's clock as estimated from the fastest recent packet. The target delay is the
//! 95th percentile of how late the last 200 packets came relative to that fastest one, plus a
//! bump for every packet that came too late anyway (it decays). Each pull plays whatever
//! covers the cursor. When that audio is missing, the delay decides: below the target the
//! buffer waits (conceals without moving the cursor, which adds delay exactly when packets
//! come late); at or above it, the audio is lost and is rebuilt from the next packet's in-band
//! FEC when that packet is here, or concealed ([`super::expand`]: the last pitch period
//! repeated, then faded, and cross-faded into the audio that follows). The delay moves
//! towards the target by time-stretching ([`super::stretch`]): a pitch period out of a packet
//! when two frames above it, one in when below it, so neither a frame is dropped nor a gap
//! inserted; only far behind (200 ms) are whole packets skipped.
//!
//! Time comes only from the `now` arguments, so the buffer runs on virtual time in tests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use groupcall_media::rtp::RtpPacket;

use super::codec::{packet_samples, FrameDecoder};
use super::expand::Expander;
use super::stretch::Stretcher;
use super::{FRAME_SAMPLES, MAX_PACKET_SAMPLES, SAMPLE_RATE};

/// Smallest unit libopus decodes or conceals (2.5 ms).
const OPUS_QUANTUM: i64 = 120;
/// A packet this much earlier than the clock predicts means the sender's timestamps jumped.
const RESYNC_JUMP: i64 = SAMPLE_RATE as i64;
/// After this many packets in a row are refused as late or duplicate, the sender's numbering
/// has moved away from ours (a restart): start over.
const RESYNC_AFTER_REJECTED: u32 = 25;
/// Time-stretch to bring the delay down when it is above the target by more than this (two
/// frames: with one, stretching under heavy jitter came and went inside speech, and speech at
/// 30 % loss + 120 ms jitter scored 0.5 dB worse, docs/receive.md §5)...
const ACCELERATE_MARGIN: i64 = 2 * FRAME_SAMPLES as i64;
/// ...and to raise it when it is below by more than this: being under the target is what
/// costs concealment when packets come late, being over only costs latency.
const SLOW_DOWN_MARGIN: i64 = FRAME_SAMPLES as i64 / 4;
/// ...and skip a whole packet when it is this far above.
const FORCE_DROP_MARGIN: i64 = 10 * FRAME_SAMPLES as i64;

/// Settings of a [`JitterBuffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// The target delay never goes below this.
    pub min_delay: Duration,
    /// ...nor above this: audio later than that is lost rather than delaying everyone.
    pub max_delay: Duration,
    /// The target before any jitter has been measured. It starts at the minimum: on a clean
    /// link the delay then stays there (the buffer only shrinks in pauses, so a higher start
    /// would be kept for the whole talk spurt), and a jittery link raises it within a second.
    pub initial_delay: Duration,
    /// Packets held at most (memory bound against a sender that runs ahead).
    pub capacity: usize,
    /// How long loss concealment may extrapolate before the output turns to silence.
    pub concealment_limit: Duration,
    /// Change the delay by time-stretching (a pitch period out or in per packet). Off, the
    /// delay only grows by waiting for late audio and shrinks by skipping whole packets when
    /// far behind: every packet then plays at its own length (bit-exact pipelines, tests).
    pub time_stretch: bool,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            initial_delay: Duration::from_millis(20),
            capacity: 256,
            concealment_limit: Duration::from_millis(200),
            time_stretch: true,
        }
    }
}

/// Where a pulled frame's audio came from. When one 20 ms frame mixes sources, the least
/// trustworthy one is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Decoded from packets that arrived in time.
    Decoded,
    /// (Partly) rebuilt from the next packet's in-band FEC.
    Recovered,
    /// (Partly) extrapolated by loss concealment.
    Concealed,
    /// Nothing to play: before the first packet, or long after the last one (all zeros).
    Silence,
}

/// One pull's output: 20 ms of interleaved PCM at 48 kHz.
#[derive(Debug)]
pub struct Pulled<'a> {
    pub kind: FrameKind,
    pub pcm: &'a [i16],
}

/// Counters and current state of a [`JitterBuffer`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JitterStats {
    /// Packets given to `insert` with a parseable Opus payload.
    pub received: u64,
    pub duplicates: u64,
    /// Packets that arrived after their audio had been played (concealed) already.
    pub late: u64,
    /// Packets never played: sequence numbers skipped at playout (late ones included).
    pub lost: u64,
    /// Payloads that are not Opus packets (dropped on arrival).
    pub malformed: u64,
    /// Packets libopus refused (concealed instead).
    pub decode_errors: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Times the buffer started over after the sender's timestamps jumped.
    pub resyncs: u64,
    /// Samples (per channel) rebuilt from in-band FEC.
    pub recovered_samples: u64,
    /// Samples (per channel) produced by loss concealment.
    pub concealed_samples: u64,
    /// Samples (per channel) skipped to bring the delay down when far behind.
    pub dropped_samples: u64,
    /// Samples (per channel) taken out by time-stretching to bring the delay down...
    pub accelerated_samples: u64,
    /// ...and put in to raise it.
    pub slowed_samples: u64,
    /// RFC 3550 interarrival jitter.
    pub jitter_ms: f32,
    pub target_delay_ms: f32,
    /// The playout delay at the last pull.
    pub delay_ms: f32,
}

struct Slot {
    seq: i64,
    ts: i64,
    samples: u32,
    payload: Bytes,
}

/// Extends wrapping RTP counters to i64, relative to the highest value seen.
#[derive(Clone, Copy, Default)]
struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    fn unwrap(&mut self, raw: u32, bits: u32) -> i64 {
        let ext = match self.last {
            None => raw as i64,
            Some((last_raw, last_ext)) => {
                let diff = raw.wrapping_sub(last_raw);
                // Sign-extend the `bits`-wide difference.
                let shift = 32 - bits;
                last_ext + (((diff << shift) as i32) >> shift) as i64
            }
        };
        if self.last.is_none_or(|(_, l)| ext > l) {
            self.last = Some((raw, ext));
        }
        ext
    }
}

/// Which of the last 128 sequence numbers have been received.
#[derive(Clone, Copy, Default)]
struct SeenWindow {
    top: Option<i64>,
    bits: u128,
}

impl SeenWindow {
    /// Marks `seq` received; returns whether it already was.
    fn mark(&mut self, seq: i64) -> bool {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.bits = 1;
            return false;
        };
        if seq > top {
            let shift = seq - top;
            self.bits = if shift >= 128 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = Some(seq);
            return false;
        }
        let off = top - seq;
        if off >= 128 {
            return false; // too old to tell; it will be refused as late anyway
        }
        let bit = 1u128 << off;
        let dup = self.bits & bit != 0;
        self.bits |= bit;
        dup
    }
}

/// Minimum of the transit time over the last ~8 s, in 1 s buckets: the "fastest path" that
/// defines zero delay. A window rather than an all-time minimum lets the estimate follow a
/// route change.
#[derive(Clone, Copy)]
struct MinWindow {
    buckets: [i64; 8],
    current: usize,
    bucket_start: i64,
    started: bool,
}

impl Default for MinWindow {
    fn default() -> Self {
        MinWindow {
            buckets: [i64::MAX; 8],
            current: 0,
            bucket_start: 0,
            started: false,
        }
    }
}

impl MinWindow {
    const BUCKET: i64 = SAMPLE_RATE as i64;

    fn observe(&mut self, t: i64, value: i64) {
        if !self.started || t - self.bucket_start >= Self::BUCKET * self.buckets.len() as i64 {
            *self = MinWindow::default();
            self.started = true;
            self.bucket_start = t;
        }
        while t - self.bucket_start >= Self::BUCKET {
            self.current = (self.current + 1) % self.buckets.len();
            self.buckets[self.current] = i64::MAX;
            self.bucket_start += Self::BUCKET;
        }
        let b = &mut self.buckets[self.current];
        *b = (*b).min(value);
    }

    fn min(&self) -> Option<i64> {
        let m = self.buckets.iter().copied().min().unwrap_or(i64::MAX);
        (m != i64::MAX).then_some(m)
    }
}

/// How late packets come relative to the fastest one (in samples), over the last
/// `DELAY_HISTORY` packets: the target delay is a high quantile of it, the way NetEq's delay
/// manager sets its target from a histogram of relative delays. A quantile follows the actual
/// spread of arrivals (a few late packets move it only a little, a calm network brings it down
/// within seconds), where a multiple of the RFC 3550 mean would over-provision bursty paths.
struct DelayHistory {
    ring: Box<[i64; DELAY_HISTORY]>,
    len: usize,
    next: usize,
    /// The ring's values in order, kept sorted as they come and go: the quantile is then an
    /// index, where a selection over a copy of the ring cost a listener several per cent of
    /// its CPU (one per packet).
    sorted: Vec<i64>,
    /// The quantile as of the last push.
    quantile: Option<i64>,
}

/// Packets remembered (4 s of 20 ms packets).
const DELAY_HISTORY: usize = 200;
/// Share of recent packets the target delay covers. The rest are late: concealed or rebuilt
/// from the next packet's FEC, and each one raises the target a little (the bump).
const DELAY_QUANTILE: f64 = 0.95;

impl DelayHistory {
    fn new() -> Self {
        DelayHistory {
            ring: Box::new([0; DELAY_HISTORY]),
            len: 0,
            next: 0,
            sorted: Vec::with_capacity(DELAY_HISTORY),
            quantile: None,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
        self.sorted.clear();
        self.quantile = None;
    }

    fn push(&mut self, delay: i64) {
        let delay = delay.max(0);
        let at = self.sorted.partition_point(|&d| d < delay);
        // Always there when the window is full: `sorted` holds exactly the ring's values.
        let gone = (self.len == DELAY_HISTORY)
            .then(|| self.sorted.binary_search(&self.ring[self.next]).ok())
            .flatten();
        match gone {
            // The oldest value leaves and the new one comes in with one shift of the values
            // between their places: few, since a packet's delay is close to its
            // predecessors'. A removal and an insertion each moved half the window (the
            // largest `memmove` in a listener's profile, docs/performance.md §1.2.8).
            Some(i) if at > i => {
                self.sorted.copy_within(i + 1..at, i);
                self.sorted[at - 1] = delay;
            }
            Some(i) => {
                self.sorted.copy_within(at..i, at + 1);
                self.sorted[at] = delay;
            }
            None => self.sorted.insert(at, delay),
        }
        self.ring[self.next] = delay;
        self.next = (self.next + 1) % DELAY_HISTORY;
        self.len = (self.len + 1).min(DELAY_HISTORY);
        let n = self.sorted.len();
        let k = ((n as f64 * DELAY_QUANTILE).ceil() as usize).clamp(1, n) - 1;
        self.quantile = Some(self.sorted[k]);
    }
}

/// Collects which kinds of audio went into one pulled frame.
#[derive(Clone, Copy, Default)]
struct KindMix {
    decoded: bool,
    recovered: bool,
    concealed: bool,
}

impl KindMix {
    fn add(&mut self, kind: FrameKind) {
        match kind {
            FrameKind::Decoded => self.decoded = true,
            FrameKind::Recovered => self.recovered = true,
            FrameKind::Concealed => self.concealed = true,
            FrameKind::Silence => {}
        }
    }

    fn kind(self) -> FrameKind {
        if self.concealed {
            FrameKind::Concealed
        } else if self.recovered {
            FrameKind::Recovered
        } else if self.decoded {
            FrameKind::Decoded
        } else {
            FrameKind::Silence
        }
    }
}

fn samples_of(d: Duration) -> i64 {
    (d.as_micros() as i64).saturating_mul(SAMPLE_RATE as i64) / 1_000_000
}

/// See the module documentation. `D` is the Opus decoder ([`super::Decoder`]) in real use.
pub struct JitterBuffer<D> {
    decoder: D,
    channels: usize,
    min_delay: i64,
    max_delay: i64,
    capacity: usize,
    concealment_limit: i64,
    time_stretch: bool,

    slots: VecDeque<Slot>,
    origin: Option<Instant>,
    seq_unwrap: Unwrapper,
    ts_unwrap: Unwrapper,
    seen: SeenWindow,
    base: MinWindow,
    last_transit: Option<i64>,
    /// RFC 3550 jitter, in samples.
    jitter: f64,
    /// Extra target after late packets (half a packet each), in samples; decays with a time
    /// constant of 128 ticks. Small, since the late packet is also in the percentile.
    bump: f64,
    delays: DelayHistory,
    /// The target before any delay was measured.
    initial: i64,
    consecutive_rejected: u32,

    playing: bool,
    cursor: i64,
    last_played_seq: Option<i64>,
    /// Samples per channel since real audio was last decoded (for the concealment limit).
    since_audio: i64,

    pending: Vec<i16>,
    pending_start: usize,
    pending_end: usize,
    pending_kind: FrameKind,
    /// Conceals from what was played, and cross-fades real audio back in.
    expander: Expander,
    stretcher: Stretcher,
    out: Vec<i16>,
    stats: JitterStats,
}

impl<D: FrameDecoder> JitterBuffer<D> {
    pub fn new(config: JitterConfig, decoder: D) -> Self {
        let channels = decoder.channels().count();
        let min_delay = samples_of(config.min_delay).max(0);
        let max_delay = samples_of(config.max_delay).max(min_delay);
        let initial = samples_of(config.initial_delay).clamp(min_delay, max_delay);
        let frame = FRAME_SAMPLES as i64;
        JitterBuffer {
            decoder,
            channels,
            min_delay,
            max_delay,
            capacity: config.capacity.max(1),
            concealment_limit: samples_of(config.concealment_limit),
            time_stretch: config.time_stretch,
            slots: VecDeque::with_capacity(config.capacity.max(1)),
            origin: None,
            seq_unwrap: Unwrapper::default(),
            ts_unwrap: Unwrapper::default(),
            seen: SeenWindow::default(),
            base: MinWindow::default(),
            last_transit: None,
            // Start from a jitter that yields the initial target; measurements take over.
            jitter: ((initial - frame).max(0) as f64) / 3.0,
            bump: 0.0,
            delays: DelayHistory::new(),
            initial,
            consecutive_rejected: 0,
            playing: false,
            cursor: 0,
            last_played_seq: None,
            since_audio: i64::MAX / 2,
            stretcher: Stretcher::default(),
            // Room for the longest packet slowed down by a period.
            pending: vec![0; (MAX_PACKET_SAMPLES + FRAME_SAMPLES) * channels],
            pending_start: 0,
            pending_end: 0,
            pending_kind: FrameKind::Silence,
            expander: Expander::new(
                channels,
                samples_of(config.concealment_limit).max(0) as usize,
            ),
            out: vec![0; FRAME_SAMPLES * channels],
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.jitter_ms = (self.jitter / 48.0) as f32;
        s.target_delay_ms = (self.target() as f64 / 48.0) as f32;
        s
    }

    /// Packets waiting to be played.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn t48(&self, now: Instant) -> i64 {
        let d = self
            .origin
            .map_or(Duration::ZERO, |o| now.saturating_duration_since(o));
        d.as_secs() as i64 * SAMPLE_RATE as i64 + d.subsec_nanos() as i64 * 48 / 1_000_000
    }

    fn target(&self) -> i64 {
        let spread = match self.delays.quantile {
            // A 2.5 ms margin: a packet exactly at the quantile is there when its pull comes.
            Some(q) => (q + OPUS_QUANTUM) as f64,
            None => self.initial as f64,
        };
        ((spread + self.bump) as i64).clamp(self.min_delay, self.max_delay)
    }

    /// A received RTP packet (payload type already checked by the caller).
    pub fn insert_rtp(&mut self, now: Instant, packet: &RtpPacket) {
        self.insert(
            now,
            packet.sequence,
            packet.timestamp,
            packet.payload.clone(),
        );
    }

    /// A received Opus packet. Never fails: what cannot be used is counted and dropped.
    pub fn insert(&mut self, now: Instant, sequence: u16, timestamp: u32, payload: Bytes) {
        let Some(samples) = packet_samples(&payload) else {
            self.stats.malformed += 1;
            return;
        };
        self.origin.get_or_insert(now);
        let t = self.t48(now);
        let seq = self.seq_unwrap.unwrap(sequence as u32, 16);
        let ts = self.ts_unwrap.unwrap(timestamp, 32);
        self.stats.received += 1;
        if self.seen.mark(seq) {
            self.stats.duplicates += 1;
            self.reject();
            return;
        }
        let transit = t - ts;
        if self
            .base
            .min()
            .is_some_and(|base| transit < base - RESYNC_JUMP)
        {
            self.resync(seq);
        }
        // RFC 3550 §6.4.1, on every packet: late ones are the measurements that matter most.
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        if let Some(base) = self.base.min() {
            self.delays.push(transit - base);
        }
        if self.playing && ts + samples as i64 <= self.cursor {
            self.stats.late += 1;
            self.bump = (self.bump + samples as f64 / 2.0).min(self.max_delay as f64);
            if !self.reject() {
                return;
            }
            self.resync(seq);
        }
        self.consecutive_rejected = 0;
        self.base.observe(t, transit);

        let pos = self
            .slots
            .iter()
            .rposition(|s| s.ts < ts)
            .map_or(0, |p| p + 1);
        if self.slots.get(pos).is_some_and(|s| s.ts == ts) {
            // Same audio under another sequence number: a retransmission.
            self.stats.duplicates += 1;
            return;
        }
        let mut pos = pos;
        if self.slots.len() >= self.capacity {
            self.stats.overflow += 1;
            if pos == 0 {
                return; // older than everything held: the least useful packet
            }
            self.slots.pop_front();
            pos -= 1;
        }
        self.slots.insert(
            pos,
            Slot {
                seq,
                ts,
                samples,
                payload,
            },
        );
    }

    /// Counts a refused packet; returns true when so many came in a row that the stream must
    /// have restarted.
    fn reject(&mut self) -> bool {
        self.consecutive_rejected += 1;
        self.consecutive_rejected >= RESYNC_AFTER_REJECTED
    }

    fn resync(&mut self, seq: i64) {
        self.stats.resyncs += 1;
        self.slots.clear();
        self.playing = false;
        self.base = MinWindow::default();
        self.delays.clear();
        self.last_transit = None;
        self.last_played_seq = None;
        self.consecutive_rejected = 0;
        self.pending_start = 0;
        self.pending_end = 0;
        self.expander.reset();
        self.seen = SeenWindow::default();
        self.seen.mark(seq);
    }

    /// The next 20 ms of audio. Call every 20 ms of `now`.
    pub fn pull(&mut self, now: Instant) -> Pulled<'_> {
        let need = self.out.len();
        let t = self.t48(now);
        let base = self.base.min();
        if !self.playing {
            if let (Some(base), Some(front)) = (base, self.slots.front()) {
                if t - base - front.ts >= self.target() {
                    self.playing = true;
                    self.cursor = front.ts;
                }
            }
        }
        if !self.playing {
            self.out.fill(0);
            return Pulled {
                kind: FrameKind::Silence,
                pcm: &self.out,
            };
        }
        let base = base.unwrap_or(t);
        let target = self.target();
        let mut mix = KindMix::default();
        let mut filled = 0;
        let mut stretched = false;
        while filled < need {
            if self.pending_start < self.pending_end {
                let n = (need - filled).min(self.pending_end - self.pending_start);
                self.out[filled..filled + n]
                    .copy_from_slice(&self.pending[self.pending_start..self.pending_start + n]);
                self.expander.observe(&self.out[filled..filled + n]);
                self.pending_start += n;
                filled += n;
                mix.add(self.pending_kind);
                continue;
            }
            while self
                .slots
                .front()
                .is_some_and(|s| s.ts + s.samples as i64 <= self.cursor)
            {
                // Arrived in time but overtaken by a frame that was dropped or resized.
                self.slots.pop_front();
                self.stats.late += 1;
            }
            let delay = t - base - self.cursor;
            if self.slots.front().is_some_and(|s| s.ts <= self.cursor) {
                let Some(slot) = self.slots.pop_front() else {
                    break;
                };
                let over = delay - target;
                let samples = slot.samples as i64;
                self.play_slot(slot);
                if !stretched {
                    stretched = true;
                    self.stretch(over, samples);
                }
                continue;
            }
            // The audio at the cursor is missing.
            let frames_left = (need - filled) / self.channels;
            if delay < target {
                // Not yet due: wait for it, filling this pull without moving the cursor.
                self.conceal(frames_left as i64);
                continue;
            }
            let next = self.slots.front().map(|s| (s.seq, s.ts, s.samples as i64));
            match next {
                Some((next_seq, next_ts, next_samples)) => {
                    let gap = next_ts - self.cursor;
                    let packets_missing = self.last_played_seq.is_none_or(|l| next_seq > l + 1);
                    let fec = self
                        .slots
                        .front()
                        .is_some_and(|s| self.decoder.has_fec(&s.payload));
                    if packets_missing && gap <= next_samples && gap % OPUS_QUANTUM == 0 && fec {
                        self.recover(gap);
                    } else {
                        // Conceal up to where the next packet's FEC can take over (or, in a
                        // silence of the sender, up to the next packet).
                        let piece = if packets_missing && gap > next_samples {
                            gap - next_samples
                        } else {
                            gap
                        };
                        self.conceal(piece.clamp(1, FRAME_SAMPLES as i64));
                    }
                    self.cursor += self.pending_len() as i64;
                }
                None => {
                    // Nothing newer has arrived: the sender is silent (DTX, muted) or stalled.
                    self.conceal(FRAME_SAMPLES as i64);
                    self.cursor += FRAME_SAMPLES as i64;
                }
            }
        }
        self.stats.delay_ms = ((t - base - self.cursor) as f64 / 48.0) as f32;
        self.bump *= 1.0 - 1.0 / 128.0;
        Pulled {
            kind: mix.kind(),
            pcm: &self.out,
        }
    }

    /// Moves the delay towards the target with the packet just decoded into `pending`: one
    /// pitch period out when the delay is `over` the target by more than two frames, one in when
    /// it is under by 5 ms and the next packet is here already (so slowing down is not
    /// starving); far behind, the whole packet is skipped.
    fn stretch(&mut self, over: i64, samples: i64) {
        let (start, end, ch) = (self.pending_start, self.pending_end, self.channels);
        if over > FORCE_DROP_MARGIN && samples <= over {
            // Decoded (to keep the decoder's state continuous) but not played.
            self.stats.dropped_samples += ((end - start) / ch) as u64;
            self.pending_start = end;
        } else if !self.time_stretch {
        } else if over > ACCELERATE_MARGIN {
            let n = self
                .stretcher
                .accelerate(&mut self.pending[start..], end - start, ch);
            self.pending_end -= n * ch;
            self.stats.accelerated_samples += n as u64;
        } else if over < -SLOW_DOWN_MARGIN && !self.slots.is_empty() {
            let n = self
                .stretcher
                .slow_down(&mut self.pending[start..], end - start, ch);
            self.pending_end += n * ch;
            self.stats.slowed_samples += n as u64;
        }
    }

    fn pending_len(&self) -> usize {
        (self.pending_end - self.pending_start) / self.channels
    }

    fn set_pending(&mut self, start_frames: usize, frames: usize, kind: FrameKind) {
        self.pending_start = start_frames.min(frames) * self.channels;
        self.pending_end = frames * self.channels;
        self.pending_kind = kind;
    }

    /// Decodes the packet at (or overlapping) the cursor into `pending`.
    fn play_slot(&mut self, slot: Slot) {
        if let Some(last) = self.last_played_seq {
            if slot.seq > last + 1 {
                self.stats.lost += (slot.seq - last - 1) as u64;
            }
        }
        self.last_played_seq = Some(self.last_played_seq.map_or(slot.seq, |l| l.max(slot.seq)));
        let skip = (self.cursor - slot.ts).max(0) as usize;
        let frames = slot.samples as usize;
        match self
            .decoder
            .decode(&slot.payload, &mut self.pending[..frames * self.channels])
        {
            Ok(n) if n > 0 => {
                self.set_pending(skip, n.min(frames), FrameKind::Decoded);
                self.expander
                    .merge(&mut self.pending[self.pending_start..self.pending_end]);
                self.since_audio = 0;
            }
            _ => {
                self.stats.decode_errors += 1;
                self.conceal(frames as i64);
                self.pending_start = skip.min(frames) * self.channels;
            }
        }
        self.cursor = slot.ts + frames as i64;
    }

    /// Rebuilds `gap` samples before the next packet from its in-band FEC.
    fn recover(&mut self, gap: i64) {
        let Some(next) = self.slots.front() else {
            return;
        };
        let len = gap as usize * self.channels;
        match self
            .decoder
            .decode_fec(&next.payload, &mut self.pending[..len])
        {
            Ok(n) if n > 0 => {
                self.set_pending(0, n.min(gap as usize), FrameKind::Recovered);
                self.expander
                    .merge(&mut self.pending[self.pending_start..self.pending_end]);
                self.stats.recovered_samples += n as u64;
                self.since_audio = 0;
            }
            _ => {
                self.stats.decode_errors += 1;
                self.conceal(gap);
            }
        }
    }

    /// Fills `pending` with `frames` of concealment ([`Expander`]: the last period played,
    /// repeated and faded), or of silence once concealment has run past its limit.
    fn conceal(&mut self, frames: i64) {
        let frames = frames.clamp(1, MAX_PACKET_SAMPLES as i64) as usize;
        let len = frames * self.channels;
        let mut kind = FrameKind::Silence;
        if self.since_audio < self.concealment_limit
            && self.expander.expand(&mut self.pending[..len])
        {
            kind = FrameKind::Concealed;
            self.stats.concealed_samples += frames as u64;
        }
        if kind == FrameKind::Silence {
            self.pending[..len].fill(0);
        }
        self.since_audio = self.since_audio.saturating_add(frames as i64);
        self.set_pending(0, frames, kind);
    }

    /// The decoder (e.g. to reset it when the speaker changes).
    pub fn decoder_mut(&mut self) -> &mut D {
        &mut self.decoder
    }
}

#[cfg(test)]
mod tests {

    /// The sorted window gives the quantile a selection over the last `DELAY_HISTORY`
    /// delays gives, packet after packet, through the ring's wrap and a clear; and it holds
    /// those delays value for value (the oldest leaves and the newest comes in with one
    /// shift, either way).
    #[test]
    fn the_delay_quantile_is_that_of_the_last_200_delays() {
        let mut h = DelayHistory::new();
        let mut all: Vec<i64> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..1500 {
            if step == 900 {
                h.clear();
                all.clear();
            }
            // A calm path with bursts of late packets and repeats of the same delay.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = match x % 10 {
                0 => (x >> 8) as i64 % 4800,
                1..=3 => 960,
                _ => (x >> 8) as i64 % 200 - 20,
            };
            h.push(d);
            all.push(d.max(0));
            let window = &all[all.len().saturating_sub(DELAY_HISTORY)..];
            let mut w = window.to_vec();
            let k = ((w.len() as f64 * DELAY_QUANTILE).ceil() as usize).clamp(1, w.len()) - 1;
            let want = *w.select_nth_unstable(k).1;
            assert_eq!(h.quantile, Some(want), "step {step}");
            let mut sorted = window.to_vec();
            sorted.sort_unstable();
            assert_eq!(h.sorted, sorted, "step {step}: the window kept sorted");
        }
    }
    use super::*;
    use crate::audio::Channels;
    use crate::error::Result;

    /// Packets carry an id; the fake decoder writes the id into every sample (FEC: minus the id
    /// of the frame rebuilt; concealment: i16::MIN), so the output shows exactly what was played.
    struct Fake;

    const TOC_20MS: u8 = 0xF8; // CELT FB 20 ms, one frame
    const TOC_10MS: u8 = 0xF0; // CELT FB 10 ms
    const TOC_60MS: u8 = 0x18; // SILK NB 60 ms

    fn id_of(p: &[u8]) -> i16 {
        i16::from_be_bytes([p[1], p[2]])
    }

    impl FrameDecoder for Fake {
        fn channels(&self) -> Channels {
            Channels::Mono
        }
        fn decode(&mut self, p: &[u8], out: &mut [i16]) -> Result<usize> {
            let n = packet_samples(p).unwrap() as usize;
            out[..n].fill(id_of(p));
            Ok(n)
        }
        fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize> {
            out.fill(-(id_of(next) - 1));
            Ok(out.len())
        }
        fn has_fec(&self, _: &[u8]) -> bool {
            true
        }
    }

    fn pkt(toc: u8, id: i16) -> Bytes {
        let b = id.to_be_bytes();
        Bytes::copy_from_slice(&[toc, b[0], b[1]])
    }

    /// Every packet at its own length: the tests below follow packet ids through the buffer.
    fn exact() -> JitterConfig {
        JitterConfig {
            time_stretch: false,
            ..JitterConfig::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs a 20 ms-pull receiver over `arrivals` (time since t0, seq, ts, payload); returns
    /// each pull's (kind, middle sample, last sample). The middle, not the first: audio that
    /// follows concealment starts with a cross-fade from it.
    fn run(
        jb: &mut JitterBuffer<Fake>,
        mut arrivals: Vec<(Duration, u16, u32, Bytes)>,
        pulls: usize,
    ) -> Vec<(FrameKind, i16, i16)> {
        let t0 = Instant::now();
        arrivals.sort_by_key(|a| a.0);
        let mut it = arrivals.into_iter().peekable();
        let mut out = vec![];
        for k in 0..pulls {
            let now = t0 + ms(20 * k as u64 + 5);
            while let Some(a) = it.next_if(|a| t0 + a.0 <= now) {
                jb.insert(t0 + a.0, a.1, a.2, a.3);
            }
            let p = jb.pull(now);
            assert_eq!(p.pcm.len(), 960);
            out.push((p.kind, p.pcm[480], p.pcm[959]));
        }
        out
    }

    fn stream(n: i16, delay: impl Fn(i16) -> u64) -> Vec<(Duration, u16, u32, Bytes)> {
        (1..=n)
            .map(|id| {
                let seq = 65530u16.wrapping_add(id as u16);
                let ts = (u32::MAX - 5000).wrapping_add(960 * id as u32);
                (ms(20 * id as u64 + delay(id)), seq, ts, pkt(TOC_20MS, id))
            })
            .collect()
    }

    fn played_ids(out: &[(FrameKind, i16, i16)]) -> Vec<i16> {
        out.iter()
            .filter(|o| o.0 == FrameKind::Decoded)
            .map(|o| o.1)
            .collect()
    }

    #[test]
    fn plays_in_order_across_wraparound_after_the_initial_delay() {
        let mut jb = JitterBuffer::new(exact(), Fake);
        let out = run(&mut jb, stream(50, |_| 10), 60);
        let first = out.iter().position(|o| o.0 != FrameKind::Silence).unwrap();
        // The first packet arrives at 30 ms; playout starts once it is about the initial 40 ms
        // (minus the jitter decay of the first few packets) old: the pull at 65 or 85 ms.
        assert!((3..=4).contains(&first), "{out:?}");
        let ids = played_ids(&out);
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
        assert!(out[first..first + 50]
            .iter()
            .all(|o| o.0 == FrameKind::Decoded && o.1 == o.2));
        let s = jb.stats();
        assert_eq!((s.received, s.lost, s.late, s.duplicates), (50, 0, 0, 0));
        // After the stream: concealment for 100 ms, then silence.
        let tail: Vec<_> = out[first + 50..].iter().map(|o| o.0).collect();
        assert_eq!(&tail[..4], &[FrameKind::Concealed; 4]);
    }

    #[test]
    fn reorders_and_drops_duplicates() {
        // A floor over the 30 ms of reordering: the very first packets come before any
        // measurement could raise the target.
        let config = JitterConfig {
            min_delay: Duration::from_millis(40),
            ..exact()
        };
        let mut jb = JitterBuffer::new(config, Fake);
        let mut arr = stream(40, |id| if id % 2 == 0 { 30 } else { 0 });
        let dups: Vec<_> = arr
            .iter()
            .step_by(3)
            .map(|a| (a.0 + ms(7), a.1, a.2, a.3.clone()))
            .collect();
        arr.extend(dups);
        let out = run(&mut jb, arr, 50);
        assert_eq!(played_ids(&out), (1..=40).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!(s.duplicates, 14);
        assert_eq!((s.lost, s.late), (0, 0));
    }

    #[test]
    fn rebuilds_a_lost_packet_from_the_next_ones_fec() {
        let mut jb = JitterBuffer::new(exact(), Fake);
        let arr: Vec<_> = stream(30, |_| 5)
            .into_iter()
            .filter(|a| id_of(&a.3) != 10)
            .collect();
        let out = run(&mut jb, arr, 40);
        let i = out.iter().position(|o| o.1 == 9).unwrap();
        assert_eq!(out[i + 1], (FrameKind::Recovered, -10, -10));
        assert_eq!(out[i + 2], (FrameKind::Decoded, 11, 11));
        let s = jb.stats();
        assert_eq!((s.lost, s.recovered_samples, s.late), (1, 960, 0));
    }

    #[test]
    fn conceals_a_burst_then_recovers_its_last_packet() {
        let mut jb = JitterBuffer::new(exact(), Fake);
        let arr: Vec<_> = stream(30, |_| 5)
            .into_iter()
            .filter(|a| !(10..=12).contains(&id_of(&a.3)))
            .collect();
        let out = run(&mut jb, arr, 40);
        let i = out.iter().position(|o| o.1 == 9).unwrap();
        assert_eq!(out[i + 1].0, FrameKind::Concealed);
        assert_eq!(out[i + 2].0, FrameKind::Concealed);
        assert_eq!(out[i + 3], (FrameKind::Recovered, -12, -12));
        assert_eq!(out[i + 4], (FrameKind::Decoded, 13, 13));
        assert_eq!(jb.stats().lost, 3);
    }

    #[test]
    fn a_late_packet_is_counted_and_raises_the_target() {
        // No floor under the target, so what the late packet does to it shows.
        let config = JitterConfig {
            min_delay: Duration::ZERO,
            ..exact()
        };
        let mut calm = JitterBuffer::new(config, Fake);
        run(&mut calm, stream(30, |_| 0), 40);
        let mut jb = JitterBuffer::new(config, Fake);
        let out = run(&mut jb, stream(30, |id| if id == 15 { 400 } else { 0 }), 40);
        let s = jb.stats();
        assert_eq!((s.late, s.lost), (1, 1));
        assert!(out
            .iter()
            .any(|o| o.0 == FrameKind::Recovered && o.1 == -15));
        // One late packet in thirty is past the 95th percentile: it raises the target by half
        // its own length (the bump, decaying since), not by its 400 ms.
        let raised = s.target_delay_ms - calm.stats().target_delay_ms;
        assert!(
            (6.0..=10.0).contains(&raised),
            "{s:?} vs {:?}",
            calm.stats()
        );
    }

    #[test]
    fn waits_for_a_packet_that_is_late_but_not_yet_due() {
        // Packet 10 comes 50 ms late while the delay is 80 ms: played, not lost.
        let config = JitterConfig {
            min_delay: Duration::from_millis(80),
            ..exact()
        };
        let mut jb = JitterBuffer::new(config, Fake);
        let out = run(&mut jb, stream(30, |id| if id == 10 { 50 } else { 0 }), 40);
        assert_eq!(played_ids(&out), (1..=30).collect::<Vec<_>>());
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn target_follows_measured_jitter_within_bounds() {
        let cfg = JitterConfig::default();
        let mut jb = JitterBuffer::new(cfg, Fake);
        run(&mut jb, stream(300, |_| 0), 310);
        let calm = jb.stats().target_delay_ms;
        assert!((20.0..=25.0).contains(&calm), "calm target {calm}");
        let mut jb = JitterBuffer::new(cfg, Fake);
        // Alternating 0 / 60 ms: every interarrival deviates by 60 ms.
        run(
            &mut jb,
            stream(300, |id| if id % 2 == 0 { 60 } else { 0 }),
            310,
        );
        let s = jb.stats();
        assert!((55.0..=65.0).contains(&s.jitter_ms), "{s:?}");
        // Half the packets are 60 ms behind the others: the target covers them, and little
        // more (a late packet's bump at most).
        assert!(
            s.target_delay_ms >= 60.0 && s.target_delay_ms <= 85.0,
            "{s:?}"
        );
        let mut jb = JitterBuffer::new(cfg, Fake);
        run(
            &mut jb,
            stream(300, |id| if id % 2 == 0 { 900 } else { 0 }),
            310,
        );
        assert_eq!(jb.stats().target_delay_ms, 500.0);
    }

    #[test]
    fn silence_at_the_sender_is_not_loss_and_playout_resumes_on_time() {
        // 20 packets, 2 s of DTX (timestamps jump, sequence numbers do not), 20 more.
        let mut arr = stream(20, |_| 5);
        for id in 21..=40i16 {
            let t = 20 * id as u64 + 2000;
            let ts = (u32::MAX - 5000).wrapping_add(960 * id as u32 + 96_000);
            arr.push((
                ms(t + 5),
                65530u16.wrapping_add(id as u16),
                ts,
                pkt(TOC_20MS, id),
            ));
        }
        let mut jb = JitterBuffer::new(exact(), Fake);
        let out = run(&mut jb, arr, 160);
        assert_eq!(played_ids(&out), (1..=40).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.resyncs), (0, 0, 0));
        let gap_start = out.iter().position(|o| o.1 == 20).unwrap() + 1;
        let resume = out.iter().position(|o| o.1 == 21).unwrap();
        assert_eq!(resume - gap_start, 100, "2 s of silence keeps its length");
        assert!(out[gap_start + 10..resume]
            .iter()
            .all(|o| o.0 == FrameKind::Silence && o.1 == 0));
    }

    #[test]
    fn starts_over_when_the_senders_clock_jumps() {
        let mut arr = stream(20, |_| 5);
        for id in 21..=40i16 {
            let ts = 123_456u32.wrapping_add(960 * id as u32);
            arr.push((ms(20 * id as u64 + 5), id as u16 * 7, ts, pkt(TOC_20MS, id)));
        }
        let mut jb = JitterBuffer::new(exact(), Fake);
        let out = run(&mut jb, arr, 60);
        let ids = played_ids(&out);
        assert_eq!(jb.stats().resyncs, 1);
        assert!(ids.ends_with(&(21..=40).collect::<Vec<_>>()), "{ids:?}");
        assert!(ids.starts_with(&(1..=15).collect::<Vec<_>>()), "{ids:?}");
    }

    #[test]
    fn rechunks_10_and_60_ms_packets_into_20_ms_frames() {
        // 60 ms packets (ids 1..=10) then 10 ms packets (ids 11..=40).
        let mut arr = vec![];
        for id in 1..=10i16 {
            let ts = 2880 * (id as u32 - 1);
            arr.push((ms(60 * id as u64), id as u16, ts, pkt(TOC_60MS, id)));
        }
        for id in 11..=40i16 {
            let ts = 28800 + 480 * (id as u32 - 11);
            arr.push((
                ms(660 + 10 * (id as u64 - 11)),
                id as u16,
                ts,
                pkt(TOC_10MS, id),
            ));
        }
        // A fixed 150 ms target, so that no frame is dropped when the packet length changes.
        let cfg = JitterConfig {
            min_delay: ms(150),
            initial_delay: ms(150),
            ..exact()
        };
        let mut jb = JitterBuffer::new(cfg, Fake);
        let t0 = Instant::now();
        let mut pcm = vec![];
        let mut it = arr.into_iter().peekable();
        for k in 0..60u64 {
            let now = t0 + ms(20 * k);
            while let Some(a) = it.next_if(|a| t0 + a.0 <= now) {
                jb.insert(t0 + a.0, a.1, a.2, a.3);
            }
            pcm.extend_from_slice(jb.pull(now).pcm);
        }
        let start = pcm.iter().position(|&s| s != 0).unwrap();
        let played = &pcm[start..start + 28800 + 14400];
        for (i, &s) in played.iter().enumerate() {
            let want = if i < 28800 {
                1 + i / 2880
            } else {
                11 + (i - 28800) / 480
            };
            assert_eq!(s as usize, want, "sample {i}");
        }
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn garbage_and_floods_are_counted_not_fatal() {
        let cfg = JitterConfig {
            capacity: 8,
            ..exact()
        };
        let mut jb = JitterBuffer::new(cfg, Fake);
        let t0 = Instant::now();
        jb.insert(t0, 1, 0, Bytes::new());
        jb.insert(t0, 1, 0, Bytes::from_static(&[0x03]));
        assert_eq!(jb.stats().malformed, 2);
        for i in 0..20u16 {
            jb.insert(t0, i, i as u32 * 960, pkt(TOC_20MS, i as i16 + 1));
        }
        assert_eq!(jb.len(), 8);
        assert_eq!(jb.stats().overflow, 12);
        // The eight newest remain (ids 13..=20). They all arrived at once, so the delay is far
        // above the target and the first of them is dropped to catch up.
        let p = jb.pull(t0 + ms(200));
        assert_eq!(p.kind, FrameKind::Decoded);
        assert_eq!(p.pcm[0], 14);
        assert_eq!(jb.stats().dropped_samples, 960);
        assert_eq!(jb.pull(t0 + ms(220)).pcm[0], 16);
    }

    #[test]
    fn skips_whole_packets_only_when_far_behind() {
        // A burst: 30 frames arrive at once after 600 ms, then real time. Without stretching,
        // whole packets are skipped until the delay is within the forced-skip margin.
        let mut arr = stream(30, |id| 600 - 20 * id as u64);
        arr.extend(stream(80, |_| 0).into_iter().skip(30));
        let mut jb = JitterBuffer::new(exact(), Fake);
        let out = run(&mut jb, arr, 120);
        let s = jb.stats();
        assert!(s.dropped_samples >= 960, "{s:?}");
        assert!(s.delay_ms < 250.0, "{s:?}");
        let ids = played_ids(&out);
        assert!(ids.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(*ids.last().unwrap(), 80);
    }

    #[test]
    fn a_burst_is_caught_up_by_time_stretching() {
        // The same burst with stretching on: the fake's output (ids) reads as quiet, so a
        // period comes out of every packet until the delay is back near the target, and no
        // packet is skipped below the forced margin.
        let mut arr = stream(8, |id| 160 - 20 * id as u64);
        arr.extend(stream(200, |_| 0).into_iter().skip(8));
        let mut jb = JitterBuffer::new(JitterConfig::default(), Fake);
        let out = run(&mut jb, arr, 240);
        let s = jb.stats();
        assert_eq!(s.dropped_samples, 0, "{s:?}");
        assert!(s.accelerated_samples >= 2880, "{s:?}");
        assert!((s.delay_ms - s.target_delay_ms).abs() <= 25.0, "{s:?}");
        let ids = played_ids(&out);
        assert!(ids.windows(2).all(|w| w[1] >= w[0]), "{ids:?}");
        assert!(*ids.last().unwrap() >= 199, "played to the end: {ids:?}");
    }

    #[test]
    fn the_delay_comes_back_down_when_the_network_calms() {
        // 6 s where every other packet is 100 ms late, then 12 s of a calm network: the target
        // rises to cover the late ones, then falls back to the floor once they have left the
        // 4 s window, and the delay follows it down by time-stretching, with nothing skipped.
        let mut jb = JitterBuffer::new(JitterConfig::default(), Fake);
        let arr = stream(900, |id| if id <= 300 && id % 2 == 0 { 100 } else { 0 });
        let t0 = Instant::now();
        let mut arr = arr.into_iter().peekable();
        let (mut rough, mut calm) = (0.0f32, JitterStats::default());
        for k in 0..910u64 {
            let now = t0 + ms(20 * k + 5);
            while let Some(a) = arr.next_if(|a| t0 + a.0 <= now) {
                jb.insert(t0 + a.0, a.1, a.2, a.3);
            }
            jb.pull(now);
            if k == 300 {
                rough = jb.stats().target_delay_ms;
            }
            if k == 900 {
                calm = jb.stats();
            }
        }
        assert!(
            rough >= 100.0,
            "the target covered the late packets: {rough} ms"
        );
        assert!(calm.target_delay_ms <= 25.0, "{calm:?}");
        assert!(calm.delay_ms <= calm.target_delay_ms + 25.0, "{calm:?}");
        assert!(calm.accelerated_samples > 0, "{calm:?}");
        assert_eq!(calm.dropped_samples, 0, "{calm:?}");
    }
}
