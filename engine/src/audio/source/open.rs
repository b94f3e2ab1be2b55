//! Opening whatever a user names: a path, `-`, an HTTP(S) URL, a web page.
//!
//! The CLI's `--play` and the Python package's `play()` take one string; choosing the reader
//! from it is the same decision for both, so it lives here once. Files are opened off the
//! async runtime's workers (opening reads and primes them); URLs stream in-process, and a URL
//! that turns out to be a web page goes through `yt-dlp` when it is installed.

use std::path::Path;

use super::{RawFormat, Source, SourceOptions};
use crate::error::{Error, Result};

/// How [`Source::open`] reads what it is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// The layout of raw PCM (standard input, `.raw`/`.pcm` files).
    pub raw: RawFormat,
    /// Decode files with an ffmpeg process instead of in-process.
    pub ffmpeg: bool,
    pub source: SourceOptions,
}

impl Source {
    /// Opens `spec`: `-` (raw PCM on standard input), a path (WAV, Ogg/Opus, raw PCM, MP3,
    /// AAC, FLAC, Vorbis, ALAC in-process; anything else through ffmpeg), an `http(s)://` URL
    /// (streamed in-process with the `http` feature), the URL of a page `yt-dlp` knows, or a
    /// URL of another scheme (ffmpeg's).
    pub async fn open(spec: &str, options: OpenOptions) -> Result<Source> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return open_url(spec, options.source).await;
        }
        let owned = spec.to_owned();
        tokio::task::spawn_blocking(move || open_file(&owned, options))
            .await
            .unwrap_or_else(|e| {
                Err(Error::ReadInput {
                    input: spec.to_owned(),
                    source: std::io::Error::other(format!("the task that opened it failed: {e}")),
                })
            })
    }
}

/// A file, standard input, or a URL of another scheme (ffmpeg's).
fn open_file(spec: &str, options: OpenOptions) -> Result<Source> {
    let (format, source_options) = (options.raw, options.source);
    if spec == "-" {
        return Source::stdin(format, source_options);
    }
    let path = Path::new(spec);
    if !path.exists() && !spec.contains("://") {
        return Err(Error::NoSuchInput {
            input: spec.to_owned(),
        });
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        _ if spec.contains("://") || options.ffmpeg => Source::ffmpeg(spec, None, source_options),
        "wav" | "wave" => Source::wav(path, source_options),
        // Ogg/Opus is sent without re-encoding; other Ogg (Vorbis) is decoded.
        "ogg" | "opus" | "oga" => match Source::ogg_opus(path, source_options) {
            Err(e @ Error::BadOggOpus { .. }) => {
                Source::decoded(path, source_options).map_err(|_| e)
            }
            other => other,
        },
        "raw" | "pcm" | "s16" | "s16le" => Source::raw_file(path, format, source_options),
        // MP3, AAC, FLAC, Vorbis, ALAC... in-process; ffmpeg for what symphonia cannot read.
        _ => match Source::decoded(path, source_options) {
            Err(Error::UnsupportedFormat { .. }) => Source::ffmpeg(spec, None, source_options),
            other => other,
        },
    }
}

/// An HTTP(S) URL: audio streamed in-process; a web page (a video site's) through `yt-dlp`
/// when it is on the PATH, which gives the page's audio URL.
#[cfg(feature = "http")]
async fn open_url(url: &str, options: SourceOptions) -> Result<Source> {
    match Source::http(url, options).await {
        Err(e @ Error::HttpContentType { .. }) => {
            let direct = yt_dlp(url, &e).await?;
            tracing::info!("{url}: playing the audio yt-dlp found for it");
            Source::http(&direct, options).await
        }
        other => other,
    }
}

/// Without the `http` feature, URLs go to ffmpeg (which reads them) when it is installed.
#[cfg(not(feature = "http"))]
async fn open_url(url: &str, options: SourceOptions) -> Result<Source> {
    Source::ffmpeg(url, None, options)
}

/// Asks `yt-dlp` (if installed) for the direct URL of a page's best audio.
#[cfg(feature = "http")]
async fn yt_dlp(url: &str, not_audio: &Error) -> Result<String> {
    let fail = |reason: String| Error::YtDlp {
        url: url.to_owned(),
        reason,
    };
    let run = tokio::process::Command::new("yt-dlp")
        .args(["--no-playlist", "-f", "bestaudio/best", "-g", url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(std::time::Duration::from_secs(60), run).await {
        Err(_) => return Err(fail("it did not answer within 60 s".into())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!(
            "{not_audio} (yt-dlp is not on the PATH; install it to play pages of sites it knows)"
        )))
        }
        Ok(Err(e)) => return Err(fail(format!("cannot run it: {e}"))),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http"))
    {
        Some(direct) if out.status.success() => Ok(direct.to_owned()),
        _ => Err(fail(format!(
            "it found no audio ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
