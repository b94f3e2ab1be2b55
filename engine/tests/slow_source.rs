//! Nothing blocks a call's task: a source whose input stalls delays neither another call's
//! audio nor its own call's ICE.
//!
//! Everything runs on ONE tokio thread (a current-thread runtime): the local server, the
//! proxy and three bots in two group calls. Call A plays through the ffmpeg source (a stand-in
//! that `cat`s a named pipe) whose writer stops for 3 s; call B plays a tone to a listener.
//! Were any pull of A's source to wait for the pipe, the whole thread would wait with it: B's
//! listener would get no frame and A's keepalives would stop for the length of the stall.
//!
//! The stall is 3 s rather than 2 so that it holds at least one ICE keepalive (every 2.5 s).

#![cfg(unix)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groupcall_engine::audio::{AppSink, Channels, FrameKind, Source, SourceOptions};
use groupcall_engine::signaling::{CallRef, CreateCall};
use groupcall_engine::{CallConfig, CallEvent, ConnectionState, Engine, Error};
use support::e2e::*;
use support::proxy::{relay, ImpairConfig};
use support::sine;

const STALL: Duration = Duration::from_secs(3);

/// The longest pause between two decoded frames of B that counts as continuous audio.
const MAX_GAP: Duration = Duration::from_millis(60);

/// Writes whatever is named after `-i` to stdout, like `ffmpeg -i X -f s16le ... pipe:1`.
const FAKE_FFMPEG: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -i) shift; in="$1" ;;
  esac
  shift
done
exec cat "$in"
"#;

type Heard = Arc<Mutex<Vec<(Instant, u32, FrameKind)>>>;

/// An application sink that notes when each frame of each SSRC arrived.
fn listener() -> (AppSink, Heard) {
    let heard: Heard = Arc::default();
    let h = heard.clone();
    let sink = AppSink::callback(move |f| {
        if let Ok(mut h) = h.lock() {
            h.push((Instant::now(), f.ssrc, f.kind));
        }
    });
    (sink, heard)
}

fn listening(sink: AppSink) -> CallConfig {
    CallConfig {
        app_sink: Some(sink),
        ..CallConfig::default()
    }
}

fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Spawning right after writing the script can meet ETXTBSY: retry a few times.
fn ffmpeg_source(input: &Path, bin: &Path) -> Source {
    let options = SourceOptions {
        channels: Channels::Mono,
        looping: false,
    };
    for _ in 0..20 {
        match Source::ffmpeg(input.to_str().unwrap(), Some(bin), options) {
            Err(Error::FfmpegSpawn { source, .. }) if source.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
    panic!("the ffmpeg stand-in stays busy");
}

/// The decoded frames of `ssrc` heard between `from` and `to`, by arrival time.
fn decoded(heard: &Heard, ssrc: u32, from: Instant, to: Instant) -> Vec<Instant> {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, s, k)| *s == ssrc && *k == FrameKind::Decoded && *t >= from && *t <= to)
        .map(|(t, ..)| *t)
        .collect()
}

fn longest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_source_delays_neither_another_calls_audio_nor_its_own_ice() {
    let test_start = Instant::now();
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Call B, in a group call of its own: a looping tone and a listener.
    let call_b = CallRef::Id(
        s.signaling(20)
            .create_call(None, &CreateCall::default())
            .await
            .expect("second call created")
            .id,
    );
    let (b_sink, b_heard) = listener();
    let mut b_listener = Engine::new(s.signaling(21))
        .join(call_b.clone(), listening(b_sink))
        .await
        .unwrap();
    connected(&mut b_listener).await;
    let mut b = Engine::new(s.signaling(20))
        .join(call_b, playing(tone_source(dir.path(), 440.0, 1, true)))
        .await
        .unwrap();
    connected(&mut b).await;

    // Call A: the ffmpeg stand-in reads a named pipe that a thread writes, then stalls.
    let fifo: PathBuf = dir.path().join("input.s16");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    let bin = dir.path().join("fake-ffmpeg");
    std::fs::write(&bin, FAKE_FFMPEG).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (go, stall) = std::sync::mpsc::channel::<()>();
    let (stall_over, stall_over_rx) = tokio::sync::oneshot::channel::<Instant>();
    let writer = {
        let fifo = fifo.clone();
        let before = pcm_bytes(&sine(700.0, 10000.0, RATE, 0, RATE as usize));
        let after = pcm_bytes(&sine(700.0, 10000.0, RATE, 0, RATE as usize));
        std::thread::spawn(move || {
            // Opening waits for the stand-in (`cat`) to open the other end.
            let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            pipe.write_all(&before).unwrap();
            if stall.recv().is_err() {
                return;
            }
            std::thread::sleep(STALL);
            let _ = stall_over.send(Instant::now());
            pipe.write_all(&after).unwrap();
        })
    };
    let proxy = relay(s.server.media_addr(), ImpairConfig::default()).await;
    let mut a = Engine::new(s.signaling(10))
        .join(
            s.call.clone(),
            CallConfig {
                media_via: Some(proxy.local_addr()),
                ..playing(ffmpeg_source(&fifo, &bin))
            },
        )
        .await
        .unwrap();
    connected(&mut a).await;
    let b_ssrc = b.ssrc();

    // Let A play the second that came before the stall, then hold the pipe for STALL.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stun_before = (
        proxy.stats().stun_up.load(Ordering::Relaxed),
        proxy.stats().stun_down.load(Ordering::Relaxed),
    );
    let sent_before = a.stats().packets_sent;
    let stall_start = Instant::now();
    go.send(()).unwrap();
    let stall_end = tokio::time::timeout(STALL * 2, stall_over_rx)
        .await
        .expect("the stall ends")
        .unwrap();
    let stun_during = (
        proxy.stats().stun_up.load(Ordering::Relaxed) - stun_before.0,
        proxy.stats().stun_down.load(Ordering::Relaxed) - stun_before.1,
    );
    let a_stats = a.stats();
    let a_connected = a_stats.connected;
    until(&mut a, 10, "A's source ends after the stall", |e| {
        matches!(e, CallEvent::SourceEnded { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.join().unwrap();

    // B's listener heard B all along: a decoded frame at least every MAX_GAP.
    let b_frames = decoded(&b_heard, b_ssrc, stall_start, stall_end);
    let b_gap = longest_gap(&b_frames);
    println!(
        "during A's {STALL:?} stall: B's listener got {} decoded frames, longest gap {b_gap:?}; \
         STUN through A's proxy: {} to the server, {} back",
        b_frames.len(),
        stun_during.0,
        stun_during.1
    );
    assert!(
        b_gap <= MAX_GAP,
        "B's audio paused for {b_gap:?} while A's source was stalled"
    );
    let expected = (STALL.as_millis() / 20) as usize;
    assert!(
        b_frames.len() * 10 >= expected * 9,
        "B's listener got {} decoded frames in {STALL:?}, want about {expected}",
        b_frames.len()
    );

    // A's own transport went on: keepalives both ways, connected throughout.
    assert!(
        stun_during.0 >= 1 && stun_during.1 >= 1,
        "no STUN through A's proxy during the stall: {stun_during:?}"
    );
    assert!(a_connected, "A was not connected at the end of the stall");
    while let Some(e) = a.try_next_event() {
        assert!(
            !matches!(
                e,
                CallEvent::State(ConnectionState::Disconnected | ConnectionState::Rejoining { .. })
            ),
            "A's connection suffered: {e:?}"
        );
    }

    // The stall was real for A (it sent nothing while its source had nothing), and A sent the
    // second that came after it.
    let sent_during = a_stats.packets_sent.saturating_sub(sent_before);
    let sent_after = a.stats().packets_sent.saturating_sub(a_stats.packets_sent);
    println!("A sent {sent_during} packets during the stall and {sent_after} after it");
    assert!(
        sent_during <= 10,
        "A sent {sent_during} packets while its source was stalled: the test did not stall it"
    );
    assert!(
        (45..=60).contains(&sent_after),
        "A sent {sent_after} packets of the second after the stall"
    );

    a.leave().await.unwrap();
    b.leave().await.unwrap();
    b_listener.leave().await.unwrap();
    assert!(
        test_start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        test_start.elapsed()
    );
}
