//! How results get from the engine's threads to Python without those threads ever taking the
//! GIL.
//!
//! An operation started from Python runs on the media runtime and, when done, queues its
//! result here and writes one byte to a socket the asyncio loop watches (`loop.add_reader`).
//! The loop's callback (`python/groupcall/_bridge.py`), on the loop's own thread with the GIL
//! it already holds, takes the queued results, converts them to Python objects and resolves
//! the futures. So no engine thread waits for the GIL (a handler blocking the loop delays
//! only Python), and none touches Python while the interpreter shuts down: a thread that
//! asks for the GIL during finalization is stopped by CPython mid-way, which crashed the
//! process when results were delivered that way.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::errors::ConfigError;

/// A result waiting for Python: turned into a Python object on the loop's thread.
type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

pub(crate) struct Inner {
    queue: Mutex<Vec<(u64, Outcome)>>,
    next: std::sync::atomic::AtomicU64,
    wake: UnixStream,
}

impl Inner {
    pub(crate) fn token(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `outcome` and wakes the loop. Never blocks: a full socket already holds a
    /// wake-up, and one wake-up drains everything queued.
    pub(crate) fn complete(&self, token: u64, outcome: Outcome) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((token, outcome));
        let _ = (&self.wake).write(&[1]);
    }
}

/// The completions of one asyncio loop.
#[pyclass(module = "groupcall._native", frozen)]
pub struct Completions {
    pub(crate) inner: Arc<Inner>,
}

#[pymethods]
impl Completions {
    /// `fd`: the writing end of a socket pair whose other end the loop reads. It is
    /// duplicated: the caller keeps (and closes) its own.
    #[new]
    fn new(fd: i32) -> PyResult<Self> {
        let bad = |e: std::io::Error| ConfigError::new_err(format!("wake-up socket {fd}: {e}"));
        if fd < 0 {
            return Err(ConfigError::new_err(format!(
                "wake-up socket {fd}: not a descriptor"
            )));
        }
        // SAFETY: the caller passes a descriptor it keeps open for this call; it is only
        // borrowed here, to duplicate it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let owned: OwnedFd = borrowed.try_clone_to_owned().map_err(bad)?;
        let wake = UnixStream::from(owned);
        wake.set_nonblocking(true).map_err(bad)?;
        Ok(Completions {
            inner: Arc::new(Inner {
                queue: Mutex::default(),
                next: std::sync::atomic::AtomicU64::new(1),
                wake,
            }),
        })
    }

    /// Everything completed so far: `(token, ok, value)`, `value` the result or, when not
    /// `ok`, the exception.
    fn take(&self, py: Python<'_>) -> Vec<(u64, bool, Py<PyAny>)> {
        let done = std::mem::take(&mut *self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()));
        done.into_iter()
            .map(|(token, outcome)| match outcome(py) {
                Ok(v) => (token, true, v),
                Err(e) => (token, false, e.into_value(py).into_any()),
            })
            .collect()
    }
}
