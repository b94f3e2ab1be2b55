//! Audio over HTTP(S), streamed while it plays: a file on a web server, or a live
//! Icecast/Shoutcast-style stream that never ends.
//!
//! Two halves, so that the call never waits for the network:
//! - a **fetch task** on the runtime (reqwest) downloads the body into a bounded channel of
//!   chunks; when the connection drops it reconnects with backoff and, where the server takes
//!   range requests, asks for the rest from the byte it stopped at (otherwise it skips what was
//!   already played, or, for a live stream, takes up where the stream is now);
//! - a **blocking reader** ([`HttpStream`]) on the source's read-ahead thread hands those bytes
//!   to the decoder as a `Read + Seek` stream; a seek restarts the fetch at another byte.
//!
//! Memory stays bounded by the channel: at most [`CHUNKS`] chunks wait, and the fetch task
//! waits when they do.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Chunks (as the connection delivers them, typically up to 16 KiB) waiting for the decoder.
const CHUNKS: usize = 64;
/// Reconnections in a row without a byte received before the stream counts as lost.
const MAX_RETRIES: u32 = 5;
/// Waits between reconnections: 200 ms, doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// No byte for this long on an open connection: the connection counts as dropped.
const STALL: Duration = Duration::from_secs(10);
/// Connecting and receiving the response headers.
const CONNECT: Duration = Duration::from_secs(10);
/// A forward seek shorter than this reads on instead of asking for a new range.
const SKIP_READING: u64 = 64 * 1024;

/// How to reach an HTTP source: the timeouts and retries, for tests and odd servers.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Connecting and receiving the response headers, per attempt.
    pub connect_timeout: Duration,
    /// No byte for this long on an open connection counts as a dropped connection.
    pub stall_timeout: Duration,
    /// Reconnections in a row, none of which delivered a byte, before giving up.
    pub max_retries: u32,
    /// The first wait before reconnecting; it doubles each time, up to 4 s.
    pub first_backoff: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: CONNECT,
            stall_timeout: STALL,
            max_retries: MAX_RETRIES,
            first_backoff: Duration::from_millis(200),
        }
    }
}

/// What the first response said about the body.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    /// The body's length; `None` for a live stream.
    pub length: Option<u64>,
    /// The server answers range requests (so the reader may seek).
    pub ranges: bool,
    pub content_type: Option<String>,
}

enum Chunk {
    /// Bytes starting at `at` in the body, for the fetch started by seek number `epoch`.
    Data { epoch: u64, at: u64, bytes: Bytes },
    /// The body is complete (for `epoch`).
    End { epoch: u64 },
    /// The fetch gave up.
    Failed { epoch: u64, error: Error },
}

/// The reader's side: bytes in body order, blocking until they come.
pub(crate) struct HttpStream {
    url: String,
    head: Head,
    rx: mpsc::Receiver<Chunk>,
    seeks: mpsc::UnboundedSender<(u64, u64)>,
    /// Incremented on every seek; chunks of older fetches are dropped.
    epoch: u64,
    /// The body offset of the next byte `read` returns.
    pos: u64,
    current: Bytes,
    ended: bool,
}

/// Opens `url`: the first request is made here (so a 404, a refused connection or a page of
/// HTML is an error at once), then the body streams on a task of the current runtime.
pub(crate) async fn open(url: &str, options: HttpOptions) -> Result<HttpStream> {
    let client = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .user_agent(concat!("groupcall/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| http_error(url, &e))?;
    let response = request(&client, url, 0, &options).await?;
    let head = head_of(url, &response)?;
    let (tx, rx) = mpsc::channel(CHUNKS);
    let (seeks, seek_rx) = mpsc::unbounded_channel();
    let fetch = Fetch {
        client,
        url: url.to_owned(),
        head: head.clone(),
        options,
        tx,
    };
    tokio::spawn(fetch.run(response, seek_rx));
    Ok(HttpStream {
        url: url.to_owned(),
        head,
        rx,
        seeks,
        epoch: 0,
        pos: 0,
        current: Bytes::new(),
        ended: false,
    })
}

impl HttpStream {
    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    fn fail(&self, error: &Error) -> std::io::Error {
        std::io::Error::other(format!("{}: {error}", self.url))
    }
}

impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            // The read-ahead thread waits here, never the call.
            match self.rx.blocking_recv() {
                None => return Err(std::io::Error::other("the HTTP fetch task stopped")),
                Some(Chunk::Data { epoch, at, bytes }) if epoch == self.epoch => {
                    // Bytes before `pos` (a seek inside the chunk) are skipped.
                    let skip = self.pos.saturating_sub(at);
                    if skip < bytes.len() as u64 {
                        self.current = bytes.slice(skip as usize..);
                    }
                }
                Some(Chunk::End { epoch }) if epoch == self.epoch => self.ended = true,
                Some(Chunk::Failed { epoch, error }) if epoch == self.epoch => {
                    return Err(self.fail(&error));
                }
                Some(_) => {} // from before the last seek
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for HttpStream {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.head.length.and_then(|l| l.checked_add_signed(d)),
        }
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: cannot seek there ({to:?})", self.url),
            )
        })?;
        if target == self.pos {
            return Ok(target);
        }
        // A short hop forward within the current fetch: read on.
        if target > self.pos && target - self.pos <= SKIP_READING && !self.ended {
            let mut left = target - self.pos;
            let mut sink = [0u8; 4096];
            while left > 0 {
                let n = self.read(&mut sink[..left.min(4096) as usize])?;
                if n == 0 {
                    break;
                }
                left -= n as u64;
            }
            return Ok(self.pos);
        }
        if !self.head.ranges {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("{}: the server does not take range requests", self.url),
            ));
        }
        self.epoch += 1;
        self.pos = target;
        self.current = Bytes::new();
        self.ended = self.head.length.is_some_and(|l| target >= l);
        if !self.ended {
            self.seeks
                .send((self.epoch, target))
                .map_err(|_| std::io::Error::other("the HTTP fetch task stopped"))?;
        }
        Ok(target)
    }
}

impl symphonia::core::io::MediaSource for HttpStream {
    fn is_seekable(&self) -> bool {
        self.head.ranges && self.head.length.is_some()
    }

    fn byte_len(&self) -> Option<u64> {
        self.head.length
    }
}

/// The fetch task's state.
struct Fetch {
    client: reqwest::Client,
    url: String,
    head: Head,
    options: HttpOptions,
    tx: mpsc::Sender<Chunk>,
}

impl Fetch {
    /// Streams `response`, then whatever the reader seeks to, until the reader is gone.
    async fn run(self, first: reqwest::Response, mut seeks: mpsc::UnboundedReceiver<(u64, u64)>) {
        let mut job = Some((0u64, 0u64, Some(first)));
        loop {
            let Some((epoch, from, response)) = job.take() else {
                // Idle until a seek asks for more, or the reader goes.
                match seeks.recv().await {
                    Some((e, at)) => job = Some((e, at, None)),
                    None => return,
                }
                continue;
            };
            tokio::select! {
                done = self.stream(epoch, from, response) => {
                    let chunk = match done {
                        Ok(()) => Chunk::End { epoch },
                        Err(error) => Chunk::Failed { epoch, error },
                    };
                    if self.tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                s = seeks.recv() => match s {
                    // The newest seek wins; the body being read is dropped.
                    Some((e, at)) => job = Some((e, at, None)),
                    None => return,
                },
            }
            // Later seeks already waiting supersede this one.
            while let Ok((e, at)) = seeks.try_recv() {
                job = Some((e, at, None));
            }
        }
    }

    /// Delivers the body from byte `from` to its end, reconnecting when the connection drops.
    async fn stream(
        &self,
        epoch: u64,
        mut from: u64,
        mut response: Option<reqwest::Response>,
    ) -> Result<()> {
        let mut failures = 0u32;
        let mut backoff = self.options.first_backoff;
        loop {
            let mut r = match response.take() {
                Some(r) => r,
                None => match request(&self.client, &self.url, from, &self.options).await {
                    Ok(r) => r,
                    Err(e @ (Error::HttpStatus { .. } | Error::HttpContentType { .. })) => {
                        return Err(e)
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > self.options.max_retries {
                            return Err(e);
                        }
                        tracing::warn!(url = %self.url, %e, "reconnecting in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            // What this response starts at: where asked (206), or the start (200, a server
            // without ranges) whose first `from` bytes are skipped; a live stream has no
            // start to return to and goes on from now.
            let live = self.head.length.is_none();
            let mut at = if r.status() == reqwest::StatusCode::PARTIAL_CONTENT || live {
                from
            } else {
                0
            };
            let dropped = loop {
                let chunk = match tokio::time::timeout(self.options.stall_timeout, r.chunk()).await
                {
                    Ok(Ok(Some(c))) => c,
                    Ok(Ok(None)) => break None,
                    Ok(Err(e)) => break Some(http_error(&self.url, &e)),
                    Err(_) => {
                        break Some(Error::Http {
                            url: self.url.clone(),
                            reason: format!(
                                "nothing received for {:?}",
                                self.options.stall_timeout
                            ),
                        })
                    }
                };
                let len = chunk.len() as u64;
                if at + len > from {
                    let skip = from.saturating_sub(at) as usize;
                    let data = Chunk::Data {
                        epoch,
                        at: from,
                        bytes: chunk.slice(skip..),
                    };
                    if self.tx.send(data).await.is_err() {
                        return Ok(()); // the reader is gone
                    }
                    from = at + len;
                    failures = 0;
                    backoff = self.options.first_backoff;
                }
                at += len;
            };
            match dropped {
                // A body shorter than its declared length is a dropped connection too.
                None if self.head.length.is_none_or(|l| from >= l) => return Ok(()),
                None => {}
                Some(e) => tracing::warn!(url = %self.url, %e, at = from, "connection dropped"),
            }
            failures += 1;
            if failures > self.options.max_retries {
                return Err(Error::Http {
                    url: self.url.clone(),
                    reason: format!(
                        "the connection dropped at byte {from} and {} reconnections failed",
                        self.options.max_retries
                    ),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One GET from byte `from` (a range request when `from` > 0), checked.
async fn request(
    client: &reqwest::Client,
    url: &str,
    from: u64,
    options: &HttpOptions,
) -> Result<reqwest::Response> {
    let mut req = client.get(url);
    if from > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
    }
    let response = tokio::time::timeout(options.connect_timeout, req.send())
        .await
        .map_err(|_| Error::Http {
            url: url.to_owned(),
            reason: format!("no answer within {:?}", options.connect_timeout),
        })?
        .map_err(|e| http_error(url, &e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_owned(),
        });
    }
    Ok(response)
}

/// What the first response says about the body; pages and documents are refused.
fn head_of(url: &str, r: &reqwest::Response) -> Result<Head> {
    let headers = r.headers();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if let Some(t) = &content_type {
        let audio = t.starts_with("audio/")
            || t.starts_with("video/")
            || matches!(
                t.as_str(),
                "application/ogg"
                    | "application/octet-stream"
                    | "binary/octet-stream"
                    | "application/mp4"
                    | "application/x-flac"
                    | ""
            );
        if !audio {
            return Err(Error::HttpContentType {
                url: url.to_owned(),
                content_type: t.clone(),
            });
        }
    }
    let ranges = headers
        .get(reqwest::header::ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
    Ok(Head {
        length: r.content_length(),
        ranges,
        content_type,
    })
}

fn http_error(url: &str, e: &reqwest::Error) -> Error {
    // reqwest's Display stops at the outermost cause; the useful part (refused, reset,
    // timed out) is further down.
    let mut reason = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        reason.push_str(": ");
        reason.push_str(&c.to_string());
        cause = c.source();
    }
    Error::Http {
        url: url.to_owned(),
        reason,
    }
}
