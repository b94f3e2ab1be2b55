//! Where joins go: the local server's HTTP control API, or Python itself.
//!
//! Bring-your-own signaling reuses the engine's JSON-line protocol
//! (`groupcall_signaling::stdio`, the one `groupcall join --signaling stdio` speaks) over
//! in-memory pipes instead of standard input and output: the engine writes `{"payload": …}`,
//! Python's pump (`python/groupcall/_pump.py`) sends it with its MTProto client and writes
//! `{"answer": …}` back, and feeds the roster as `{"participants": …}` lines. One protocol,
//! already bounded and tested against malformed input, for the CLI and the package.

use std::sync::Arc;

use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::stdio::{StdioSignaling, STDIO_CALL};
use groupcall_engine::signaling::{CallId, CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::Engine;
use pyo3::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};
use tokio::sync::{mpsc, watch, Mutex as AsyncMutex};

use crate::call::NativeCall;
use crate::completions::Completions;
use crate::errors::{signaling, to_py, ConfigError};
use crate::options::Options;
use crate::{media, on_media};

/// Room in each in-memory pipe: the longest line of the protocol (1 MiB) fits.
const PIPE: usize = 2 << 20;

async fn join(engine: Engine, call: CallRef, options: Options) -> PyResult<NativeCall> {
    let mut prepared = options.prepare().await?;
    let config = std::mem::take(&mut prepared.config);
    let call = engine.join(call, config).await.map_err(to_py)?;
    Ok(NativeCall::new(call, prepared))
}

/// The local server (`groupcall serve`), as user `user`.
#[pyclass(module = "groupcall._native", frozen)]
pub struct LocalBackend {
    signaling: Arc<LocalSignaling>,
}

#[pymethods]
impl LocalBackend {
    #[new]
    fn new(url: String, user: i64) -> PyResult<Self> {
        if user <= 0 {
            return Err(ConfigError::new_err(format!(
                "user {user}: the local server's users are positive numbers"
            )));
        }
        let _runtime = media().enter();
        let signaling = LocalSignaling::new(url, PeerId::User(user)).map_err(signaling)?;
        Ok(LocalBackend {
            signaling: Arc::new(signaling),
        })
    }

    /// Creates a call (the user becomes its admin); its id.
    fn create_call<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        let s = self.signaling.clone();
        on_media(done, async move {
            let info = s
                .create_call(None, &CreateCall::default())
                .await
                .map_err(signaling)?;
            Ok(info.id.id)
        })
    }

    fn join<'py>(
        &self,
        done: &Bound<'py, Completions>,
        call_id: i64,
        options: &Bound<'py, Options>,
    ) -> PyResult<u64> {
        let options = options.get().clone();
        let engine = Engine::new(self.signaling.clone() as Arc<dyn Signaling>);
        let call = CallRef::Id(CallId {
            id: call_id,
            access_hash: 0,
        });
        on_media(done, join(engine, call, options))
    }
}

/// One call's signaling spoken by Python, as JSON lines.
#[pyclass(module = "groupcall._native", frozen)]
pub struct LineBackend {
    engine: Engine,
    to_engine: mpsc::UnboundedSender<String>,
    from_engine: Arc<AsyncMutex<Lines<BufReader<DuplexStream>>>>,
    /// Set by `finish`: `read_line` answers `None` once nothing more is waiting.
    finished: watch::Sender<bool>,
}

#[pymethods]
impl LineBackend {
    #[new]
    fn new() -> Self {
        let _runtime = media().enter();
        let (engine_in, mut python_out) = tokio::io::duplex(PIPE);
        let (engine_out, python_in) = tokio::io::duplex(PIPE);
        let (signaling, mut commands) = StdioSignaling::new(BufReader::new(engine_in), engine_out);
        // Lines that are not signaling (`{"leave": true}`, a malformed line) are the
        // protocol's commands; the package controls calls through methods instead.
        tokio::spawn(async move { while commands.recv().await.is_some() {} });
        let (to_engine, mut lines) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = lines.recv().await {
                line.push('\n');
                if python_out.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        LineBackend {
            engine: Engine::new(Arc::new(signaling)),
            to_engine,
            from_engine: Arc::new(AsyncMutex::new(BufReader::new(python_in).lines())),
            finished: watch::channel(false).0,
        }
    }

    /// The next line the engine wrote; `None` after [`finish`](Self::finish) once every line
    /// written before it has been read.
    fn read_line<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        let lines = self.from_engine.clone();
        let mut finished = self.finished.subscribe();
        on_media(done, async move {
            let mut lines = lines.lock().await;
            // Biased: a line already in the pipe (the leave a call wrote before it returned)
            // is read before the end is noticed.
            tokio::select! {
                biased;
                line = lines.next_line() => line.map_err(|e| {
                    crate::errors::GroupcallError::new_err(format!("the signaling pipe failed: {e}"))
                }),
                _ = finished.wait_for(|f| *f) => Ok(None),
            }
        })
    }

    /// The call is over: `read_line` ends once the lines written so far are read.
    fn finish(&self) {
        self.finished.send_replace(true);
    }

    /// Hands the engine one line (an answer, an error, a roster update).
    fn write_line(&self, line: String) -> PyResult<()> {
        if line.contains('\n') {
            return Err(ConfigError::new_err(
                "a signaling line must not contain a newline: write one JSON object per call",
            ));
        }
        self.to_engine.send(line).map_err(|_| {
            crate::errors::CallEndedError::new_err("the engine no longer reads signaling lines")
        })
    }

    /// Joins through this pipe.
    fn join<'py>(
        &self,
        done: &Bound<'py, Completions>,
        options: &Bound<'py, Options>,
    ) -> PyResult<u64> {
        let options = options.get().clone();
        on_media(
            done,
            join(self.engine.clone(), CallRef::Id(STDIO_CALL), options),
        )
    }
}
