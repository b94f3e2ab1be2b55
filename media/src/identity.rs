//! What a participant is on the wire for one join: its audio SSRC, ICE credentials and DTLS
//! certificate. Telegram expects all of it to be fresh on every join *and rejoin*
//! (docs/protocol.md §1.2), so there is no way to reuse an identity across joins here.

use std::fmt;
use std::sync::Arc;

use rand::RngExt;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::crypto::Certificate;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// ICE's `ice-char` set (RFC 8445 §15.4): ALPHA / DIGIT / "+" / "/".
pub const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// libwebrtc's `ICE_UFRAG_LENGTH`, which tgcalls uses.
pub const UFRAG_LEN: usize = 4;
/// libwebrtc's `ICE_PWD_LENGTH`.
pub const PWD_LEN: usize = 24;

/// A SHA-256 certificate fingerprint, kept as its 32 raw bytes so comparisons cannot be fooled
/// by case or formatting. Displays in RFC 4572 form (`AB:CD:…`, upper case).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Parses `AB:CD:…` (either case). Anything else is an error, never a panic.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::BadFingerprint(s.to_owned());
        let mut out = [0u8; 32];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// ICE username fragment and password.
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl fmt::Debug for IceCredentials {
    // The password authenticates STUN: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceCredentials")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"<hidden>")
            .finish()
    }
}

impl IceCredentials {
    /// Fresh credentials with libwebrtc's lengths, from the thread-local CSPRNG.
    pub fn generate() -> Self {
        Self::generate_with_len(UFRAG_LEN, PWD_LEN)
    }

    /// Fresh credentials of the given lengths (the local server uses longer ufrags).
    pub fn generate_with_len(ufrag_len: usize, pwd_len: usize) -> Self {
        IceCredentials {
            ufrag: random_ice_string(ufrag_len),
            pwd: random_ice_string(pwd_len),
        }
    }
}

/// `n` characters drawn uniformly from [`ICE_CHARS`] with a cryptographic RNG.
pub fn random_ice_string(n: usize) -> String {
    // ThreadRng is a CSPRNG (ChaCha, reseeded from the OS).
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ICE_CHARS[rng.random_range(0..ICE_CHARS.len())] as char)
        .collect()
}

/// A uniformly random SSRC in `1..2^31`: tgcalls masks with `0x7fffffff` and redraws zero, so
/// the signed form that travels in JSON and TL is always positive.
pub fn random_audio_ssrc() -> u32 {
    let mut rng = rand::rng();
    loop {
        let v: u32 = rng.random::<u32>() & 0x7fff_ffff;
        if v != 0 {
            return v;
        }
    }
}

/// One participant's identity for one join: SSRC, ICE credentials, DTLS certificate.
#[derive(Clone)]
pub struct LocalIdentity {
    pub audio_ssrc: u32,
    pub ice: IceCredentials,
    pub certificate: Certificate,
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("audio_ssrc", &self.audio_ssrc)
            .field("ice", &self.ice)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl LocalIdentity {
    /// A fresh identity: random SSRC, credentials and ECDSA P-256 certificate.
    pub fn generate() -> Result<Self> {
        let provider = crypto_provider()?;
        let certificate =
            Certificate::generate_self_signed(vec!["groupcall".to_owned()], provider.crypto())
                .map_err(|e| Error::stack("certificate generation", e))?;
        let der = certificate
            .certificate
            .first()
            .ok_or_else(|| Error::stack("certificate generation", "no certificate produced"))?;
        let fingerprint = Fingerprint::of_der(der.as_ref());
        Ok(LocalIdentity {
            audio_ssrc: random_audio_ssrc(),
            ice: IceCredentials::generate(),
            certificate,
            fingerprint,
        })
    }
}

/// The crypto provider (ring) every rtc component needs.
pub(crate) fn crypto_provider() -> Result<Arc<dyn RTCCryptoProvider>> {
    rtc::crypto::default_provider().map_err(|e| Error::stack("crypto provider", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_and_rejects_garbage() {
        let fp = Fingerprint::of_der(b"certificate");
        let s = fp.to_string();
        assert_eq!(s.len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&s).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&s.to_lowercase()).unwrap(), fp);
        for bad in [
            "",
            "AB",
            &s[..s.len() - 3],
            &format!("{s}:00"),
            &s.replace(':', "-"),
        ] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad:?} accepted");
        }
        // Multi-byte characters where hex is expected must not panic.
        let tricky = format!("é{}", &s[1..]);
        assert!(Fingerprint::parse(&tricky).is_err());
    }

    #[test]
    fn debug_hides_ice_password() {
        let c = IceCredentials::generate();
        assert!(!format!("{c:?}").contains(&c.pwd));
    }
}
