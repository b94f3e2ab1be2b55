//! Engine errors as Python exceptions, named after what failed.
//!
//! One base class, `GroupcallError`, and a subclass per kind of failure a bot reacts to
//! differently: a source it cannot play (skip the track), a server that refused (tell the
//! user), a call that has ended (join again), a setting out of range (a bug in the caller),
//! a queue that is full (slow down). Every message says what failed and what to do.

use groupcall_engine::Error;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    _native,
    GroupcallError,
    PyException,
    "Any failure of the engine."
);
pyo3::create_exception!(
    _native,
    SourceError,
    GroupcallError,
    "What was given to play cannot be opened or read (no such file, a format that is not audio, an HTTP error)."
);
pyo3::create_exception!(
    _native,
    ServerError,
    GroupcallError,
    "The group-call server (or the signaling) refused or failed a request: join, leave, mute."
);
pyo3::create_exception!(
    _native,
    CallEndedError,
    GroupcallError,
    "The call has ended (left, discarded, rejoining gave up); join again to go on."
);
pyo3::create_exception!(
    _native,
    ConfigError,
    GroupcallError,
    "A setting or argument is out of range or malformed."
);
pyo3::create_exception!(
    _native,
    BusyError,
    GroupcallError,
    "A bounded queue is full (the play queue, pushed frames, commands); retry later."
);
pyo3::create_exception!(
    _native,
    DeviceError,
    GroupcallError,
    "A recording could not be written, or a device failed."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("GroupcallError", py.get_type::<GroupcallError>())?;
    m.add("SourceError", py.get_type::<SourceError>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("CallEndedError", py.get_type::<CallEndedError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    Ok(())
}

/// The exception for an engine error.
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::NoSuchInput { .. }
        | Error::YtDlp { .. }
        | Error::OpenInput { .. }
        | Error::ReadInput { .. }
        | Error::BadWav { .. }
        | Error::BadOggOpus { .. }
        | Error::UnsupportedFormat { .. }
        | Error::Http { .. }
        | Error::HttpStatus { .. }
        | Error::HttpContentType { .. }
        | Error::CannotSeek { .. }
        | Error::CannotLoop { .. }
        | Error::FfmpegMissing { .. }
        | Error::FfmpegSpawn { .. }
        | Error::FfmpegFailed { .. }
        | Error::Resample { .. }
        | Error::SourceClosed => SourceError::new_err(msg),
        Error::Signaling(_) | Error::StreamUnsupported { .. } => ServerError::new_err(msg),
        Error::CallEnded(_) => CallEndedError::new_err(msg),
        Error::InvalidConfig(_) | Error::PushedSamples { .. } | Error::FrameSize { .. } => {
            ConfigError::new_err(msg)
        }
        Error::QueueFull { .. } | Error::PushFull { .. } | Error::CommandsFull { .. } => {
            BusyError::new_err(msg)
        }
        Error::Device { .. }
        | Error::CreateSink { .. }
        | Error::WriteSink { .. }
        | Error::RecordingBehind { .. } => DeviceError::new_err(msg),
        _ => GroupcallError::new_err(msg),
    }
}

/// A signaling error (from the backends' own calls: create a call, the line pipe).
pub(crate) fn signaling(e: groupcall_engine::signaling::Error) -> PyErr {
    to_py(Error::Signaling(e))
}
