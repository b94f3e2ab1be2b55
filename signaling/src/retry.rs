//! Bounded, automatic retries: FLOOD_WAIT is slept through (once per request, up to a limit),
//! and a join refused for a duplicate SSRC or a server hiccup is retried with a fresh payload.
//!
//! The sleeps go through `tokio::time`, so tests run them on paused time.

use std::future::Future;
use std::time::Duration;

use groupcall_media::JoinPayload;

use crate::error::{Error, Result};

/// Produces a fresh join payload for each join attempt.
///
/// `join` takes a factory rather than a payload because Telegram's answer to a duplicate SSRC
/// (`GROUPCALL_SSRC_DUPLICATE_MUCH`) is "regenerate and retry" (docs/protocol.md §7.1): the retry has
/// to happen inside the join, with a new SSRC each time. The factory must return a payload with a
/// new random SSRC on every call (normally `JoinPayload::new(&LocalIdentity::generate()?, ..)`),
/// and the caller keeps the identities it made: [`crate::Joined::payload`] says which one the
/// server accepted (by its SSRC).
pub type PayloadFactory<'a> =
    dyn FnMut() -> std::result::Result<JoinPayload, groupcall_media::Error> + Send + 'a;

/// Limits of the automatic retries. The defaults follow the official and well-tested clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Join requests in all (the first one included) before a duplicate SSRC or a transient
    /// server error is returned. MadelineProto uses 5.
    pub join_attempts: u32,
    /// The longest FLOOD_WAIT slept through automatically; longer ones are returned as
    /// [`Error::FloodWait`] so the caller can decide.
    pub max_flood_wait: Duration,
    /// How many FLOOD_WAITs a single request may sleep through before giving up.
    pub flood_retries: u32,
    /// Pause before retrying a transient server error, multiplied by the attempt number.
    pub transient_backoff: Duration,
    /// How long `join` waits for the connection answer when the join reply did not carry it.
    pub answer_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            join_attempts: 5,
            max_flood_wait: Duration::from_secs(60),
            flood_retries: 3,
            transient_backoff: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(10),
        }
    }
}

/// Runs `request` until it succeeds or fails with something other than a FLOOD_WAIT this policy
/// is willing to sleep through.
pub(crate) async fn with_flood_wait<T, F, Fut>(policy: &RetryPolicy, mut request: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut waits = 0;
    loop {
        match request().await {
            Err(Error::FloodWait {
                method, seconds, ..
            }) => {
                let wait = Duration::from_secs(u64::from(seconds));
                if wait > policy.max_flood_wait || waits >= policy.flood_retries {
                    return Err(Error::FloodWait {
                        method,
                        seconds,
                        max_wait: policy.max_flood_wait,
                    });
                }
                waits += 1;
                tracing::info!(method, seconds, "FLOOD_WAIT: waiting before retrying");
                // One extra second: Telegram rounds the wait down.
                tokio::time::sleep(wait + Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Runs join attempts, each with a fresh payload from `payloads`, until one is accepted, an
/// error that retrying cannot fix occurs, or the policy's attempts are used up. Returns the
/// accepted payload, the attempt's result and the number of attempts.
pub(crate) async fn join_with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    method: &'static str,
    payloads: &mut PayloadFactory<'_>,
    mut attempt: F,
) -> Result<(JoinPayload, T, u32)>
where
    F: FnMut(JoinPayload) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempts = policy.join_attempts.max(1);
    let mut last = None;
    for n in 1..=attempts {
        let payload = payloads().map_err(Error::Payload)?;
        match attempt(payload.clone()).await {
            Ok(t) => return Ok((payload, t, n)),
            Err(Error::SsrcDuplicate { .. }) => {
                tracing::warn!(
                    attempt = n,
                    ssrc = payload.audio_ssrc(),
                    "SSRC refused as duplicate; retrying with a fresh payload"
                );
                last = Some(Error::SsrcDuplicate {
                    method,
                    attempts: n,
                });
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(attempt = n, error = %e, "transient join failure");
                if n < attempts {
                    tokio::time::sleep(policy.transient_backoff * n).await;
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    // `attempts >= 1`, so the loop ran and set `last` unless it returned.
    Err(last.unwrap_or(Error::SsrcDuplicate {
        method,
        attempts: 0,
    }))
}
