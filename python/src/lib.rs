//! # groupcall-python: the engine inside a Python process
//!
//! Where it sits: Python code (`python/groupcall/*.py`, the asyncio API users see) calls this
//! extension module, `groupcall._native`, which drives `groupcall-engine` in the same process.
//! Signaling comes from the local server's backend, or from Python itself (an MTProto client
//! such as Pyrogram or Telethon) through the engine's JSON-line protocol over in-memory pipes.
//!
//! No deadlocks by construction (docs/python.md):
//! - calls run on their own tokio runtime ([`media`]), whose threads never touch Python: a
//!   Python thread holding the GIL, or an event loop blocked by a handler, cannot stall audio;
//! - every Python-facing operation starts a task there and returns at once: the GIL is held
//!   only to convert arguments, never while waiting on the engine;
//! - results and events are queued for the asyncio loop, which a byte on a socket wakes; the
//!   loop converts them on its own thread (`completions.rs`). No engine thread ever takes
//!   the GIL or calls Python code.

mod call;
mod completions;
mod errors;
mod options;
mod signaling;

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::completions::Completions;

/// The runtime calls run on: two workers, named so that `top -H` shows them.
pub(crate) fn media() -> &'static tokio::runtime::Runtime {
    static MEDIA: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    MEDIA.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("groupcall-media")
            .enable_all()
            .build()
            .expect("cannot start the groupcall media runtime (out of threads or memory)")
    })
}

/// Runs `fut` on the media runtime; its result reaches Python through `done` (see
/// `completions.rs`). Returns the token the Python side waits on.
pub(crate) fn on_media<F, T>(done: &Bound<'_, Completions>, fut: F) -> PyResult<u64>
where
    F: std::future::Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let inner = done.get().inner.clone();
    let token = inner.token();
    media().spawn(async move {
        let result = fut.await;
        inner.complete(token, Box::new(move |py| result?.into_py_any(py)));
    });
    Ok(token)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<options::Options>()?;
    m.add_class::<signaling::LocalBackend>()?;
    m.add_class::<signaling::LineBackend>()?;
    m.add_class::<call::NativeCall>()?;
    m.add_class::<call::Frame>()?;
    m.add_class::<completions::Completions>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
