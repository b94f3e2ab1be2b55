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
//! - every Python-facing operation returns an awaitable (pyo3-async-runtimes): the GIL is held
//!   only to convert arguments and results, never while waiting on the engine;
//! - results and events reach Python as the resolution of an awaitable, scheduled on the
//!   asyncio loop by a separate bridge runtime; the engine never calls Python code.

mod call;
mod errors;
mod options;
mod signaling;

use std::sync::OnceLock;

use pyo3::prelude::*;

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

/// Runs `fut` on the media runtime and hands its result to Python as an awaitable. The
/// awaitable's own task (on the bridge runtime) only waits for the result and converts it.
pub(crate) fn on_media<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: std::future::Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let handle = media().spawn(fut);
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        handle
            .await
            .map_err(|e| errors::GroupcallError::new_err(format!("an engine task failed: {e}")))?
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The bridge runtime: one worker that resolves Python awaitables. Apart from the media
    // runtime, so waiting for the GIL here never delays a call.
    let mut bridge = tokio::runtime::Builder::new_multi_thread();
    bridge
        .worker_threads(1)
        .thread_name("groupcall-bridge")
        .enable_all();
    pyo3_async_runtimes::tokio::init(bridge);
    errors::register(m)?;
    m.add_class::<options::Options>()?;
    m.add_class::<signaling::LocalBackend>()?;
    m.add_class::<signaling::LineBackend>()?;
    m.add_class::<call::NativeCall>()?;
    m.add_class::<call::Frame>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
