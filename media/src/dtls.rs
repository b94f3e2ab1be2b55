//! DTLS configuration with the peer's certificate pinned to the fingerprint signalling carried.
//!
//! Certificates in group calls are self-signed, so there is no chain to verify: the only thing
//! that ties the DTLS peer to the participant (or server) that signalled is the SHA-256
//! fingerprint. WebPKI verification is therefore off and replaced by an exact fingerprint match;
//! a client certificate is required in both directions.

use std::sync::{Arc, OnceLock};

use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc::dtls::crypto::Certificate;

use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use crate::srtp::SrtpProfile;

/// Filled once by the verify callback when the peer presents a certificate whose fingerprint is
/// not the expected one, so the transport can report *which* certificate it refused.
pub(crate) type MismatchSlot = Arc<OnceLock<Fingerprint>>;

pub(crate) fn handshake_config(
    provider: &Arc<dyn RTCCryptoProvider>,
    certificate: &Certificate,
    is_client: bool,
    expected: Fingerprint,
    profiles: &[SrtpProfile],
    mismatch: MismatchSlot,
) -> Result<HandshakeConfig> {
    let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _chains| {
        let first = certs
            .first()
            .ok_or(rtc::shared::error::Error::ErrNonCertificate)?;
        let got = Fingerprint::of_der(first);
        if got == expected {
            Ok(())
        } else {
            let _ = mismatch.set(got);
            Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)
        }
    });
    if profiles.is_empty() {
        return Err(Error::Config(
            "at least one SRTP profile must be offered".into(),
        ));
    }
    ConfigBuilder::default()
        .with_crypto_provider(provider.clone())
        .with_certificates(vec![certificate.clone()])
        .with_srtp_protection_profiles(profiles.iter().map(|p| p.to_dtls()).collect())
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .with_client_auth(ClientAuthType::RequireAnyClientCert)
        // No SNI means anything here (the peer is pinned by fingerprint); naming it keeps
        // rtc-dtls from warning on every handshake that it had to pick a name itself.
        .with_server_name("groupcall".to_owned())
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(verify))
        .build(is_client, None)
        .map_err(|e| Error::stack("DTLS configuration", e))
}
