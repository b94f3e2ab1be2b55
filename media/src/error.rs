//! The one error type of the media crate.
//!
//! Every variant says what failed and, where the caller can do something about it, what to do.
//! Errors that describe *why a connection ended* are [`FailureCause`] instead: they are `Clone`
//! so that they can travel inside events and state.

use std::fmt;

/// Errors returned by the media crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON document (join payload or server answer) could not be used. `path` names the field,
    /// e.g. `transport.candidates[1].port`.
    #[error("{path}: {problem}")]
    Json { path: String, problem: String },

    /// The input was not JSON at all.
    #[error(
        "not valid JSON ({0}); pass the `params` string of updateGroupCallConnection as it came"
    )]
    NotJson(String),

    /// The server answer asks for stream/RTMP mode, which has no transport to build.
    #[error("the server put this participant in {0} mode (no RTC transport); rejoin unmuted or use the stream downloader")]
    NotRtc(&'static str),

    /// The answer has no UDP candidate this transport can use.
    #[error("the server answer has no usable UDP candidate (IPv4 or IPv6); check the server's `transport.candidates`")]
    NoUsableCandidate,

    /// A fingerprint string is not `XX:XX:…` with 32 hex pairs.
    #[error("fingerprint {0:?} is not a SHA-256 fingerprint (32 upper- or lower-case hex pairs joined by ':')")]
    BadFingerprint(String),

    /// An operation needs an established SRTP session.
    #[error("the transport is not connected yet (state {0}); wait for the Connected event")]
    NotConnected(String),

    /// A packet to send could not be built (e.g. an extension id outside 1..=14).
    #[error("cannot build RTP packet: {0}")]
    BuildRtp(String),

    /// The data channel cannot carry a message now: not open yet, or closed for good.
    #[error("the data channel is {0}; text can be sent only while it is open")]
    DataChannelNotOpen(&'static str),

    /// A data channel message is over the limit Telegram's clients accept.
    #[error("a data channel message of {size} bytes is over the {limit}-byte limit; send less")]
    MessageTooLarge { size: usize, limit: usize },

    /// The data channel's send buffer is full: the peer has not acknowledged what was sent.
    #[error("the data channel send buffer is full ({buffered} bytes not yet acknowledged by the peer); retry once it has caught up")]
    SendBufferFull { buffered: usize },

    /// An encoded video frame could not be cut into RTP payloads (empty, not the codec's
    /// format, or too large to send as one frame).
    #[error("cannot packetize this {codec} frame: {problem}; check what the encoder produced")]
    Packetize {
        codec: &'static str,
        problem: String,
    },

    /// A local setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),

    /// A component of the WebRTC stack (ICE, DTLS, SRTP, certificate generation) failed.
    #[error("{layer} failed: {message}")]
    Stack {
        layer: &'static str,
        message: String,
    },
}

impl Error {
    pub(crate) fn json(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Json {
            path: path.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn stack(layer: &'static str, e: impl fmt::Display) -> Self {
        Error::Stack {
            layer,
            message: e.to_string(),
        }
    }
}

/// Why a transport failed. Reported in [`crate::transport::State::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCause {
    /// No connectivity check succeeded before the ICE failure timeout.
    IceFailed,
    /// The peer's DTLS certificate does not match the fingerprint signalled for it. The peer is
    /// not who signalling said it is; no media was or will be accepted.
    FingerprintMismatch { expected: String, received: String },
    /// The DTLS handshake failed for another reason.
    Dtls(String),
    /// SRTP keys could not be derived from the handshake.
    Srtp(String),
    /// The peer closed the DTLS association.
    PeerClosed,
    /// Nothing valid arrived from the peer for longer than the failure timeout.
    Timeout,
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::IceFailed => write!(
                f,
                "ICE failed: no connectivity check to the server's candidates succeeded (is the server reachable over UDP?)"
            ),
            FailureCause::FingerprintMismatch { expected, received } => write!(
                f,
                "DTLS certificate fingerprint mismatch: signalling announced {expected}, the peer presented {received}; refusing the connection"
            ),
            FailureCause::Dtls(m) => write!(f, "DTLS handshake failed: {m}"),
            FailureCause::Srtp(m) => write!(f, "SRTP setup failed: {m}"),
            FailureCause::PeerClosed => write!(f, "the peer closed the DTLS association"),
            FailureCause::Timeout => {
                write!(f, "no valid traffic from the peer within the failure timeout")
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
