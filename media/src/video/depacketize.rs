//! RTP packets of one video SSRC back into whole frames, in order.
//!
//! Packets arrive out of order, twice, late (a retransmission answering a NACK) or never. A
//! [`FrameAssembler`] keeps them in a window of sequence numbers and hands a frame out as soon as
//! all its packets are there and every frame before it has been handed out or given up: the
//! packets from a frame start to the packet with the marker bit, all with the frame's
//! timestamp. A frame starts right after the previous frame's last packet; where that one is
//! unknown (the stream's first packet, after a loss) the payload says it: VP8's S bit with
//! partition 0, or for H.264, which has no such bit, a packet with the SPS that heads a keyframe.
//!
//! A missing packet is waited for [`AssemblerConfig::max_wait`] from the arrival of the first
//! packet after it, which leaves a NACK and its retransmission, or a few, time to arrive. Then
//! its frame is dropped and reported as an [`AssemblerEvent::Dropped`]: the caller asks the sender
//! for a keyframe (PLI), since the frames after it refer to what was lost. They are still handed
//! out, marked [`Frame::after_loss`], until the next keyframe; before the stream's first keyframe
//! there is nothing to decode them against, and they are dropped (and reported) instead.
//!
//! At the very start of a stream the first packets may come out of order, or the keyframe's
//! first packet may come only as a retransmission: what is at the head, if not a keyframe's
//! start, is held for `max_wait` (an earlier packet still moves the start back), unless a
//! keyframe that verifiably starts a frame arrives after it, which ends the wait at once. A lost
//! first packet of the stream cannot be asked for (nothing before it tells that it existed): the
//! frames until a keyframe are then reported dropped.
//!
//! The output is what a decoder takes: the VP8 frame, or the H.264 access unit in Annex B form
//! (each NAL unit after a 4-byte start code). Everything from the network is checked: a packet
//! whose payload cannot be parsed is counted and its frame dropped, never a panic. Memory is
//! bounded by [`AssemblerConfig::max_packets`] and [`AssemblerConfig::max_bytes`], and by a
//! queue of at most 64 events: while the caller does not take them, packets wait in the window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::keyframe::starts_keyframe;
use super::packetize::VideoPacket;
use super::seq::SeqExtender;
use crate::answer::VideoCodec;

/// Limits and patience of a [`FrameAssembler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssemblerConfig {
    /// How long a missing packet is waited for, from the arrival of the first packet after it.
    /// It should cover a few round trips: a NACK, its retransmission, and a retry if either is
    /// lost.
    pub max_wait: Duration,
    /// The window: packets more than this many sequence numbers after the oldest one still
    /// needed push the oldest out. Also the most packets held. Kept within 16..=32,768.
    pub max_packets: usize,
    /// The most payload bytes held; a packet that would go over is refused (and counted), so
    /// this also bounds a frame.
    pub max_bytes: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            max_wait: Duration::from_millis(500),
            max_packets: 2048,
            max_bytes: 4 << 20,
        }
    }
}

/// One frame as a decoder takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub timestamp: u32,
    /// A VP8 key frame, or an H.264 access unit with an IDR slice.
    pub keyframe: bool,
    /// A frame was dropped since the last keyframe handed out: this one may refer to it. Many
    /// receivers skip such frames until the next keyframe rather than show the artefacts.
    pub after_loss: bool,
    pub first_sequence: u16,
    pub last_sequence: u16,
    /// The VP8 frame, or the H.264 access unit in Annex B form.
    pub data: Bytes,
}

/// Why frames were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A packet did not arrive within `max_wait`, or the frame's start is not known.
    Incomplete,
    /// A payload could not be parsed, or the packets do not make a frame of the codec (an H.264
    /// fragment without its start, a VP8 frame without S).
    Malformed,
    /// Pushed out of the window by packets far ahead, or by a restart of the stream.
    Overflow,
    /// A delta frame before the stream's first keyframe: nothing to decode it against.
    BeforeKeyframe,
}

/// What a [`FrameAssembler`] hands out, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssemblerEvent {
    Frame(Frame),
    /// Frames were given up: ask the sender for a keyframe. `frames` is a lower bound (a frame
    /// none of whose packets arrived is not seen); `packets` counts the packets thrown away and
    /// the sequence numbers given up on.
    Dropped {
        reason: DropReason,
        frames: u32,
        packets: u32,
    },
}

/// Counters of a [`FrameAssembler`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Packets taken into the window.
    pub packets: u64,
    pub duplicates: u64,
    /// Packets for a frame already handed out or given up.
    pub late: u64,
    /// Packets whose payload could not be parsed (their frame is dropped too).
    pub malformed: u64,
    /// Packets refused because `max_bytes` were held.
    pub refused: u64,
    /// Sequence numbers given up on.
    pub missing: u64,
    pub frames: u64,
    pub keyframes: u64,
    pub dropped_incomplete: u64,
    pub dropped_malformed: u64,
    pub dropped_overflow: u64,
    pub dropped_before_keyframe: u64,
    /// Times the stream was taken as restarted (a run of packets far behind the window).
    pub restarts: u64,
}

impl AssemblerStats {
    /// Frames dropped for any reason, those before the first keyframe included.
    pub fn frames_dropped(&self) -> u64 {
        self.dropped_incomplete
            + self.dropped_malformed
            + self.dropped_overflow
            + self.dropped_before_keyframe
    }
}

/// At most this many events wait for the caller; then packets wait in the window instead.
const MAX_EVENTS: usize = 64;

/// This many packets in a row far behind the window mean the sender restarted its numbering.
const RESTART_AFTER: u32 = 64;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// What a payload is, checked once on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// No payload: padding (libwebrtc pads on the media SSRC when there is no RTX). Belongs to
    /// no frame.
    Padding,
    Malformed,
    /// The descriptor's length, and whether S is set with partition index 0.
    Vp8 {
        descriptor: u8,
        frame_start: bool,
    },
    H264Single,
    /// A STAP-A whose sizes have been checked.
    H264Stap,
    H264Fu {
        start: bool,
        end: bool,
    },
}

#[derive(Debug)]
struct Slot {
    ext: u64,
    timestamp: u32,
    marker: bool,
    arrived: Instant,
    kind: Kind,
    payload: Bytes,
}

/// What is known of the packet before the next one to hand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boundary {
    Unknown,
    Known { marker: bool, timestamp: u32 },
}

/// A drop being counted, reported as one event.
#[derive(Clone, Copy, Debug)]
struct PendingDrop {
    reason: DropReason,
    frames: u32,
    packets: u32,
}

/// Frames of one SSRC from its RTP packets. See the module documentation.
#[derive(Debug)]
pub struct FrameAssembler {
    codec: VideoCodec,
    config: AssemblerConfig,
    seq: SeqExtender,
    /// A ring indexed by extended sequence number modulo `max_packets`.
    slots: Vec<Option<Slot>>,
    bytes: usize,
    /// The first packet not handed out or given up; `None` before the first packet.
    next: Option<u64>,
    boundary: Boundary,
    /// Nothing handed out or given up yet: an earlier packet may still move the start back.
    untouched: bool,
    /// A keyframe was handed out.
    started: bool,
    after_loss: bool,
    pending: Option<PendingDrop>,
    /// The timestamp of the last packet thrown away, to count frames rather than packets.
    last_dropped: Option<u32>,
    events: VecDeque<AssemblerEvent>,
    wake: Option<Instant>,
    now: Option<Instant>,
    stale: u32,
    stats: AssemblerStats,
}

impl FrameAssembler {
    /// An assembler for one SSRC carrying `codec` (VP8 or H.264; VP9 payloads are all
    /// malformed to it).
    pub fn new(codec: VideoCodec, config: AssemblerConfig) -> Self {
        let config = AssemblerConfig {
            max_packets: config.max_packets.clamp(16, 1 << 15),
            ..config
        };
        FrameAssembler {
            codec,
            config,
            seq: SeqExtender::default(),
            slots: (0..config.max_packets).map(|_| None).collect(),
            bytes: 0,
            next: None,
            boundary: Boundary::Unknown,
            untouched: true,
            started: false,
            after_loss: false,
            pending: None,
            last_dropped: None,
            events: VecDeque::new(),
            wake: None,
            now: None,
            stale: 0,
            stats: AssemblerStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// True until a keyframe is handed out after the start or after a drop.
    pub fn waiting_for_keyframe(&self) -> bool {
        !self.started || self.after_loss
    }

    /// Packets held in the window.
    pub fn buffered(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Takes one received packet (an original, or the packet an RTX retransmission carried,
    /// with its original sequence number). Never panics, whatever the payload.
    pub fn push(&mut self, now: Instant, packet: VideoPacket) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
        let cap = self.config.max_packets as u64;
        let mut ext = self.seq.extend(packet.sequence);
        let next = match self.next {
            Some(n) => n,
            None => {
                self.next = Some(ext);
                ext
            }
        };
        if ext < next {
            let highest = self.seq.highest().unwrap_or(ext);
            if self.untouched && highest < ext + cap {
                // The stream's first packets came out of order: start earlier.
                self.next = Some(ext);
            } else if next - ext > cap {
                self.stale += 1;
                if self.stale < RESTART_AFTER {
                    self.stats.late += 1;
                    return;
                }
                self.restart();
                ext = self.seq.extend(packet.sequence);
                self.next = Some(ext);
            } else {
                self.stats.late += 1;
                return;
            }
        }
        self.stale = 0;
        let next = self.next.unwrap_or(ext);
        if ext >= next + cap {
            self.advance_to(ext + 1 - cap, DropReason::Overflow);
        }
        let i = (ext % cap) as usize;
        if self.slots[i].as_ref().is_some_and(|s| s.ext == ext) {
            self.stats.duplicates += 1;
            return;
        }
        let kind = classify(self.codec, &packet.payload);
        let payload = if kind == Kind::Malformed {
            self.stats.malformed += 1;
            Bytes::new()
        } else {
            packet.payload
        };
        if self.bytes + payload.len() > self.config.max_bytes {
            self.stats.refused += 1;
            return;
        }
        self.bytes += payload.len();
        self.seq.extend_and_update(packet.sequence);
        if let Some(old) = self.slots[i].take() {
            // Cannot happen (everything held is within one window), kept exact regardless.
            self.bytes -= old.payload.len();
        }
        self.slots[i] = Some(Slot {
            ext,
            timestamp: packet.timestamp,
            marker: packet.marker,
            arrived: now,
            kind,
            payload,
        });
        self.stats.packets += 1;
        if ext > self.next.unwrap_or(ext) && self.is_first_keyframe(ext) {
            self.advance_to(ext, DropReason::BeforeKeyframe);
        }
        self.process(now);
    }

    /// When [`FrameAssembler::handle_timeout`] should be called: a missing packet's wait ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
        self.process(now);
    }

    /// The next frame or drop report, in stream order.
    pub fn poll_event(&mut self) -> Option<AssemblerEvent> {
        let e = self.events.pop_front()?;
        if self.events.len() == MAX_EVENTS - 1 {
            // The queue was full and may have held the window up.
            if let Some(now) = self.now {
                self.process(now);
            }
        }
        Some(e)
    }

    fn slot(&self, ext: u64) -> Option<&Slot> {
        let i = (ext % self.config.max_packets as u64) as usize;
        self.slots[i].as_ref().filter(|s| s.ext == ext)
    }

    fn take(&mut self, ext: u64) -> Option<Slot> {
        let i = (ext % self.config.max_packets as u64) as usize;
        if self.slots[i].as_ref().is_some_and(|s| s.ext == ext) {
            let s = self.slots[i].take()?;
            self.bytes -= s.payload.len();
            Some(s)
        } else {
            None
        }
    }

    /// The first packet held after `ext`.
    fn first_after(&self, ext: u64) -> Option<&Slot> {
        let highest = self.seq.highest()?;
        (ext + 1..=highest).find_map(|e| self.slot(e))
    }

    fn process(&mut self, now: Instant) {
        self.wake = None;
        while self.events.len() < MAX_EVENTS {
            let Some(head) = self.next else { break };
            let Some(first) = self.slot(head) else {
                if !self.give_up_gap(now, head, head) {
                    break;
                }
                continue;
            };
            if first.kind == Kind::Padding {
                self.take(head);
                self.next = Some(head + 1);
                self.untouched = false;
                continue;
            }
            let start = self.is_frame_start(first);
            if (!start || !starts_keyframe(self.codec, &first.payload)) && self.holding(now, head) {
                break;
            }
            if !start {
                let reason = if self.started {
                    DropReason::Incomplete
                } else {
                    DropReason::BeforeKeyframe
                };
                self.discard(head, reason);
                continue;
            }
            match self.frame_end(head) {
                End::Complete(last) => self.finish(head, last),
                End::Gap(gap) => {
                    if !self.give_up_gap(now, head, gap) {
                        break;
                    }
                }
                End::Open => break,
            }
        }
        if self.events.len() < MAX_EVENTS {
            self.flush_drop();
        }
    }

    /// At the very start of the stream, what is at the head is not a keyframe: it is kept until
    /// `max_wait` after its arrival, in case the keyframe before it is only late (reordered, or
    /// retransmitted). Returns whether it is kept.
    fn holding(&mut self, now: Instant, head: u64) -> bool {
        if self.started || !self.untouched {
            return false;
        }
        let Some(deadline) = self.slot(head).map(|s| s.arrived + self.config.max_wait) else {
            return false;
        };
        if now < deadline {
            self.wake = Some(self.wake.map_or(deadline, |w| w.min(deadline)));
            return true;
        }
        false
    }

    /// Before the first keyframe, one arriving where a frame verifiably starts makes everything
    /// before it useless (unless a keyframe is being put together there already): it is dropped
    /// at once rather than waited for.
    fn is_first_keyframe(&self, ext: u64) -> bool {
        let Some(s) = self.slot(ext) else {
            return false;
        };
        if self.started || !starts_keyframe(self.codec, &s.payload) {
            return false;
        }
        if let Some(head) = self.next.and_then(|n| self.slot(n)) {
            if self.is_frame_start(head) && starts_keyframe(self.codec, &head.payload) {
                return false;
            }
        }
        match self.slot(ext - 1) {
            Some(p) => p.marker || p.timestamp != s.timestamp,
            None => matches!(
                s.kind,
                Kind::Vp8 {
                    frame_start: true,
                    ..
                }
            ),
        }
    }

    fn is_frame_start(&self, s: &Slot) -> bool {
        match self.boundary {
            Boundary::Known { marker: true, .. } => true,
            Boundary::Known { timestamp, .. } => timestamp != s.timestamp,
            Boundary::Unknown => match s.kind {
                Kind::Vp8 { frame_start, .. } => frame_start,
                Kind::H264Single | Kind::H264Stap => carries_sps(&s.payload),
                Kind::H264Fu { .. } => false,
                Kind::Padding | Kind::Malformed => false,
            },
        }
    }

    /// Where the frame starting at `head` ends, as far as is known.
    fn frame_end(&self, head: u64) -> End {
        let Some(highest) = self.seq.highest() else {
            return End::Open;
        };
        let Some(first) = self.slot(head) else {
            return End::Gap(head);
        };
        let timestamp = first.timestamp;
        let mut at = head;
        let mut marker = first.marker;
        loop {
            if marker {
                return End::Complete(at);
            }
            if at >= highest {
                return End::Open;
            }
            at += 1;
            match self.slot(at) {
                None => return End::Gap(at),
                // The next frame began without this one's marker: take it as ended.
                Some(s) if s.timestamp != timestamp || s.kind == Kind::Padding => {
                    return End::Complete(at - 1)
                }
                Some(s) => marker = s.marker,
            }
        }
    }

    /// `gap` (at or after `head`) is missing. When the wait for it is over, throws away the
    /// packets of the frame before it and skips the missing run. Returns whether it did.
    fn give_up_gap(&mut self, now: Instant, head: u64, gap: u64) -> bool {
        let Some(after) = self.first_after(gap) else {
            return false; // nothing after it: no sign of a loss yet
        };
        let (resume, deadline) = (after.ext, after.arrived + self.config.max_wait);
        if now < deadline {
            self.wake = Some(deadline);
            return false;
        }
        let reason = if self.started {
            DropReason::Incomplete
        } else {
            DropReason::BeforeKeyframe
        };
        for e in head..gap {
            self.discard(e, reason);
        }
        self.skip_missing(gap, resume, reason);
        true
    }

    /// Gives up on sequence numbers `from..to`, none of which is held.
    fn skip_missing(&mut self, from: u64, to: u64, reason: DropReason) {
        let n = to.saturating_sub(from);
        if n == 0 {
            return;
        }
        self.stats.missing += n;
        let d = self.pending_drop(reason);
        d.packets = d.packets.saturating_add(n.min(u32::MAX as u64) as u32);
        self.next = Some(to);
        self.boundary = Boundary::Unknown;
        self.untouched = false;
    }

    /// Throws away the packet `ext` (which may be missing) and moves past it.
    fn discard(&mut self, ext: u64, reason: DropReason) {
        let Some(s) = self.take(ext) else {
            self.skip_missing(ext, ext + 1, reason);
            return;
        };
        self.next = Some(ext + 1);
        self.untouched = false;
        if s.kind == Kind::Padding {
            return;
        }
        self.boundary = Boundary::Known {
            marker: s.marker,
            timestamp: s.timestamp,
        };
        let new_frame = self.last_dropped != Some(s.timestamp);
        self.last_dropped = Some(s.timestamp);
        let d = self.pending_drop(reason);
        d.packets = d.packets.saturating_add(1);
        if new_frame {
            d.frames = d.frames.saturating_add(1);
        }
    }

    /// The drop being counted, of `reason`; one of another reason is reported first.
    fn pending_drop(&mut self, reason: DropReason) -> &mut PendingDrop {
        if self.pending.is_some_and(|p| p.reason != reason) {
            self.flush_drop();
        }
        if reason != DropReason::BeforeKeyframe && self.started {
            self.after_loss = true;
        }
        self.pending.get_or_insert(PendingDrop {
            reason,
            frames: 0,
            packets: 0,
        })
    }

    fn flush_drop(&mut self) {
        let Some(mut d) = self.pending.take() else {
            return;
        };
        if d.frames == 0 {
            if self.last_dropped.is_some() {
                // Only missing numbers, after packets of a frame already reported: most likely
                // that frame's tail. Counted in `missing`, not reported again.
                return;
            }
            // Missing numbers alone: at least one frame lost.
            d.frames = 1;
        }
        let n = d.frames as u64;
        match d.reason {
            DropReason::Incomplete => self.stats.dropped_incomplete += n,
            DropReason::Malformed => self.stats.dropped_malformed += n,
            DropReason::Overflow => self.stats.dropped_overflow += n,
            DropReason::BeforeKeyframe => self.stats.dropped_before_keyframe += n,
        }
        self.events.push_back(AssemblerEvent::Dropped {
            reason: d.reason,
            frames: d.frames,
            packets: d.packets,
        });
    }

    /// Hands out (or drops) the complete frame `head..=last`.
    fn finish(&mut self, head: u64, last: u64) {
        let slots: Vec<Slot> = (head..=last).filter_map(|e| self.take(e)).collect();
        self.next = Some(last + 1);
        self.untouched = false;
        let Some(end) = slots.last() else { return };
        self.boundary = Boundary::Known {
            marker: end.marker,
            timestamp: end.timestamp,
        };
        let timestamp = end.timestamp;
        let assembled = match self.codec {
            VideoCodec::Vp8 => assemble_vp8(&slots),
            VideoCodec::H264 => assemble_h264(&slots),
            VideoCodec::Vp9 => None,
        };
        let Some((data, keyframe)) = assembled else {
            self.last_dropped = Some(timestamp);
            let d = self.pending_drop(DropReason::Malformed);
            d.frames = d.frames.saturating_add(1);
            d.packets = d.packets.saturating_add(slots.len() as u32);
            return;
        };
        if !keyframe && !self.started {
            self.last_dropped = Some(timestamp);
            let d = self.pending_drop(DropReason::BeforeKeyframe);
            d.frames = d.frames.saturating_add(1);
            d.packets = d.packets.saturating_add(slots.len() as u32);
            return;
        }
        self.flush_drop();
        self.last_dropped = None;
        if keyframe {
            self.started = true;
            self.after_loss = false;
            self.stats.keyframes += 1;
        }
        self.stats.frames += 1;
        self.events.push_back(AssemblerEvent::Frame(Frame {
            timestamp,
            keyframe,
            after_loss: self.after_loss,
            first_sequence: head as u16,
            last_sequence: last as u16,
            data,
        }));
    }

    /// Moves the start of the window to `to`, throwing away everything before it.
    fn advance_to(&mut self, to: u64, reason: DropReason) {
        let Some(mut at) = self.next else { return };
        let highest = self.seq.highest().unwrap_or(at);
        while at < to && at <= highest {
            self.discard(at, reason);
            at += 1;
        }
        if at < to {
            self.skip_missing(at, to, reason);
        }
        self.next = Some(to);
    }

    /// The sender started a new numbering: forget the old one, wait for a keyframe again.
    fn restart(&mut self) {
        self.stats.restarts += 1;
        if let Some(highest) = self.seq.highest() {
            self.advance_to(highest + 1, DropReason::Overflow);
        }
        self.flush_drop();
        self.slots.iter_mut().for_each(|s| *s = None);
        self.bytes = 0;
        self.seq.reset();
        self.next = None;
        self.boundary = Boundary::Unknown;
        self.untouched = true;
        self.started = false;
        self.after_loss = false;
        self.last_dropped = None;
        self.stale = 0;
    }
}

enum End {
    /// The frame is `head..=last`.
    Complete(u64),
    /// This packet of the frame is missing and a later one is here.
    Gap(u64),
    /// All packets so far are here but not the last.
    Open,
}

fn classify(codec: VideoCodec, p: &[u8]) -> Kind {
    if p.is_empty() {
        return Kind::Padding;
    }
    let kind = match codec {
        VideoCodec::Vp8 => vp8_descriptor(p).map(|(descriptor, frame_start)| Kind::Vp8 {
            descriptor,
            frame_start,
        }),
        VideoCodec::H264 => h264_kind(p),
        VideoCodec::Vp9 => None,
    };
    kind.unwrap_or(Kind::Malformed)
}

/// The length of a VP8 payload descriptor (RFC 7741 §4.2) and whether it starts a frame (S set,
/// partition index 0). `None` when it is truncated or nothing follows it.
fn vp8_descriptor(p: &[u8]) -> Option<(u8, bool)> {
    let b0 = *p.first()?;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        at = 2;
        if x & 0x80 != 0 {
            // PictureID: two bytes when its M bit is set.
            let pid = *p.get(at)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    (at < p.len()).then_some((at as u8, b0 & 0x10 != 0 && b0 & 0x07 == 0))
}

/// An H.264 payload of packetization-mode 1 (RFC 6184 §5.6–5.8): a single NAL unit, a STAP-A
/// whose sizes add up, or an FU-A fragment of a NAL unit type. Anything else (STAP-B, MTAP,
/// FU-B, reserved types) is `None`.
fn h264_kind(p: &[u8]) -> Option<Kind> {
    let nal_type = |b: u8| b & 0x1f;
    match nal_type(*p.first()?) {
        1..=23 => Some(Kind::H264Single),
        24 => {
            let mut at = 1;
            let mut units = 0;
            while at < p.len() {
                let size = p.get(at..at + 2)?;
                let size = u16::from_be_bytes([size[0], size[1]]) as usize;
                let unit = p.get(at + 2..at + 2 + size)?;
                if !matches!(nal_type(*unit.first()?), 1..=23) {
                    return None;
                }
                at += 2 + size;
                units += 1;
            }
            (units > 0).then_some(Kind::H264Stap)
        }
        28 => {
            let h = *p.get(1)?;
            let (start, end) = (h & 0x80 != 0, h & 0x40 != 0);
            // One NAL unit in one fragment with both bits is forbidden (RFC 6184 §5.8).
            (!(start && end) && matches!(nal_type(h), 1..=23))
                .then_some(Kind::H264Fu { start, end })
        }
        _ => None,
    }
}

/// Whether an H.264 payload (a single NAL unit or a checked STAP-A) holds a sequence parameter
/// set. H.264 has no bit for "first packet of a frame", so where the packet before is unknown,
/// this is the one start that can be trusted: an encoder puts SPS and PPS at the head of a
/// keyframe (libwebrtc always does), while an IDR fragment may have lost the parameter sets
/// before it, and any other slice the rest of its frame.
fn carries_sps(p: &[u8]) -> bool {
    const SPS: u8 = 7;
    let nal_type = |b: &u8| b & 0x1f;
    match p.first().map(nal_type) {
        Some(SPS) => true,
        Some(24) => {
            let mut at = 1;
            while let Some(size) = p.get(at..at + 2) {
                let size = u16::from_be_bytes([size[0], size[1]]) as usize;
                if p.get(at + 2).map(nal_type) == Some(SPS) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        _ => false,
    }
}

/// The VP8 frame of `slots` and whether it is a key frame; `None` when the first packet does not
/// start a frame.
fn assemble_vp8(slots: &[Slot]) -> Option<(Bytes, bool)> {
    let mut size = 0;
    for (i, s) in slots.iter().enumerate() {
        let Kind::Vp8 {
            descriptor,
            frame_start,
        } = s.kind
        else {
            return None;
        };
        if i == 0 && !frame_start {
            return None;
        }
        size += s.payload.len() - descriptor as usize;
    }
    let mut data = BytesMut::with_capacity(size);
    for s in slots {
        if let Kind::Vp8 { descriptor, .. } = s.kind {
            data.put_slice(&s.payload[descriptor as usize..]);
        }
    }
    // The frame header's first bit is the inverse key frame flag (RFC 6386 §9.1).
    let keyframe = data.first().is_some_and(|b| b & 0x01 == 0);
    Some((data.freeze(), keyframe))
}

/// The Annex B access unit of `slots` and whether it holds an IDR slice; `None` when the
/// fragments do not add up (a fragment without its start or end, another packet inside a
/// fragmented unit).
fn assemble_h264(slots: &[Slot]) -> Option<(Bytes, bool)> {
    const IDR: u8 = 5;
    let mut size = 0;
    for s in slots {
        // A STAP-A's 2-byte sizes become 4-byte start codes: at most its length again.
        size += s.payload.len()
            + match s.kind {
                Kind::H264Stap => s.payload.len(),
                _ => START_CODE.len(),
            };
    }
    let mut data = BytesMut::with_capacity(size);
    let mut keyframe = false;
    // The NAL header of the unit being reassembled from FU-A fragments.
    let mut fu: Option<u8> = None;
    for s in slots {
        let p = &s.payload;
        match s.kind {
            Kind::H264Single => {
                if fu.is_some() {
                    return None;
                }
                keyframe |= p[0] & 0x1f == IDR;
                data.put_slice(&START_CODE);
                data.put_slice(p);
            }
            Kind::H264Stap => {
                if fu.is_some() {
                    return None;
                }
                let mut at = 1;
                while let Some(size) = p.get(at..at + 2) {
                    let size = u16::from_be_bytes([size[0], size[1]]) as usize;
                    let unit = p.get(at + 2..at + 2 + size)?;
                    keyframe |= unit.first().is_some_and(|h| h & 0x1f == IDR);
                    data.put_slice(&START_CODE);
                    data.put_slice(unit);
                    at += 2 + size;
                }
            }
            Kind::H264Fu { start, end } => {
                let header = (p[0] & 0xe0) | (p[1] & 0x1f);
                match (start, fu) {
                    (true, None) => {
                        keyframe |= header & 0x1f == IDR;
                        data.put_slice(&START_CODE);
                        data.put_u8(header);
                        fu = Some(header);
                    }
                    (false, Some(h)) if h == header => {}
                    // A start inside a unit, a fragment without a start, or of another unit.
                    _ => return None,
                }
                data.put_slice(&p[2..]);
                if end {
                    fu = None;
                }
            }
            Kind::Vp8 { .. } | Kind::Padding | Kind::Malformed => return None,
        }
    }
    if fu.is_some() {
        return None; // the unit's last fragment never came
    }
    Some((data.freeze(), keyframe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::packetize::Packetizer;

    fn t0() -> Instant {
        Instant::now()
    }

    fn pkt(sequence: u16, timestamp: u32, marker: bool, payload: &[u8]) -> VideoPacket {
        VideoPacket {
            sequence,
            timestamp,
            marker,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn drain(a: &mut FrameAssembler) -> Vec<AssemblerEvent> {
        std::iter::from_fn(|| a.poll_event()).collect()
    }

    fn frames(ev: &[AssemblerEvent]) -> Vec<&Frame> {
        ev.iter()
            .filter_map(|e| match e {
                AssemblerEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// A VP8 frame of `len` bytes: key (P bit clear) or delta.
    fn vp8_frame(len: usize, key: bool, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[0] = if key { 0x10 } else { 0x11 };
        f
    }

    #[test]
    fn packets_in_any_order_give_frames_in_order() {
        let mut p = Packetizer::new(VideoCodec::Vp8, 100, 65_530, 0).unwrap();
        let f1 = vp8_frame(250, true, 1);
        let f2 = vp8_frame(180, false, 2);
        let mut pkts = p.packetize(1000, &f1).unwrap();
        pkts.extend(p.packetize(4000, &f2).unwrap());
        assert_eq!(pkts.len(), 3 + 2);
        let mut a = FrameAssembler::new(VideoCodec::Vp8, AssemblerConfig::default());
        let now = t0();
        // Reversed, with a duplicate: the sequence numbers wrap in the middle.
        for i in [4, 3, 2, 2, 1, 0] {
            a.push(now, pkts[i].clone());
        }
        let ev = drain(&mut a);
        let f = frames(&ev);
        assert_eq!(f.len(), 2, "{ev:?}");
        assert_eq!((&f[0].data[..], f[0].keyframe), (&f1[..], true));
        assert_eq!((&f[1].data[..], f[1].keyframe), (&f2[..], false));
        assert!(!f[1].after_loss);
        assert_eq!((f[0].first_sequence, f[0].last_sequence), (65_530, 65_532));
        assert_eq!(a.stats().duplicates, 1);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn a_missing_packet_drops_its_frame_after_the_wait_and_later_frames_are_marked() {
        let mut p = Packetizer::new(VideoCodec::Vp8, 100, 0, 0).unwrap();
        let cfg = AssemblerConfig {
            max_wait: Duration::from_millis(100),
            ..Default::default()
        };
        let mut a = FrameAssembler::new(VideoCodec::Vp8, cfg);
        let now = t0();
        let key = p.packetize(0, &vp8_frame(150, true, 1)).unwrap();
        let lost = p.packetize(3000, &vp8_frame(250, false, 2)).unwrap();
        let after = p.packetize(6000, &vp8_frame(50, false, 3)).unwrap();
        for x in key.iter().chain([&lost[0], &lost[2]]).chain(&after) {
            a.push(now, x.clone());
        }
        let ev = drain(&mut a);
        assert_eq!(frames(&ev).len(), 1, "only the keyframe so far: {ev:?}");
        assert_eq!(a.poll_timeout(), Some(now + Duration::from_millis(100)));
        a.handle_timeout(now + Duration::from_millis(99));
        assert!(drain(&mut a).is_empty());
        a.handle_timeout(now + Duration::from_millis(100));
        let ev = drain(&mut a);
        assert_eq!(
            ev[0],
            AssemblerEvent::Dropped {
                reason: DropReason::Incomplete,
                frames: 1,
                packets: 3
            }
        );
        let f = frames(&ev);
        assert_eq!(f.len(), 1);
        assert!(f[0].after_loss && !f[0].keyframe);
        assert!(a.waiting_for_keyframe());
        assert_eq!(a.stats().dropped_incomplete, 1);
        assert_eq!(a.stats().missing, 1);
        // The late packet is counted, not used.
        a.push(now, lost[1].clone());
        assert_eq!(a.stats().late, 1);
        // The next keyframe ends the marking.
        for x in p.packetize(9000, &vp8_frame(60, true, 4)).unwrap() {
            a.push(now, x);
        }
        let ev = drain(&mut a);
        assert!(frames(&ev)[0].keyframe && !frames(&ev)[0].after_loss);
        assert!(!a.waiting_for_keyframe());
    }

    #[test]
    fn delta_frames_before_the_first_keyframe_are_dropped_and_reported() {
        let mut p = Packetizer::new(VideoCodec::Vp8, 1000, 0, 0).unwrap();
        let mut a = FrameAssembler::new(VideoCodec::Vp8, AssemblerConfig::default());
        let now = t0();
        for (i, key) in [false, false, true, false].into_iter().enumerate() {
            for x in p
                .packetize(i as u32 * 3000, &vp8_frame(40, key, 9))
                .unwrap()
            {
                a.push(now, x);
            }
        }
        let ev = drain(&mut a);
        // Held in case a keyframe before them was only late, dropped once one came after them.
        assert_eq!(
            ev[0],
            AssemblerEvent::Dropped {
                reason: DropReason::BeforeKeyframe,
                frames: 2,
                packets: 2,
            }
        );
        assert_eq!(frames(&ev).len(), 2);
        assert!(frames(&ev)[0].keyframe);

        // No keyframe at all: held for `max_wait`, then dropped and reported.
        let mut b = FrameAssembler::new(VideoCodec::Vp8, AssemblerConfig::default());
        for x in p.packetize(99_000, &vp8_frame(40, false, 9)).unwrap() {
            b.push(now, x);
        }
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.poll_timeout(), Some(now + Duration::from_millis(500)));
        b.handle_timeout(now + Duration::from_millis(500));
        assert_eq!(
            drain(&mut b),
            [AssemblerEvent::Dropped {
                reason: DropReason::BeforeKeyframe,
                frames: 1,
                packets: 1,
            }]
        );
        assert!(b.waiting_for_keyframe());
        assert_eq!(a.stats().dropped_before_keyframe, 2);
    }

    #[test]
    fn joining_mid_frame_skips_to_the_next_frame_start() {
        // VP8: the first packet seen is the middle of a frame (no S bit).
        let mut p = Packetizer::new(VideoCodec::Vp8, 100, 0, 0).unwrap();
        let mut a = FrameAssembler::new(VideoCodec::Vp8, AssemblerConfig::default());
        let now = t0();
        let first = p.packetize(0, &vp8_frame(250, true, 1)).unwrap();
        let second = p.packetize(3000, &vp8_frame(250, true, 2)).unwrap();
        for x in first[1..].iter().chain(&second) {
            a.push(now, x.clone());
        }
        let ev = drain(&mut a);
        assert_eq!(frames(&ev).len(), 1);
        assert_eq!(frames(&ev)[0].timestamp, 3000);
    }

    #[test]
    fn padding_between_frames_is_skipped() {
        let mut a = FrameAssembler::new(VideoCodec::Vp8, AssemblerConfig::default());
        let now = t0();
        a.push(now, pkt(1, 0, true, &[0x90, 0x80, 0x80, 0x01, 0x10, 7]));
        a.push(now, pkt(2, 0, false, &[]));
        a.push(now, pkt(3, 3000, true, &[0x90, 0x80, 0x80, 0x02, 0x11, 8]));
        let ev = drain(&mut a);
        assert_eq!(frames(&ev).len(), 2, "{ev:?}");
        assert_eq!(a.stats().frames_dropped(), 0);
    }

    #[test]
    fn a_packet_far_ahead_pushes_the_window_and_a_restart_is_followed() {
        let cfg = AssemblerConfig {
            max_packets: 64,
            ..Default::default()
        };
        let mut a = FrameAssembler::new(VideoCodec::Vp8, cfg);
        let now = t0();
        // An open frame (no marker), then a packet 100 ahead.
        a.push(now, pkt(30_010, 0, false, &[0x90, 0x80, 0x80, 1, 0x10, 1]));
        a.push(
            now,
            pkt(30_110, 3000, true, &[0x90, 0x80, 0x80, 2, 0x10, 2]),
        );
        assert!(a.buffered() <= 64);
        let ev = drain(&mut a);
        assert!(matches!(
            ev[0],
            AssemblerEvent::Dropped {
                reason: DropReason::Overflow,
                ..
            }
        ));
        // Sequence numbers jump 30,000 back and stay there: after a run the assembler follows.
        for i in 0..200u16 {
            a.push(
                now,
                pkt(
                    80 + i,
                    9000 + i as u32 * 3000,
                    true,
                    &[0x90, 0x80, 0x80, 3, 0x10, 3],
                ),
            );
            drain(&mut a);
        }
        assert_eq!(a.stats().restarts, 1);
        assert!(a.stats().frames > 100);
    }

    #[test]
    fn malformed_payloads_are_counted_and_their_frames_dropped() {
        let now = t0();
        // VP8: a truncated descriptor, then a good keyframe.
        let mut a = FrameAssembler::new(VideoCodec::Vp8, AssemblerConfig::default());
        a.push(now, pkt(1, 0, true, &[0x90, 0x80, 0x80, 0x01, 0x10, 7]));
        for (seq, bad) in [
            (2u16, &[0x90u8][..]),
            (3, &[0x80, 0x80, 0x81]),
            (4, &[0x10]),
        ] {
            a.push(now, pkt(seq, seq as u32 * 3000, true, bad));
        }
        a.push(
            now,
            pkt(5, 20_000, true, &[0x90, 0x80, 0x80, 0x05, 0x10, 7]),
        );
        let ev = drain(&mut a);
        assert_eq!(a.stats().malformed, 3);
        assert_eq!(a.stats().dropped_malformed, 3);
        assert_eq!(frames(&ev).len(), 2);
        assert!(frames(&ev)[1].keyframe);

        // H.264: FU-A without a start, STAP-A whose sizes run past the end or leave a byte,
        // FU-A with both S and E, an unsupported type, garbage.
        let mut h = FrameAssembler::new(VideoCodec::H264, AssemblerConfig::default());
        h.push(now, pkt(99, 0, false, &[0x67, 9]));
        h.push(now, pkt(100, 0, true, &[0x65, 1, 2]));
        h.push(now, pkt(101, 3000, true, &[0x7c, 0x05, 1, 2])); // FU-A middle, no start
        h.push(now, pkt(102, 6000, true, &[0x78, 0, 9, 0x67, 1]));
        h.push(now, pkt(103, 9000, true, &[0x78, 0, 1, 0x67, 0]));
        h.push(now, pkt(104, 12_000, true, &[0x7c, 0xc5, 1]));
        h.push(now, pkt(105, 15_000, true, &[0x79, 1, 2]));
        h.push(now, pkt(106, 18_000, true, &[0xff, 0xff, 0xff]));
        // An FU-A that starts but whose frame ends before its end fragment.
        h.push(now, pkt(107, 21_000, false, &[0x7c, 0x85, 1]));
        h.push(now, pkt(108, 21_000, true, &[0x41, 1]));
        h.push(now, pkt(109, 24_000, true, &[0x41, 2]));
        let ev = drain(&mut h);
        let s = h.stats();
        assert_eq!(s.malformed, 5, "{s:?}");
        assert_eq!(s.dropped_malformed, 7, "{s:?} {ev:?}");
        let f = frames(&ev);
        assert_eq!(f.len(), 2);
        assert_eq!(
            &f[0].data[..],
            &[0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x65, 1, 2]
        );
        assert_eq!(&f[1].data[..], &[0, 0, 0, 1, 0x41, 2]);
        assert!(f[1].after_loss);
    }

    #[test]
    fn random_payloads_never_panic_and_memory_stays_bounded() {
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        let now = t0();
        for codec in [VideoCodec::Vp8, VideoCodec::H264, VideoCodec::Vp9] {
            let cfg = AssemblerConfig {
                max_packets: 128,
                max_bytes: 20_000,
                max_wait: Duration::from_millis(10),
            };
            let mut a = FrameAssembler::new(codec, cfg);
            for i in 0..20_000u32 {
                let len = rng.random_range(0..400);
                let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let seq = if rng.random::<f64>() < 0.9 {
                    i as u16
                } else {
                    rng.random()
                };
                let t = now + Duration::from_millis(i as u64);
                a.push(t, pkt(seq, rng.random_range(0..5), rng.random(), &payload));
                a.handle_timeout(t);
                drain(&mut a);
                assert!(a.buffered() <= 128 && a.bytes <= 20_000);
            }
        }
    }
}
