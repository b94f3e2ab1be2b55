//! End-to-end scaffolding: a real local server with one call, bots that join it through the
//! local signaling backend, and waiting for a call's events with a bound.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use groupcall_engine::audio::{Channels, Source, SourceOptions};
use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::{Call, CallConfig, CallEvent, ConnectionState, Engine};
use groupcall_sfu::{LocalServer, LocalServerConfig};
use tokio::time::timeout;

use super::{sine, write_wav};

pub const RATE: u32 = 48_000;

/// A local server on loopback with one call, created by user 1.
pub struct Setup {
    pub server: LocalServer,
    pub call: CallRef,
}

impl Setup {
    pub async fn start() -> Setup {
        let server = LocalServer::start(LocalServerConfig::default())
            .await
            .expect("the local server starts");
        let info = local(&server, 1)
            .create_call(None, &CreateCall::default())
            .await
            .expect("call created");
        Setup {
            server,
            call: CallRef::Id(info.id),
        }
    }

    pub fn call_id(&self) -> i64 {
        self.call.id().expect("a call id").id
    }

    /// The local backend acting as `user`.
    pub fn signaling(&self, user: i64) -> Arc<dyn Signaling> {
        local(&self.server, user)
    }

    /// Joins the call as `user`.
    pub async fn join(&self, user: i64, config: CallConfig) -> Call {
        Engine::new(self.signaling(user))
            .join(self.call.clone(), config)
            .await
            .unwrap_or_else(|e| panic!("user {user} cannot join: {e}"))
    }
}

pub fn local(server: &LocalServer, user: i64) -> Arc<dyn Signaling> {
    Arc::new(LocalSignaling::new(server.control_url(), PeerId::User(user)).unwrap())
}

/// Waits for the first event `pick` accepts, failing after `secs`; returns it and everything
/// seen before it.
pub async fn wait_for<T>(
    call: &mut Call,
    secs: u64,
    what: &str,
    mut pick: impl FnMut(&CallEvent) -> Option<T>,
) -> (T, Vec<CallEvent>) {
    let mut seen = Vec::new();
    let r = timeout(Duration::from_secs(secs), async {
        while let Some(e) = call.next_event().await {
            if let Some(t) = pick(&e) {
                return Some(t);
            }
            seen.push(e);
        }
        None
    })
    .await;
    match r {
        Ok(Some(t)) => (t, seen),
        Ok(None) => panic!("{what}: the call ended first; events: {seen:?}"),
        Err(_) => panic!("{what}: not within {secs} s; events: {seen:?}"),
    }
}

/// [`wait_for`] without the events seen before.
pub async fn until<T>(
    call: &mut Call,
    secs: u64,
    what: &str,
    pick: impl FnMut(&CallEvent) -> Option<T>,
) -> T {
    wait_for(call, secs, what, pick).await.0
}

/// Waits (10 s at most) until the call reports Connected.
pub async fn connected(call: &mut Call) {
    until(call, 10, "connected", |e| {
        matches!(e, CallEvent::State(ConnectionState::Connected)).then_some(())
    })
    .await;
}

/// Waits (15 s at most) until the call's source has ended.
pub async fn source_ended(call: &mut Call) {
    until(call, 15, "the source ends", |e| {
        matches!(e, CallEvent::SourceEnded { .. }).then_some(())
    })
    .await;
}

pub fn playing(source: Source) -> CallConfig {
    CallConfig {
        source: Some(source),
        ..CallConfig::default()
    }
}

pub fn wav_source(path: &Path) -> Source {
    Source::wav(
        path,
        SourceOptions {
            channels: Channels::Mono,
            looping: false,
        },
    )
    .unwrap()
}

/// A mono WAV of a sine written into `dir`, as a source.
pub fn tone_source(dir: &Path, freq: f64, secs: usize, looping: bool) -> Source {
    let wav = dir.join(format!("tone{freq}.wav"));
    write_wav(
        &wav,
        RATE,
        1,
        &sine(freq, 10000.0, RATE, 0, secs * RATE as usize),
    );
    Source::wav(
        &wav,
        SourceOptions {
            channels: Channels::Mono,
            looping,
        },
    )
    .unwrap()
}
