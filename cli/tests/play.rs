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
