//! Simulcast: one of a publisher's layers per receiver, re-stamped onto the stream's first SSRC.
//!
//! A camera is sent as up to three independent encodings of one picture (¼, ½ and full size), a
//! screen as two, each on its own SSRC with its RTX partner (docs/protocol.md §1.2, §5.2). A
//! receiver decodes only the first SSRC of the `SIM` group (docs/protocol.md §5.3), so the
//! server picks one layer for each receiver and rewrites its packets onto that SSRC with one
//! continuous sequence-number and timestamp line, switching layers only where the new layer
//! starts a keyframe: the decoder then sees one stream whose resolution changes at a keyframe.
//!
//! [`Layout`] says where a publisher's SSRC sits; [`LayerSelector`] is one receiver's view of one
//! publisher's stream, fed with packets and time, and answers what to send. Whether a packet
//! starts a keyframe is read by `groupcall_media::video::keyframe`.

use std::time::{Duration, Instant};

use groupcall_media::payload::SsrcGroup;

/// A layer not heard from for this long is taken as switched off by its publisher (its
/// bandwidth estimate dropped it, or its receivers' constraints did).
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);

/// One simulcast stream of a publisher: its layers' SSRCs, lowest first, and their RTX partners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimStream {
    pub layers: Vec<u32>,
    pub rtx: Vec<Option<u32>>,
}

/// Where one of a publisher's SSRCs sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Layer { stream: usize, layer: usize },
    Rtx { stream: usize, layer: usize },
}

/// A publisher's simulcast streams, from its payload's `ssrc-groups`. Only `SIM` groups of two
/// or more layers are here: a single encoding is forwarded as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub streams: Vec<SimStream>,
}

/// The most layers a stream may have (libwebrtc sends at most 3).
pub const MAX_LAYERS: usize = 4;

impl Layout {
    pub fn from_groups(groups: &[SsrcGroup]) -> Layout {
        let fid_partner = |primary: u32| {
            groups
                .iter()
                .filter(|g| g.semantics == "FID")
                .find(|g| g.sources.first().map(|s| s.0) == Some(primary))
                .and_then(|g| g.sources.get(1).map(|s| s.0))
        };
        let streams = groups
            .iter()
            .filter(|g| g.semantics == "SIM" && (2..=MAX_LAYERS).contains(&g.sources.len()))
            .map(|g| {
                let layers: Vec<u32> = g.sources.iter().map(|s| s.0).collect();
                let rtx = layers.iter().map(|l| fid_partner(*l)).collect();
                SimStream { layers, rtx }
            })
            .collect();
        Layout { streams }
    }

    pub fn place(&self, ssrc: u32) -> Option<Place> {
        for (stream, s) in self.streams.iter().enumerate() {
            if let Some(layer) = s.layers.iter().position(|l| *l == ssrc) {
                return Some(Place::Layer { stream, layer });
            }
            if let Some(layer) = s.rtx.iter().position(|r| *r == Some(ssrc)) {
                return Some(Place::Rtx { stream, layer });
            }
        }
        None
    }
}

/// What to do with a packet for one receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Drop,
    /// Send it with these values (the SSRC is the stream's first).
    Forward {
        sequence: u16,
        timestamp: u32,
    },
}

/// One receiver's choice among one publisher stream's layers.
#[derive(Clone, Debug)]
pub struct LayerSelector {
    /// The highest layer the receiver wants; `None`: none of this stream.
    target: Option<usize>,
    /// The layer being sent, once one started on a keyframe.
    current: Option<usize>,
    last_heard: [Option<Instant>; MAX_LAYERS],
    seq_offset: u16,
    ts_offset: u32,
    /// The current layer's first sequence number: older ones (reordered) are not sent, their
    /// output numbers belong to the previous layer.
    switch_seq: u16,
    last_out: Option<(u16, u32, Instant)>,
    rtx_seq: u16,
    /// When the last keyframe was asked for (the caller asks; this only remembers).
    switches: u64,
}

impl LayerSelector {
    /// A selector sending up to layer `target` (0 = lowest; anything past the last means the
    /// highest there is).
    pub fn new(target: usize) -> Self {
        LayerSelector {
            target: Some(target),
            current: None,
            last_heard: [None; MAX_LAYERS],
            seq_offset: 0,
            ts_offset: 0,
            switch_seq: 0,
            last_out: None,
            rtx_seq: 0,
            switches: 0,
        }
    }

    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// How many times the layer changed (the first start included).
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The highest layer to send, or `None` to send nothing (the receiver does not watch);
    /// sending again then starts at a keyframe.
    pub fn set_target(&mut self, target: Option<usize>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// The layer it should be sending now: the highest heard recently, up to the target. `None`
    /// while nothing was heard.
    pub fn wanted(&self, now: Instant) -> Option<usize> {
        let target = self.target?;
        (0..MAX_LAYERS).rev().filter(|l| *l <= target).find(|l| {
            self.last_heard[*l].is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
        })
    }

    /// True while the receiver waits for a keyframe on the layer it should switch to (the
    /// caller then asks that layer's publisher for one).
    pub fn needs_keyframe(&self, now: Instant) -> Option<usize> {
        let wanted = self.wanted(now)?;
        (self.current != Some(wanted)).then_some(wanted)
    }

    /// A media packet of `layer`. `keyframe_start` says the packet begins a keyframe.
    pub fn on_packet(
        &mut self,
        now: Instant,
        layer: usize,
        sequence: u16,
        timestamp: u32,
        keyframe_start: bool,
    ) -> Decision {
        if layer >= MAX_LAYERS {
            return Decision::Drop;
        }
        self.last_heard[layer] = Some(now);
        if self.target.is_none() {
            return Decision::Drop;
        }
        let wanted = self.wanted(now);
        if Some(layer) == wanted && self.current != Some(layer) && keyframe_start {
            self.switch_to(now, layer, sequence, timestamp);
        }
        if self.current != Some(layer) {
            return Decision::Drop;
        }
        if seq_before(sequence, self.switch_seq) {
            return Decision::Drop;
        }
        let out_seq = sequence.wrapping_add(self.seq_offset);
        let out_ts = timestamp.wrapping_add(self.ts_offset);
        if self.last_out.is_none_or(|(s, _, _)| seq_before(s, out_seq)) {
            self.last_out = Some((out_seq, out_ts, now));
        }
        Decision::Forward {
            sequence: out_seq,
            timestamp: out_ts,
        }
    }

    fn switch_to(&mut self, now: Instant, layer: usize, sequence: u16, timestamp: u32) {
        match self.last_out {
            Some((seq, ts, at)) => {
                // Continue the line: the next number, and the time that passed since the last
                // packet sent (at least one tick), so the decoder's clock never goes back.
                let elapsed = now.saturating_duration_since(at).as_micros() as u64;
                let ticks = (elapsed * 90 / 1000).clamp(1, u32::MAX as u64) as u32;
                self.seq_offset = seq.wrapping_add(1).wrapping_sub(sequence);
                self.ts_offset = ts.wrapping_add(ticks).wrapping_sub(timestamp);
            }
            None => {
                self.seq_offset = 0;
                self.ts_offset = 0;
            }
        }
        self.switch_seq = sequence;
        self.current = Some(layer);
        self.switches += 1;
    }

    /// A timestamp of the layer being sent, as sent.
    pub fn timestamp(&self, original: u32) -> u32 {
        original.wrapping_add(self.ts_offset)
    }

    /// An RTX packet of `layer` carrying original sequence number `osn`: the rewritten OSN and
    /// the RTX stream's own next sequence number, or `None` when that layer is not being sent.
    pub fn on_rtx(&mut self, layer: usize, osn: u16) -> Option<(u16, u16)> {
        if self.current != Some(layer) || seq_before(osn, self.switch_seq) {
            return None;
        }
        let seq = self.rtx_seq;
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        Some((osn.wrapping_add(self.seq_offset), seq))
    }

    /// The current layer's sequence number of a sent one (to pass a receiver's NACK on), or
    /// `None` when it was sent before the last switch.
    pub fn original_sequence(&self, sent: u16) -> Option<u16> {
        self.current?;
        let original = sent.wrapping_sub(self.seq_offset);
        (!seq_before(original, self.switch_seq)).then_some(original)
    }
}

/// RFC 1982 serial-number order on 16 bits.
fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use groupcall_media::payload::WireSsrc;

    fn group(sem: &str, s: &[u32]) -> SsrcGroup {
        SsrcGroup {
            semantics: sem.into(),
            sources: s.iter().map(|x| WireSsrc(*x)).collect(),
        }
    }

    #[test]
    fn the_layout_places_layers_and_rtx_and_ignores_single_encodings() {
        let l = Layout::from_groups(&[
            group("SIM", &[11, 13, 15]),
            group("FID", &[11, 12]),
            group("FID", &[13, 14]),
            group("FID", &[15, 16]),
        ]);
        assert_eq!(
            l.place(13),
            Some(Place::Layer {
                stream: 0,
                layer: 1
            })
        );
        assert_eq!(
            l.place(16),
            Some(Place::Rtx {
                stream: 0,
                layer: 2
            })
        );
        assert_eq!(l.place(10), None);
        let single = Layout::from_groups(&[group("FID", &[11, 12])]);
        assert!(single.streams.is_empty());
    }

    /// A layer sends a frame of `packets` packets every 33 ms; returns what the receiver got.
    struct Feed {
        t: Instant,
        seq: [u16; 3],
        ts: [u32; 3],
    }

    impl Feed {
        fn new() -> Self {
            Feed {
                t: Instant::now(),
                // Independent encoders: unrelated numbering per layer.
                seq: [100, 40_000, 65_530],
                ts: [1_000, 7_000_000, u32::MAX - 5_000],
            }
        }

        /// One frame on each listed layer; `key` marks keyframes. Returns the sent (seq, ts, layer).
        fn frame(
            &mut self,
            sel: &mut LayerSelector,
            layers: &[usize],
            key: bool,
        ) -> Vec<(u16, u32, usize)> {
            let mut out = Vec::new();
            for &l in layers {
                for i in 0..3 {
                    let d = sel.on_packet(self.t, l, self.seq[l], self.ts[l], key && i == 0);
                    if let Decision::Forward {
                        sequence,
                        timestamp,
                    } = d
                    {
                        out.push((sequence, timestamp, l));
                    }
                    self.seq[l] = self.seq[l].wrapping_add(1);
                }
                self.ts[l] = self.ts[l].wrapping_add(3000);
            }
            self.t += Duration::from_millis(33);
            out
        }
    }

    fn continuous(sent: &[(u16, u32, usize)]) {
        for w in sent.windows(2) {
            assert_eq!(
                w[1].0,
                w[0].0.wrapping_add(1),
                "sequence numbers continue: {w:?}"
            );
            let dt = w[1].1.wrapping_sub(w[0].1);
            assert!(dt < 0x8000_0000, "timestamps never go back: {w:?}");
        }
    }

    #[test]
    fn starts_on_a_keyframe_of_the_top_layer_and_switches_only_on_keyframes() {
        let mut sel = LayerSelector::new(2);
        let mut f = Feed::new();
        let mut sent = Vec::new();
        // Delta frames first: nothing can be decoded, nothing is sent, a keyframe is wanted.
        sent.extend(f.frame(&mut sel, &[0, 1, 2], false));
        assert!(sent.is_empty());
        assert_eq!(sel.needs_keyframe(f.t), Some(2));
        sent.extend(f.frame(&mut sel, &[0, 1, 2], true));
        assert_eq!(sel.current(), Some(2));
        assert!(sent.iter().all(|s| s.2 == 2) && sent.len() == 3);
        for _ in 0..5 {
            sent.extend(f.frame(&mut sel, &[0, 1, 2], false));
        }
        // The receiver now wants at most layer 1: it stays on 2 until 1 has a keyframe.
        sel.set_target(Some(1));
        sent.extend(f.frame(&mut sel, &[0, 1, 2], false));
        assert_eq!(sel.current(), Some(2));
        assert_eq!(sel.needs_keyframe(f.t), Some(1));
        let before = sent.len();
        sent.extend(f.frame(&mut sel, &[0, 1, 2], true));
        assert_eq!(sel.current(), Some(1));
        assert!(sent[before..].iter().all(|s| s.2 == 1));
        for _ in 0..5 {
            sent.extend(f.frame(&mut sel, &[0, 1, 2], false));
        }
        // The publisher turns layer 1 off: after the timeout the selector falls to layer 0 at
        // its next keyframe.
        for _ in 0..40 {
            sent.extend(f.frame(&mut sel, &[0], false));
        }
        assert_eq!(sel.needs_keyframe(f.t), Some(0));
        sent.extend(f.frame(&mut sel, &[0], true));
        assert_eq!(sel.current(), Some(0));
        assert_eq!(sel.switches(), 3);
        continuous(&sent);
        // The timestamp line follows the clock across the 1.35 s the selector waited (layer
        // 1's last frame to layer 0's keyframe), so playout timing stays right.
        let gap = sent
            .windows(2)
            .map(|w| w[1].1.wrapping_sub(w[0].1))
            .max()
            .unwrap();
        assert!((115_000..125_000).contains(&gap), "gap {gap}");
    }

    #[test]
    fn reordered_packets_from_before_a_switch_and_rtx_of_other_layers_are_not_sent() {
        let mut sel = LayerSelector::new(2);
        let t = Instant::now();
        assert!(matches!(
            sel.on_packet(t, 2, 500, 9000, true),
            Decision::Forward { .. }
        ));
        // An older packet of the same layer, from before the keyframe: its number would
        // collide with the previous layer's.
        assert_eq!(sel.on_packet(t, 2, 499, 6000, false), Decision::Drop);
        assert_eq!(sel.on_rtx(1, 77), None);
        assert_eq!(sel.on_rtx(2, 499), None);
        let (osn, rtx_seq) = sel.on_rtx(2, 500).unwrap();
        assert_eq!((osn, rtx_seq), (500, 0));
        assert_eq!(sel.original_sequence(500), Some(500));
    }
}
