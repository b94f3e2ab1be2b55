//! `groupcall join --play` with a list of compressed files, on a PATH without ffmpeg: each
//! format is decoded in-process and heard by a listener on the local server, in order, back to
//! back.

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use groupcall_engine::CallConfig;
use support::e2e::*;
use support::*;

/// The committed fixtures (`engine/tests/fixtures/README.md`): file, tone, seconds.
const TRACKS: [(&str, f64, f64); 6] = [
    ("tone440.mp3", 440.0, 1.5),
    ("tone550.flac", 550.0, 1.0),
    ("tone660.ogg", 660.0, 1.0),
    ("tone770.m4a", 770.0, 1.0),
    ("tone880.aac", 880.0, 1.0),
    ("tone330_alac.m4a", 330.0, 1.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_plays_through_the_local_server_with_no_ffmpeg_on_the_path() {
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

    // A PATH with nothing on it: were any of these files handed to ffmpeg, playing would fail.
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupcall"));
    cmd.env("PATH", &empty)
        .args(["join", "--quiet", "--local", &s.server.control_url()])
        .args(["--as", "1", &s.call_id().to_string()]);
    for (f, _, _) in TRACKS {
        cmd.arg("--play").arg(fixtures.join(f));
    }
    let out = tokio::time::timeout(Duration::from_secs(40), cmd.output())
        .await
        .expect("the player finishes its list within 40 s")
        .expect("groupcall runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the player failed:\n{stderr}");
    assert!(
        !stderr.contains("ffmpeg"),
        "nothing went to ffmpeg:\n{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    listener.leave().await.unwrap();

    let (got, _) = read_wav(&mix);
    let loud: Vec<usize> = got
        .chunks(960)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .map(|(i, _)| i)
        .collect();
    let (first, last) = (loud[0], *loud.last().unwrap());
    let total: f64 = TRACKS.iter().map(|t| t.2).sum();
    let heard = (last - first + 1) as f64 * 0.02;
    assert!(
        (heard - total).abs() < 0.3,
        "{heard:.2} s heard for {total} s of tracks"
    );
    // Back to back: the only quiet between the first track's start and the last one's end is
    // what lossy files carry themselves: an encoder's priming and padding (ADTS has no field to
    // declare them, so they cannot be trimmed), at most 40 ms at one place, and never a hole
    // the player made (the queue's own gap is tested with WAV files in the engine's tests).
    let quiet: Vec<usize> = (first..=last).filter(|i| !loud.contains(i)).collect();
    let longest = quiet
        .iter()
        .fold((0, 0, usize::MAX - 1), |(best, run, prev), &i| {
            let run = if i == prev + 1 { run + 1 } else { 1 };
            (best.max(run), run, i)
        })
        .0;
    assert!(
        longest <= 2 && quiet.len() <= 6,
        "quiet 20 ms blocks between the tracks: {quiet:?} (first {first})"
    );
    // Each track in its place, at its pitch: the middle 400 ms of where it should be.
    let mut at = first * 960;
    for (f, hz, secs) in TRACKS {
        let mid = at + (secs * 48000.0 / 2.0) as usize;
        assert_frequency(&got[mid - 9600..mid + 9600], 48000, hz, f);
        at += (secs * 48000.0) as usize;
    }
}

/// A tiny web site on loopback: `/audio.mp3` is the MP3 fixture, `/watch` a web page about it.
async fn site() -> std::net::SocketAddr {
    use axum::http::header;
    let mp3 = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/tone440.mp3"),
    )
    .unwrap();
    let app = axum::Router::new()
        .route(
            "/audio.mp3",
            axum::routing::get(move || {
                let mp3 = mp3.clone();
                async move { ([(header::CONTENT_TYPE, "audio/mpeg")], mp3) }
            }),
        )
        .route(
            "/watch",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html>a video page</html>",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `--play URL` streams over HTTP; a web page goes through `yt-dlp` (here a stand-in script
/// on the PATH that answers with the page's audio URL, as `yt-dlp -g` does); a 404 stops the
/// player with the status in its message, and a page with no yt-dlp installed says to
/// install it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_play_over_http_and_pages_through_yt_dlp() {
    let web = site().await;
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("yt-dlp");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > {}/asked\necho http://{web}/audio.mp3\n",
            dir.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let player = |url: String, path: &Path| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupcall"));
        cmd.env("PATH", path)
            .args(["join", "--quiet", "--local", &s.server.control_url()])
            .args(["--as", "1", &s.call_id().to_string(), "--play", &url]);
        async move {
            tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("the player finishes within 30 s")
                .expect("groupcall runs")
        }
    };

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
    for url in [
        format!("http://{web}/audio.mp3"),
        format!("http://{web}/watch"),
    ] {
        let out = player(url.clone(), &bin).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{url}:\n{stderr}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    listener.leave().await.unwrap();
    let asked = std::fs::read_to_string(dir.path().join("asked")).unwrap();
    assert!(
        asked.contains(&format!("http://{web}/watch")),
        "yt-dlp was asked: {asked}"
    );
    let (got, _) = read_wav(&mix);
    let loud: Vec<usize> = got
        .chunks(960)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .map(|(i, _)| i)
        .collect();
    assert!(
        loud.len() >= 140,
        "twice 1.5 s heard: {} blocks",
        loud.len()
    );
    for at in [loud[20], loud[loud.len() - 20]] {
        assert_frequency(
            &got[at * 960 - 9600..at * 960 + 9600],
            48000,
            440.0,
            "played URL",
        );
    }

    let out = player(format!("http://{web}/missing.mp3"), &bin).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("404") && stderr.contains("missing.mp3"),
        "{stderr}"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = player(format!("http://{web}/watch"), &empty).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("text/html") && stderr.contains("install"),
        "{stderr}"
    );
}
