//! SRTP keyed from the DTLS handshake (RFC 5764). One context protects everything this side
//! sends, one authenticates and decrypts everything it receives, for any SSRC: rtc-srtp creates
//! per-SSRC state lazily, which is what lets one transport carry every speaker of a call.

use std::fmt;

use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::dtls::state::State as DtlsState;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::error::{Error, Result};

/// The SRTP profiles Telegram's clients and server use (docs/protocol.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    AeadAes128Gcm,
    AeadAes256Gcm,
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// GCM first, as libwebrtc clients offer, then the HMAC profile ntgcalls also accepts.
    pub const ALL: [SrtpProfile; 3] = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ];

    pub(crate) fn to_dtls(self) -> SrtpProtectionProfile {
        match self {
            SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProfile::AeadAes256Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        }
    }

    pub(crate) fn from_dtls(p: SrtpProtectionProfile) -> Option<Self> {
        SrtpProfile::ALL.into_iter().find(|s| s.to_dtls() == p)
    }

    pub(crate) fn to_srtp(self) -> ProtectionProfile {
        match self {
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        }
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
            SrtpProfile::Aes128CmHmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        })
    }
}

/// Why an SRTP/SRTCP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprotect {
    Replay,
    Failed,
}

/// Send and receive contexts of one DTLS-SRTP association.
pub struct SrtpSession {
    pub profile: SrtpProfile,
    tx: Context,
    rx: Context,
}

impl SrtpSession {
    /// Derives both contexts from a completed handshake. `replay_window` packets of history are
    /// kept per SSRC for replay protection (RFC 3711 §3.3.2).
    pub(crate) fn from_dtls(state: &DtlsState, replay_window: usize) -> Result<Self> {
        let profile = SrtpProfile::from_dtls(state.srtp_protection_profile()).ok_or_else(|| {
            Error::stack(
                "SRTP",
                format!(
                    "the peer negotiated {:?}, which this side did not offer",
                    state.srtp_protection_profile()
                ),
            )
        })?;
        let mut cfg = SrtpConfig {
            profile: profile.to_srtp(),
            ..Default::default()
        };
        let km = state
            .export_keying_material(LABEL_EXTRACTOR_DTLS_SRTP, &[], cfg.keying_material_len())
            .map_err(|e| Error::stack("SRTP key export", e))?;
        cfg.set_session_keys_from_keying_material(km.as_ref(), state.is_client())
            .map_err(|e| Error::stack("SRTP key derivation", e))?;
        let k = &cfg.keys;
        Self::new(
            profile,
            (&k.local_master_key, &k.local_master_salt),
            (&k.remote_master_key, &k.remote_master_salt),
            replay_window,
        )
    }

    /// A session from explicit master keys and salts (benches and tests).
    pub fn new(
        profile: SrtpProfile,
        local: (&[u8], &[u8]),
        remote: (&[u8], &[u8]),
        replay_window: usize,
    ) -> Result<Self> {
        let provider = crate::identity::crypto_provider()?;
        let crypto = provider.crypto();
        let p = profile.to_srtp();
        let tx = Context::new(local.0, local.1, p, None, None, crypto)
            .map_err(|e| Error::stack("SRTP", e))?;
        let rx = Context::new(
            remote.0,
            remote.1,
            p,
            Some(rtc::srtp::option::srtp_replay_protection(replay_window)),
            Some(rtc::srtp::option::srtcp_replay_protection(replay_window)),
            crypto,
        )
        .map_err(|e| Error::stack("SRTP", e))?;
        Ok(SrtpSession { profile, tx, rx })
    }

    /// Master key and salt lengths of a profile.
    pub fn key_lengths(profile: SrtpProfile) -> (usize, usize) {
        let p = profile.to_srtp();
        (p.key_len(), p.salt_len())
    }

    pub fn protect_rtp(&mut self, plain: &[u8]) -> Result<BytesMut> {
        self.tx
            .encrypt_rtp(plain)
            .map_err(|e| Error::stack("SRTP protect", e))
    }

    pub fn protect_rtcp(&mut self, plain: &[u8]) -> Result<BytesMut> {
        self.tx
            .encrypt_rtcp(plain)
            .map_err(|e| Error::stack("SRTCP protect", e))
    }

    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, Unprotect> {
        self.rx.decrypt_rtp(packet).map_err(classify_error)
    }

    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, Unprotect> {
        self.rx.decrypt_rtcp(packet).map_err(classify_error)
    }
}

fn classify_error(e: rtc::shared::error::Error) -> Unprotect {
    use rtc::shared::error::Error as E;
    match e {
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) => Unprotect::Replay,
        _ => Unprotect::Failed,
    }
}
