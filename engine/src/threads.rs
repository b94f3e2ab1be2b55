//! The engine's own call threads: a few single-threaded tokio runtimes that run calls' tasks
//! instead of the application's runtime ([`Engine::with_call_threads`](crate::Engine)).
//!
//! Why: on a multi-threaded runtime every wake-up of a call (its tick, a datagram) also wakes
//! an idle worker to look for work to steal, so each event costs two thread switches, and on
//! small virtual machines a thread switch costs more than a call's audio. A call pinned to one
//! thread wakes one thread. The application's own tasks can also no longer delay a call: a
//! blocking call in a task of the host's runtime holds that runtime's threads, not these.
//!
//! Calls are placed in turn; each stays on its thread for its life. A thread stops when the
//! engine and every call joined through it are gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The running threads; dropping the last reference stops them.
pub(crate) struct CallThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with `self`: each thread's runtime then returns from `block_on` and ends.
    _stop: Vec<oneshot::Sender<()>>,
}

impl CallThreads {
    pub(crate) fn start(count: usize) -> Result<Arc<Self>> {
        if count == 0 {
            return Err(Error::InvalidConfig(
                "call threads: at least one is needed (or use Engine::new to run calls on the \
                 application's runtime)"
                    .into(),
            ));
        }
        let mut handles = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        for k in 0..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::CallThreads)?;
            let (tx, rx) = oneshot::channel::<()>();
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("groupcall-calls-{k}"))
                .spawn(move || {
                    // Runs the calls' tasks until the engine and its calls are gone.
                    rt.block_on(async {
                        let _ = rx.await;
                    });
                })
                .map_err(Error::CallThreads)?;
            stop.push(tx);
        }
        Ok(Arc::new(CallThreads {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        }))
    }

    /// The thread for the next call.
    pub(crate) fn pick(&self) -> &Handle {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[k]
    }

    pub(crate) fn count(&self) -> usize {
        self.handles.len()
    }
}
