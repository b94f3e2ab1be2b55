//! # groupcall-engine
//!
//! Where it sits: on top of `groupcall-media` (the sans-IO transport) and `groupcall-signaling`
//! (how the join reaches a server). An [`Engine`] joins a call through a signaling backend; each
//! [`Call`] runs on its own tokio task (the driver, `driver.rs`) that owns the UDP socket (in
//! the reactor, or read at the call's tick once nothing needs datagrams on arrival:
//! `socket.rs`), the media transport and the audio; the task runs on the application's runtime,
//! or on threads of the engine's own (`threads.rs`, [`Engine::with_call_threads`]). When to rejoin, give up or end, and the roster, are decided
//! by a sans-IO state machine (`machine.rs`) that the driver feeds; the media itself: a source is paced in 20 ms frames into the Opus sender, and
//! every speaker's packets go through a jitter buffer and a decoder into the sinks (a file per
//! speaker, a mix, the application), with speaking levels and roster events on the way out.
//!
//! The audio pipeline ([`audio`]) is sans-IO in the same sense as `groupcall-media`: nothing in
//! it reads a clock or owns a timer. Sources are pulled, receivers are pushed packets with an
//! explicit `now` and pulled every 20 ms, so the driver decides the pacing and tests run on
//! virtual time.

pub mod audio;
mod call;
mod connection;
mod driver;
pub mod error;
mod events;
mod machine;
mod outgoing;
mod receive;
mod requests;
mod screen;
mod socket;
mod threads;
pub mod video;

/// Internals exposed for the benches only; not part of the API.
#[doc(hidden)]
pub mod bench {
    #[cfg(target_os = "linux")]
    pub use crate::socket::{send_batch, SEND_BATCH};
}

pub use call::{
    Call, CallConfig, CallEvent, CallEvents, CallStats, CallSummary, ConnectionState, EndReason,
    Engine, ParticipantInfo, RejoinCause, RejoinPolicy, SpeakerStats, VideoState,
};
pub use error::{Error, Result, SharedError};
pub use events::DEFAULT_EVENT_CAPACITY;
pub use groupcall_media as media;
pub use groupcall_signaling as signaling;
