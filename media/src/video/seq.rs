//! RTP sequence numbers beyond 16 bits.
//!
//! A video stream wraps its 16-bit sequence number every few minutes. Every buffer here is keyed
//! by an extended 64-bit number so that ordering and distances are plain integer arithmetic;
//! each 16-bit number from the network is extended to the value nearest the highest seen.

/// Extends 16-bit sequence numbers. The first one lands at `2^32 + seq`, so that numbers up to
/// 2^32 before it are still representable and nothing underflows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SeqExtender {
    highest: Option<u64>,
}

const ORIGIN: u64 = 1 << 32;

impl SeqExtender {
    /// The extended value of `seq`: the one within half the 16-bit space of the highest seen
    /// (RFC 1982 order). Does not update anything.
    pub fn extend(&self, seq: u16) -> u64 {
        match self.highest {
            None => ORIGIN + seq as u64,
            Some(h) => {
                let delta = seq.wrapping_sub(h as u16) as i16 as i64;
                h.saturating_add_signed(delta)
            }
        }
    }

    /// Extends `seq` and makes it the highest if it is.
    pub fn extend_and_update(&mut self, seq: u16) -> u64 {
        let ext = self.extend(seq);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forgets the stream: the next number starts a new line.
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_extend_across_the_wrap_in_both_directions() {
        let mut s = SeqExtender::default();
        let a = s.extend_and_update(65_534);
        assert_eq!(s.extend_and_update(65_535), a + 1);
        assert_eq!(s.extend_and_update(0), a + 2);
        assert_eq!(s.extend_and_update(3), a + 5);
        // Reordered from before the wrap: behind, not 65,000 ahead.
        assert_eq!(s.extend(65_533), a - 1);
        assert_eq!(s.highest(), Some(a + 5));
        // Half the space ahead is ahead.
        assert_eq!(s.extend(3u16.wrapping_add(0x7fff)), a + 5 + 0x7fff);
        s.reset();
        assert_eq!(s.extend(7), ORIGIN + 7);
    }
}
