//! RFC 7983 demultiplexing: one UDP 5-tuple carries STUN, DTLS and SRTP/SRTCP, told apart by
//! the first byte; RTP and RTCP share a range and are told apart by the payload-type byte
//! (RFC 5761: RTCP packet types 192..=223 appear as 64..=95 once the marker bit is masked).

/// What a datagram is, judged from its first two bytes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// Empty, or a first byte no protocol on this transport uses (ZRTP, TURN channels, …).
    Unknown,
}

pub fn classify(datagram: &[u8]) -> PacketClass {
    match datagram.first() {
        Some(0..=3) => PacketClass::Stun,
        Some(20..=63) => PacketClass::Dtls,
        Some(128..=191) => match datagram.get(1) {
            Some(b) if (64..=95).contains(&(b & 0x7f)) => PacketClass::Rtcp,
            Some(_) => PacketClass::Rtp,
            None => PacketClass::Unknown,
        },
        _ => PacketClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(classify(&[]), PacketClass::Unknown);
        assert_eq!(classify(&[0, 1]), PacketClass::Stun);
        assert_eq!(classify(&[22, 254]), PacketClass::Dtls);
        assert_eq!(classify(&[0x80, 111]), PacketClass::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 111]), PacketClass::Rtp);
        assert_eq!(classify(&[0x80, 200]), PacketClass::Rtcp);
        assert_eq!(classify(&[0x81, 205]), PacketClass::Rtcp);
        assert_eq!(classify(&[0x80]), PacketClass::Unknown);
        assert_eq!(classify(&[64]), PacketClass::Unknown);
        assert_eq!(classify(&[200, 1]), PacketClass::Unknown);
    }
}
