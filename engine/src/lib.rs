//! # groupcall-engine
//!
//! Ties the media core to the outside world: audio sources and sinks, the Opus send and receive
//! pipelines, and (to come) the tokio driver and the public async API.
//!
//! The audio pipeline ([`audio`]) is sans-IO in the same sense as `groupcall-media`: nothing in
//! it reads a clock or owns a timer. Sources are pulled, receivers are pushed packets with an
//! explicit `now` and pulled every 20 ms, so the driver decides the pacing and tests run on
//! virtual time.

pub mod audio;
pub mod error;

pub use error::{Error, Result};
