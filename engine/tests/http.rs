//! HTTP sources against a real HTTP server (axum on loopback) that serves files with and
//! without range requests, drops connections mid-body, answers 404 or a web page, never
//! answers, or streams live without an end.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use groupcall_engine::audio::source::{Frame, HttpOptions, Next, Source, SourceOptions};
use groupcall_engine::audio::Channels;
use groupcall_engine::{CallConfig, Error};
use support::e2e::*;
use support::*;

/// What the server has and what it was asked.
#[derive(Default)]
struct Served {
    files: Vec<(String, Bytes, &'static str)>,
    /// Each request: file and the Range header.
    log: Mutex<Vec<(String, Option<String>)>>,
}

/// `/f/NAME`: the file with ranges; `/norange/NAME`: the whole file every time;
/// `/drop/NAME` and `/norange-drop/NAME`: as those, but the first response dies halfway
/// through its body; `/live/NAME`: the file over and over, no length, no end.
async fn serve(
    State(s): State<Arc<Served>>,
    UrlPath((mode, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let first = {
        let mut log = s.log.lock().unwrap();
        log.push((format!("{mode}/{name}"), range.clone()));
        log.iter()
            .filter(|(n, _)| *n == format!("{mode}/{name}"))
            .count()
            == 1
    };
    let Some((_, data, mime)) = s.files.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let (data, mime) = (data.clone(), *mime);
    // `/gone/NAME`: the first response dies halfway, and then the file is gone (404).
    if mode == "gone" && !first {
        return (StatusCode::NOT_FOUND, "removed").into_response();
    }
    if mode == "live" {
        let chunks = futures_like_loop(data);
        return Response::builder()
            .header(header::CONTENT_TYPE, mime)
            .header("icy-name", "test radio")
            .body(Body::from_stream(chunks))
            .unwrap();
    }
    let ranges = mode == "f" || mode == "drop" || mode == "gone";
    let from: usize = match (&range, ranges) {
        (Some(r), true) => r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap(),
        _ => 0,
    };
    let body = data.slice(from..);
    let len = body.len();
    let mut b = Response::builder()
        .status(if from > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_LENGTH, len);
    if ranges {
        b = b.header(header::ACCEPT_RANGES, "bytes");
    }
    if first && (mode.ends_with("drop") || mode == "gone") {
        // Half the body, then the connection dies (the length said more was coming).
        let half = body.slice(..len / 2);
        let stream = tokio_stream_of(vec![Ok(half), Err(std::io::Error::other("cut"))]);
        return b.body(Body::from_stream(stream)).unwrap();
    }
    b.body(Body::from(body)).unwrap()
}

fn tokio_stream_of(
    items: Vec<std::io::Result<Bytes>>,
) -> impl futures_core::Stream<Item = std::io::Result<Bytes>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in items {
            // Let the good half go out before the error kills the connection.
            let err = i.is_err();
            if err {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if tx.send(i).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream(rx)
}

/// The file's bytes in 4 KiB chunks, round and round.
fn futures_like_loop(data: Bytes) -> impl futures_core::Stream<Item = std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            for c in data.chunks(4096) {
                if tx.send(Ok(Bytes::copy_from_slice(c))).await.is_err() {
                    return;
                }
            }
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

struct Server {
    addr: SocketAddr,
    served: Arc<Served>,
}

impl Server {
    async fn start(files: Vec<(String, Bytes, &'static str)>) -> Server {
        let served = Arc::new(Served {
            files,
            ..Served::default()
        });
        let app = Router::new()
            .route("/{mode}/{name}", get(serve))
            .route(
                "/page.html",
                get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html></html>") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { addr, served }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn requests(&self, name: &str) -> Vec<Option<String>> {
        let log = self.served.log.lock().unwrap();
        log.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn wav_bytes(rate: u32, samples: &[i16]) -> Bytes {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.wav");
    write_wav(&p, rate, 1, samples);
    Bytes::from(std::fs::read(&p).unwrap())
}

fn fixture(name: &str) -> Bytes {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Bytes::from(std::fs::read(p).unwrap())
}

/// A stepped sweep: second `k` is a tone at 300 + 10 k Hz, at 16 kHz.
fn sweep(seconds: usize) -> Vec<i16> {
    (0..seconds * 16000)
        .map(|i| {
            let f = 300.0 + 10.0 * (i / 16000) as f64;
            (8000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 16000.0).sin()) as i16
        })
        .collect()
}

fn mono(looping: bool) -> SourceOptions {
    SourceOptions {
        channels: Channels::Mono,
        looping,
    }
}

/// Pulls up to `limit` frames (or to the end), waiting for the read-ahead as the call would
/// not: bounded to 20 s.
async fn pull(src: &mut Source, limit: usize) -> Result<(Vec<i16>, bool), Error> {
    let mut out = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut frames = 0;
    while frames < limit {
        match src.next_frame()? {
            Next::Frame(Frame::Pcm(p)) => {
                out.extend_from_slice(p);
                frames += 1;
            }
            Next::Frame(Frame::Opus { .. }) => panic!("HTTP sources decode"),
            Next::Idle => {
                assert!(tokio::time::Instant::now() < deadline, "idle for 20 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Next::End => return Ok((out, true)),
        }
    }
    Ok((out, false))
}

/// A file served with ranges plays whole, knows its length, and seeks with a range request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_http_plays_whole_and_seeks_with_a_range_request() {
    let server = Server::start(vec![
        ("sweep.wav".into(), wav_bytes(16000, &sweep(6)), "audio/wav"),
        ("tone.mp3".into(), fixture("tone440.mp3"), "audio/mpeg"),
    ])
    .await;
    let mut mp3 = Source::http(&server.url("f/tone.mp3"), mono(false))
        .await
        .unwrap();
    let d = mp3.duration().expect("an MP3 of known length");
    assert!((d.as_secs_f64() - 1.5).abs() < 0.1, "{d:?}");
    let (pcm, ended) = pull(&mut mp3, 1000).await.unwrap();
    assert!(ended);
    assert!((pcm.len() as f64 / 48000.0 - 1.5).abs() < 0.1);
    assert_frequency(&pcm[24000..48000], 48000, 440.0, "the MP3 over HTTP");

    let mut wav = Source::http(&server.url("f/sweep.wav"), mono(false))
        .await
        .unwrap();
    assert_eq!(wav.duration(), Some(Duration::from_secs(6)));
    let (start, _) = pull(&mut wav, 25).await.unwrap();
    assert_frequency(&start[..19200], 48000, 300.0, "the sweep's start");
    wav.seek(Duration::from_millis(4200)).unwrap();
    assert_eq!(wav.position(), Duration::from_millis(4200));
    let (after, ended) = pull(&mut wav, 1000).await.unwrap();
    assert!(ended);
    assert_frequency(&after[..19200], 48000, 340.0, "after the seek to 4.2 s");
    assert!(
        (after.len() as f64 / 48000.0 - 1.8).abs() < 0.05,
        "the rest of the file after the seek: {} s",
        after.len() as f64 / 48000.0
    );
    let ranges = server.requests("f/sweep.wav");
    assert!(
        ranges.iter().skip(1).any(|r| r.is_some()),
        "the seek asked for a range: {ranges:?}"
    );
}

/// A connection that dies halfway through the body is resumed, with a range request where
/// the server takes them and by skipping what was played where it does not: either way the
/// whole file comes out, every sample in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_resumed_and_nothing_is_lost() {
    let pcm = sweep(4);
    let server = Server::start(vec![(
        "sweep.wav".into(),
        wav_bytes(16000, &pcm),
        "audio/x-wav",
    )])
    .await;
    let quick = HttpOptions {
        first_backoff: Duration::from_millis(50),
        ..HttpOptions::default()
    };
    let mut whole = Source::http_with(&server.url("f/sweep.wav"), mono(false), quick.clone())
        .await
        .unwrap();
    let (want, _) = pull(&mut whole, 1000).await.unwrap();
    for mode in ["drop", "norange-drop"] {
        let mut src = Source::http_with(
            &server.url(&format!("{mode}/sweep.wav")),
            mono(false),
            quick.clone(),
        )
        .await
        .unwrap();
        let (got, ended) = pull(&mut src, 1000).await.unwrap();
        assert!(ended, "{mode}: the source ends");
        assert_eq!(got.len(), want.len(), "{mode}: every sample");
        assert!(
            got == want,
            "{mode}: the same samples as an unbroken download"
        );
        let asked = server.requests(&format!("{mode}/sweep.wav"));
        assert_eq!(asked.len(), 2, "{mode}: one reconnection: {asked:?}");
        if mode == "drop" {
            let r = asked[1].as_deref().expect("a range request");
            let from: usize = r["bytes=".len()..r.len() - 1].parse().unwrap();
            assert!(
                from > 44 + 60000,
                "{mode}: resumed from byte {from}, not from 0"
            );
        }
        // Without ranges the server sent the whole file again (it ignores the Range header),
        // and the reader skipped what it had: the samples above prove it.
    }
}

/// 404, a web page, a server that never answers and a refused connection are each a clear
/// error at once, naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_clear_errors() {
    let server = Server::start(vec![]).await;
    let quick = HttpOptions {
        connect_timeout: Duration::from_millis(500),
        ..HttpOptions::default()
    };
    let url = server.url("f/missing.mp3");
    let e = Source::http(&url, mono(false)).await.unwrap_err();
    assert!(matches!(e, Error::HttpStatus { status: 404, .. }), "{e}");
    assert!(
        e.to_string().contains("404") && e.to_string().contains(&url),
        "{e}"
    );

    let e = Source::http(&server.url("page.html"), mono(false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::HttpContentType { .. }), "{e}");
    assert!(e.to_string().contains("text/html"), "{e}");

    let e = Source::http_with(&server.url("slow"), mono(false), quick.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Http { reason, .. } if reason.contains("no answer")),
        "{e}"
    );

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = Source::http_with(
        &format!("http://127.0.0.1:{port}/x.mp3"),
        mono(false),
        quick,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Http { .. }), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
}

/// A file that disappears from the server while it plays (the reconnection gets a 404) ends
/// the source with an error that says so: what the call reports as its `SourceError`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_reconnecting_is_a_clear_source_error() {
    let server = Server::start(vec![(
        "sweep.wav".into(),
        wav_bytes(16000, &sweep(4)),
        "audio/wav",
    )])
    .await;
    let quick = HttpOptions {
        first_backoff: Duration::from_millis(50),
        ..HttpOptions::default()
    };
    let url = server.url("gone/sweep.wav");
    let mut src = Source::http_with(&url, mono(false), quick).await.unwrap();
    let e = loop {
        match pull(&mut src, 1000).await {
            Err(e) => break e,
            Ok((_, true)) => panic!("the source ended without an error"),
            Ok(_) => {}
        }
    };
    let text = e.to_string();
    assert!(text.contains("404") && text.contains(&url), "{text}");
    assert_eq!(
        server.requests("gone/sweep.wav").len(),
        2,
        "no retry after a 404"
    );
}

/// A live stream (no length, no end, Icecast style) plays for as long as it is pulled, and
/// refuses what needs an end: seeking and looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_plays_on_and_cannot_seek_or_loop() {
    let server = Server::start(vec![(
        "radio.aac".into(),
        fixture("tone880.aac"),
        "audio/aac",
    )])
    .await;
    let url = server.url("live/radio.aac");
    let mut src = Source::http(&url, mono(false)).await.unwrap();
    assert_eq!(src.duration(), None);
    // Four times the length of the file the stream loops.
    let (pcm, ended) = pull(&mut src, 200).await.unwrap();
    assert!(!ended, "a live stream does not end");
    assert_eq!(pcm.len(), 200 * 960);
    assert_frequency(&pcm[150_000..170_000], 48000, 880.0, "the live stream");
    let e = src.seek(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, Error::CannotSeek { .. }), "{e}");
    let e = Source::http(&url, mono(true)).await.unwrap_err();
    assert!(matches!(e, Error::CannotLoop { .. }), "{e}");
}

/// Through the call: an HTTP file whose connection drops halfway plays to a listener with
/// no gap (the retry happens while what was read ahead plays), in one piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_leaves_no_gap_in_the_call() {
    let tone: Vec<i16> = (0..3 * 16000)
        .map(|i| (12000.0 * (2.0 * std::f64::consts::PI * 500.0 * i as f64 / 16000.0).sin()) as i16)
        .collect();
    let server = Server::start(vec![(
        "tone.wav".into(),
        wav_bytes(16000, &tone),
        "audio/wav",
    )])
    .await;
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("mix.wav");
    let mut listener = s
        .join(
            2,
            CallConfig {
                record_mix: Some(mix.clone()),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut listener).await;
    let source = Source::http(&server.url("drop/tone.wav"), mono(false))
        .await
        .unwrap();
    let mut player = s.join(1, playing(source)).await;
    connected(&mut player).await;
    source_ended(&mut player).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    player.leave().await.unwrap();
    listener.leave().await.unwrap();
    assert_eq!(
        server.requests("drop/tone.wav").len(),
        2,
        "one reconnection"
    );

    let (got, _) = read_wav(&mix);
    let loud: Vec<usize> = got
        .chunks(960)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .map(|(i, _)| i)
        .collect();
    let (first, last) = (loud[0], *loud.last().unwrap());
    assert_eq!(
        loud.len(),
        last - first + 1,
        "no quiet 20 ms block between the start and the end"
    );
    // All 3 s, and at most the receive side's concealment (which fades out over up to
    // 200 ms once the sender stops) beyond.
    let heard = loud.len() as f64 * 0.02;
    assert!((2.96..3.26).contains(&heard), "{heard} s heard of 3 s");
    let mid = (first + last) / 2 * 960;
    assert_frequency(&got[mid - 9600..mid + 9600], 48000, 500.0, "the tone");
}
