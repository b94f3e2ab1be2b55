//! End to end over real UDP on 127.0.0.1: bots of this engine join a call of the real local
//! server (ICE-lite, DTLS, SRTP, forwarding) through the local signaling backend, and what one
//! plays is what the other records.

mod support;

use std::path::Path;
use std::time::Duration;

use groupcall_engine::audio::{Channels, LoudnessConfig, Source, SourceOptions};
use groupcall_engine::signaling::PeerId;
use groupcall_engine::{Call, CallConfig, CallEvent, CallSummary, EndReason, Engine};
use support::e2e::*;
use support::*;

fn two_tone(secs_each: f64, f1: f64, f2: f64) -> Vec<i16> {
    let n = (secs_each * RATE as f64) as usize;
    let mut v = sine(f1, 12000.0, RATE, 0, n);
    v.extend(sine(f2, 12000.0, RATE, n, n));
    v
}

fn wav_source(path: &Path) -> Source {
    Source::wav(
        path,
        SourceOptions {
            channels: Channels::Mono,
            looping: false,
        },
    )
    .unwrap()
}

fn recording_of(summary: &CallSummary, ssrc: u32) -> Vec<i16> {
    let path = summary
        .recordings
        .iter()
        .find(|(s, _)| *s == ssrc)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("no recording of SSRC {ssrc}: {:?}", summary.recordings));
    let (samples, channels) = read_wav(&path);
    assert_eq!(channels, 1);
    samples
}

/// `samples` in a WAV file in a new temporary directory (kept alive by the caller), as a
/// source: what most tests here play.
fn wav_of(samples: &[i16]) -> (tempfile::TempDir, Source) {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    write_wav(&wav, RATE, 1, samples);
    let source = wav_source(&wav);
    (dir, source)
}

/// Trims leading and trailing near-silence (the jitter buffer's start-up, the tail).
fn trim(v: &[i16]) -> &[i16] {
    let block = (RATE / 200) as usize;
    let first = v.chunks(block).position(|b| rms(b) > 0.02).unwrap_or(0) * block;
    let last = v
        .chunks(block)
        .rposition(|b| rms(b) > 0.02)
        .map_or(v.len(), |i| ((i + 1) * block).min(v.len()));
    &v[first..last.max(first)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_plays_b_records_per_participant_and_in_the_mix() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    let sent = two_tone(2.5, 440.0, 1000.0);
    write_wav(&wav, RATE, 1, &sent);

    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let mut b = s
        .join(
            2002,
            CallConfig {
                record_dir: Some(rec.clone()),
                record_mix: Some(dir.path().join("mix.wav")),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut b).await;
    let mut a = s
        .join(
            1001,
            CallConfig {
                source: Some(wav_source(&wav)),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut a).await;
    let a_ssrc = a.ssrc();
    assert_ne!(a_ssrc, 0);

    source_ended(&mut a).await;
    // Nothing more than one end per source.
    tokio::time::sleep(Duration::from_millis(600)).await;
    while let Some(e) = a.try_next_event() {
        assert!(
            !matches!(e, CallEvent::SourceEnded { .. }),
            "a second SourceEnded"
        );
    }

    // B's events name A, with A's SSRC, and report A speaking.
    let mut joined = None;
    let mut spoke = false;
    while let Some(e) = b.try_next_event() {
        match e {
            CallEvent::ParticipantJoined(p) if p.source == a_ssrc => joined = Some(p.peer),
            CallEvent::Speaking {
                ssrc, peer, level, ..
            } if ssrc == a_ssrc && level > 0.1 => {
                assert_eq!(peer, Some(PeerId::User(1001)), "speaking event names A");
                spoke = true;
            }
            _ => {}
        }
    }
    assert_eq!(joined, Some(PeerId::User(1001)), "B was told A joined");
    assert!(spoke, "B saw A speaking");

    let stats = b.stats();
    assert!(stats.packets_received >= 200, "{stats:?}");
    // A sent an RTCP sender report (every 5 s) that the server received.
    let call_id = s.call_id();
    let at_server = s.server.participant_stats(call_id, a_ssrc).await.unwrap();
    assert!(at_server.rtcp_received >= 1, "{at_server:?}");
    let summary = b.leave().await.expect("B leaves");
    a.leave().await.expect("A leaves");
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    let got = recording_of(&summary, a_ssrc);
    let name = summary
        .recordings
        .iter()
        .find(|(s, _)| *s == a_ssrc)
        .unwrap()
        .1
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("peer1001_"), "file named after A: {name}");
    let got = trim(&got);
    assert!(
        got.len() as f64 > 4.8 * RATE as f64,
        "received {:.2} s of 5 s",
        got.len() as f64 / RATE as f64
    );
    // Each second: 440 Hz for the first two, 1 kHz for the last two (the middle one mixes).
    let sec = RATE as usize;
    for (i, want) in [(0, 440.0), (1, 440.0), (3, 1000.0)] {
        assert_frequency(
            &got[i * sec..(i + 1) * sec],
            RATE,
            want,
            &format!("second {i}"),
        );
    }
    let tail = &got[got.len() - sec..];
    assert_frequency(tail, RATE, 1000.0, "last second");
    // Aligned on the change of tone at 2.5 s (over lags up to 0.5 s), then compared whole.
    let (corr, lag) = best_correlation(
        &sent[..4 * sec],
        got,
        sec / 2,
        5 * sec / 2 - sec / 20,
        sec / 10,
    );
    println!("per-participant recording: correlation {corr:.3} at a lag of {lag} samples");
    assert!(corr >= 0.9, "cross-correlation {corr:.3} (lag {lag})");

    let (mix, _) = read_wav(summary.mix.as_ref().expect("mix recorded"));
    let mix = trim(&mix);
    assert_frequency(&mix[..sec], RATE, 440.0, "mix, first second");
    assert_frequency(&mix[mix.len() - sec..], RATE, 1000.0, "mix, last second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_at_once_each_file_has_its_own_tone_and_the_mix_has_both() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    write_wav(
        &wa,
        RATE,
        1,
        &sine(500.0, 10000.0, RATE, 0, 3 * RATE as usize),
    );
    write_wav(
        &wb,
        RATE,
        1,
        &sine(1300.0, 10000.0, RATE, 0, 3 * RATE as usize),
    );
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let mut l = s
        .join(
            3,
            CallConfig {
                record_dir: Some(rec),
                record_mix: Some(dir.path().join("mix.wav")),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut l).await;
    let mut a = s.join(1, playing(wav_source(&wa))).await;
    let mut b = s.join(2, playing(wav_source(&wb))).await;
    connected(&mut a).await;
    connected(&mut b).await;
    let (sa, sb) = (a.ssrc(), b.ssrc());
    for c in [&mut a, &mut b] {
        source_ended(c).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let summary = l.leave().await.unwrap();
    let ra = recording_of(&summary, sa);
    let rb = recording_of(&summary, sb);
    let (ra, rb) = (trim(&ra), trim(&rb));
    let sec = RATE as usize;
    assert_frequency(&ra[sec / 2..sec / 2 + sec], RATE, 500.0, "A's file");
    assert_frequency(&rb[sec / 2..sec / 2 + sec], RATE, 1300.0, "B's file");
    let (mix, _) = read_wav(summary.mix.as_ref().unwrap());
    let mix = trim(&mix);
    let middle = &mix[mix.len() / 2 - sec / 2..mix.len() / 2 + sec / 2];
    // Both tones in the mix: each carries a large share of the energy at its frequency.
    let e500 = tone_energy(middle, 500.0);
    let e1300 = tone_energy(middle, 1300.0);
    let e900 = tone_energy(middle, 900.0);
    assert!(
        e500 > 20.0 * e900 && e1300 > 20.0 * e900,
        "500: {e500:.0}, 1300: {e1300:.0}, 900 (neither): {e900:.0}"
    );
}

/// Energy at one frequency (Goertzel).
fn tone_energy(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / RATE as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / x.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_stops_all_rtp_and_unmute_resumes_it() {
    let s = Setup::start().await;
    let (_dir, tone) = wav_of(&sine(700.0, 10000.0, RATE, 0, 10 * RATE as usize));
    let mut l = s.join(2, CallConfig::default()).await;
    connected(&mut l).await;
    let mut a = s.join(1, playing(tone)).await;
    connected(&mut a).await;
    let call_id = s.call_id();
    let ssrc = a.ssrc();
    let received = || async {
        s.server
            .participant_stats(call_id, ssrc)
            .await
            .unwrap()
            .rtp_received
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = received().await;
    assert!(before > 10, "A sends while unmuted: {before}");

    a.mute().await.expect("mute");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_mute = received().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(received().await, at_mute, "no RTP at all while muted");
    // The server shows A muted.
    let (muted, _) = wait_for(&mut l, 5, "A shown muted", |e| match e {
        CallEvent::ParticipantUpdated(p) if p.source == ssrc && p.muted => Some(true),
        _ => None,
    })
    .await;
    assert!(muted);

    a.unmute().await.expect("unmute");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = received().await;
    assert!(
        after > at_mute + 10,
        "RTP resumes after unmute: {at_mute} -> {after}"
    );
    a.leave().await.unwrap();
    l.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_source_does_not_fire_source_ended_but_its_end_does_once() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long.wav");
    let short = dir.path().join("short.wav");
    write_wav(
        &long,
        RATE,
        1,
        &sine(300.0, 8000.0, RATE, 0, 10 * RATE as usize),
    );
    write_wav(
        &short,
        RATE,
        1,
        &sine(600.0, 8000.0, RATE, 0, RATE as usize / 2),
    );
    let mut a = s.join(1, playing(wav_source(&long))).await;
    connected(&mut a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.set_source(Some(wav_source(&short))).unwrap();
    let (name, before) = wait_for(&mut a, 5, "the short source ends", |e| match e {
        CallEvent::SourceEnded { source } => Some(source.clone()),
        _ => None,
    })
    .await;
    assert!(name.contains("short"), "ended: {name}");
    assert!(!before
        .iter()
        .any(|e| matches!(e, CallEvent::SourceEnded { .. })));
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(e) = a.try_next_event() {
        assert!(!matches!(e, CallEvent::SourceEnded { .. }), "fired twice");
    }
    a.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_be_written_is_an_error_event_not_silence() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    write_wav(
        &wav,
        RATE,
        1,
        &sine(700.0, 10000.0, RATE, 0, 3 * RATE as usize),
    );
    // The join creates the directory; removing it under the running call stands for one that
    // cannot be written (tests run as root, which ignores permission bits).
    let missing = dir.path().join("no-such-dir");
    let mut l = s
        .join(
            2,
            CallConfig {
                record_dir: Some(missing.clone()),
                hold_unknown: Duration::from_millis(100),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut l).await;
    assert!(missing.is_dir(), "the join creates the recording directory");
    std::fs::remove_dir(&missing).unwrap();
    let mut a = s.join(1, playing(wav_source(&wav))).await;
    connected(&mut a).await;
    let (error, _) = wait_for(&mut l, 5, "a recording error", |e| match e {
        CallEvent::RecordingError { error } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(
        matches!(&*error, groupcall_engine::Error::CreateSink { path, .. } if path.starts_with(&missing)),
        "a typed error naming the path: {error:?}"
    );
    assert!(error.to_string().contains("no-such-dir"), "{error}");
    // Reported once, and every frame that could not be written is counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed = l.stats().recording_errors;
    assert!(failed >= 5, "{failed} frames counted as not recorded");
    while let Some(e) = l.try_next_event() {
        assert!(
            !matches!(e, CallEvent::RecordingError { .. }),
            "reported twice: {e:?}"
        );
    }
    // A mix file that cannot be created refuses the join itself, before anything is sent.
    let e = Engine::new(s.signaling(3))
        .join(
            s.call.clone(),
            CallConfig {
                record_mix: Some(missing.join("mix.wav")),
                ..CallConfig::default()
            },
        )
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("mix.wav"), "{e}");
    // So does a recording directory that cannot be created (under a file).
    let e = Engine::new(s.signaling(3))
        .join(
            s.call.clone(),
            CallConfig {
                record_dir: Some(wav.join("rec")),
                ..CallConfig::default()
            },
        )
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&e, groupcall_engine::Error::CreateSink { path, .. } if path == &wav.join("rec")),
        "{e:?}"
    );
    a.leave().await.unwrap();
    l.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_call_ends_with_its_reason() {
    let s = Setup::start().await;
    let mut l = s.join(2, CallConfig::default()).await;
    connected(&mut l).await;
    s.signaling(1).discard(&s.call).await.unwrap();
    let (reason, _) = wait_for(&mut l, 5, "ended", |e| match e {
        CallEvent::Ended { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, EndReason::Discarded);
    // A call that ended on its own still hands over its summary.
    let summary = l.leave().await.expect("the summary of a discarded call");
    assert_eq!(summary.reason, Some(EndReason::Discarded));
}

/// A panic inside one call's task (injected through a test-only hook) ends that call with an
/// Internal reason; its recordings are finalized all the same (valid WAV headers, the tone
/// inside) and listed in its summary; the other call of the process goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_call_task_still_finalizes_its_recordings() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (rec, mix) = (dir.path().join("rec"), dir.path().join("mix.wav"));
    std::fs::create_dir_all(&rec).unwrap();
    let mut l = s
        .join(
            2,
            CallConfig {
                record_dir: Some(rec.clone()),
                record_mix: Some(mix.clone()),
                hold_unknown: Duration::from_millis(100),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut l).await;
    let mut bystander = s.join(3, CallConfig::default()).await;
    connected(&mut bystander).await;
    let mut a = s
        .join(1, playing(tone_source(dir.path(), 600.0, 10, true)))
        .await;
    connected(&mut a).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    l.inject_panic().unwrap();
    let reason = until(&mut l, 5, "the panicked call ends", |e| match e {
        CallEvent::Ended { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(matches!(reason, EndReason::Internal(_)), "{reason:?}");
    let summary = l.leave().await.expect("a summary after a panic");
    assert_eq!(summary.mix.as_deref(), Some(mix.as_path()));
    assert_eq!(summary.recordings.len(), 1, "{summary:?}");
    for path in summary.recordings.iter().map(|(_, p)| p).chain([&mix]) {
        // The writer finalizes as the task unwinds; give its thread a moment.
        let mut samples = Vec::new();
        for _ in 0..50 {
            if let Ok(r) = hound::WavReader::open(path) {
                samples = r.into_samples::<i16>().map(|s| s.unwrap()).collect();
                if !samples.is_empty() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            samples.len() > RATE as usize / 2,
            "{}: {} samples in a finalized header",
            path.display(),
            samples.len()
        );
        let f = dominant_frequency(&samples[samples.len() / 2..], RATE);
        assert!((f - 600.0).abs() < 15.0, "{}: {f} Hz", path.display());
    }
    // The rest of the process never noticed.
    assert!(a.stats().connected && bystander.stats().connected);
    a.leave().await.unwrap();
    bystander.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_gets_each_speakers_frames_with_ssrc_and_peer() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    write_wav(
        &wav,
        RATE,
        1,
        &sine(750.0, 10000.0, RATE, 0, 2 * RATE as usize),
    );
    let (sink, frames) = groupcall_engine::audio::AppSink::channel(500);
    let mut l = s
        .join(
            2,
            CallConfig {
                app_sink: Some(sink),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut l).await;
    let mut a = s.join(1001, playing(wav_source(&wav))).await;
    connected(&mut a).await;
    let ssrc = a.ssrc();
    source_ended(&mut a).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    l.leave().await.unwrap();
    a.leave().await.unwrap();
    let got: Vec<_> = frames.try_iter().collect();
    assert!(got.len() >= 90, "{} frames for 2 s", got.len());
    assert!(got.iter().all(|f| f.ssrc == ssrc && f.pcm.len() == 960));
    // Frames that came before the roster named A were held, then released with the peer: all
    // of them carry it.
    assert!(
        got.iter().all(|f| f.peer == Some(1001)),
        "frames without A's peer"
    );
    let pcm: Vec<i16> = got.iter().flat_map(|f| f.pcm.iter().copied()).collect();
    let mid = pcm.len() / 2;
    assert_frequency(
        &pcm[mid - RATE as usize / 2..mid + RATE as usize / 2],
        RATE,
        750.0,
        "app frames",
    );
}

/// A listener that never sends RTP still reports reception from the audio SSRC its join
/// payload declared, so the server takes its receiver reports instead of dropping them as
/// coming from a source nobody declared (before: SSRC 1, libwebrtc's receive-only default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listeners_receiver_reports_come_from_its_declared_ssrc() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut listener = s.join(2, CallConfig::default()).await;
    connected(&mut listener).await;
    let mut speaker = s
        .join(
            1,
            CallConfig {
                source: Some(tone_source(dir.path(), 500.0, 3, false)),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut speaker).await;
    source_ended(&mut speaker).await;
    let totals = s
        .server
        .media_totals()
        .await
        .expect("the media plane answers");
    let heard = s
        .server
        .participant_stats(s.call_id(), listener.ssrc())
        .await
        .expect("the listener is known");
    speaker.leave().await.unwrap();
    listener.leave().await.unwrap();
    assert!(
        heard.rtcp_received >= 2,
        "the listener's receiver reports reached the server: {heard:?}"
    );
    assert_eq!(totals.rtcp_foreign_ssrc, 0, "{totals:?}");
}

/// An MP3 (44.1 kHz stereo, decoded in-process, no ffmpeg) played into the call is heard by a
/// listener at its pitch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp3_plays_through_the_call_without_ffmpeg() {
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
    let mp3 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tone440.mp3");
    let source = Source::decoded(
        &mp3,
        SourceOptions {
            channels: Channels::Mono,
            looping: false,
        },
    )
    .unwrap();
    let mut player = s
        .join(
            1,
            CallConfig {
                source: Some(source),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut player).await;
    source_ended(&mut player).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    player.leave().await.unwrap();
    listener.leave().await.unwrap();
    let (got, _) = read_wav(&mix);
    let loud: Vec<usize> = got
        .chunks(960)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .map(|(i, _)| i)
        .collect();
    assert!(loud.len() >= 65, "about 1.5 s heard: {} blocks", loud.len());
    let mid = loud[loud.len() / 2] * 960;
    assert_frequency(
        &got[mid - 9600..mid + 9600],
        48000,
        440.0,
        "the MP3 through the call",
    );
}

/// The seek: a 60 s stepped sweep (second k at 300 + 10 k Hz) plays; after a second
/// the application seeks to 30 s. The listener then hears the step that belongs at 30 s
/// (600 Hz), and the position the call reports follows the wall clock from 30 s on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeking_to_30_s_plays_what_is_at_30_s_and_the_position_follows() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sweep: Vec<i16> = (0..60usize)
        .flat_map(|k| sine(300.0 + 10.0 * k as f64, 12000.0, 48000, k * 48000, 48000))
        .collect();
    let wav = dir.path().join("sweep.wav");
    write_wav(&wav, 48000, 1, &sweep);
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
    let mut player = s.join(1, playing(wav_source(&wav))).await;
    connected(&mut player).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    player
        .seek(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let position = player.position().expect("a source plays");
    let expected = std::time::Duration::from_secs(30) + asked.elapsed();
    let off = position.as_secs_f64() - expected.as_secs_f64();
    // The bound: within 100 ms of the truth (the position is a tick old at most).
    assert!(
        off.abs() <= 0.1,
        "position {position:?}, expected {expected:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    player.leave().await.unwrap();
    listener.leave().await.unwrap();
    let (got, _) = read_wav(&mix);
    // The last 600 ms heard: after the seek, within second 30 of the sweep.
    let end = got
        .chunks(960)
        .rposition(|b| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .expect("sound")
        * 960;
    assert_frequency(
        &got[end - 24_000..end - 4800],
        48000,
        600.0,
        "after the seek",
    );
    // Before the seek: the sweep's first second (300 Hz).
    let start = got
        .chunks(960)
        .position(|b| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .expect("sound")
        * 960;
    assert_frequency(
        &got[start + 9600..start + 33_600],
        48000,
        300.0,
        "before the seek",
    );
}

/// Three tracks queued one after the other: each finishes with its own `SourceEnded`, in
/// order, and the listener hears them back to back, with no silent block between them. (A
/// one-tick hole at the sender would be concealed by the listener, so this cannot prove the
/// hand-over is gapless; `Outgoing::tick` pulls the next track within the same tick.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_three_tracks_plays_back_to_back_with_one_end_each() {
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
    let track = |hz: f64| {
        let path = dir.path().join(format!("track{hz}.wav"));
        // 0.6 s: a whole number of 20 ms frames, so no track ends on padding.
        write_wav(&path, 48000, 1, &sine(hz, 12000.0, 48000, 0, 28_800));
        (path.display().to_string(), wav_source(&path))
    };
    let (first, a) = track(400.0);
    let (second, b) = track(600.0);
    let (third, c) = track(800.0);
    let mut player = s.join(1, playing(a)).await;
    player.enqueue(b).await.unwrap();
    player.enqueue(c).await.unwrap();
    // Statistics are refreshed every 100 ms; the first track lasts 600.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(player.stats().queued, 2);
    let mut ended = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while ended.len() < 3 {
            match player.next_event().await {
                Some(CallEvent::SourceEnded { source }) => ended.push(source),
                Some(CallEvent::SourceError { error, .. }) => panic!("{error}"),
                Some(_) => {}
                None => panic!("the call ended"),
            }
        }
    })
    .await
    .expect("three tracks played");
    assert_eq!(ended, vec![first, second, third]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        player.stats().source_position.is_none(),
        "nothing plays after the queue"
    );
    player.leave().await.unwrap();
    listener.leave().await.unwrap();
    let (got, _) = read_wav(&mix);
    let blocks: Vec<bool> = got
        .chunks(960)
        .map(|b| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .collect();
    let start = blocks.iter().position(|&l| l).unwrap();
    let end = blocks.iter().rposition(|&l| l).unwrap();
    // 1.8 s of tracks, then up to 200 ms of the receiver concealing the stream's abrupt end.
    assert!(
        (88..=101).contains(&(end + 1 - start)),
        "1.8 s heard in one piece: {} blocks",
        end + 1 - start
    );
    let heard = &got[start * 960..(start + 88) * 960];
    let gap = longest_gap_ms(heard, 48000, 0.01);
    assert!(gap < 20.0, "a {gap} ms gap between tracks");
    for (i, hz) in [400.0, 600.0, 800.0].into_iter().enumerate() {
        let mid = i * 28_800 + 14_400;
        assert_frequency(&heard[mid - 9600..mid + 9600], 48000, hz, "track in order");
    }
}

/// Skipping ends the playing track with its own `SourceEnded` (one per source, however it
/// stopped) and the next queued track plays at once; the listener hears the first track only
/// until the skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_ends_the_track_once_and_the_next_plays_at_once() {
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
    let long = dir.path().join("long.wav");
    write_wav(&long, 48000, 1, &sine(400.0, 12000.0, 48000, 0, 48000 * 20));
    let short = dir.path().join("short.wav");
    write_wav(&short, 48000, 1, &sine(700.0, 12000.0, 48000, 0, 48000));
    let mut player = s.join(1, playing(wav_source(&long))).await;
    player.enqueue(wav_source(&short)).await.unwrap();
    let mut ended = Vec::new();
    let mut skipped = false;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while ended.len() < 2 {
            let e =
                tokio::time::timeout(std::time::Duration::from_millis(100), player.next_event());
            match e.await {
                Ok(Some(CallEvent::SourceEnded { source })) => ended.push(source),
                Ok(Some(CallEvent::SourceError { error, .. })) => panic!("{error}"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the call ended"),
                Err(_) => {}
            }
            // Skip once a second of the long track has been sent.
            let at = player.position().unwrap_or_default();
            if !skipped && at >= std::time::Duration::from_secs(1) {
                player.skip().unwrap();
                skipped = true;
            }
        }
    })
    .await
    .expect("both tracks ended");
    let name = |p: &std::path::Path| p.display().to_string();
    assert_eq!(ended, vec![name(&long), name(&short)]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    player.leave().await.unwrap();
    listener.leave().await.unwrap();
    let (got, _) = read_wav(&mix);
    let blocks: Vec<bool> = got
        .chunks(960)
        .map(|b| b.iter().any(|&x| x.unsigned_abs() > 2000))
        .collect();
    let start = blocks.iter().position(|&l| l).unwrap();
    let end = blocks.iter().rposition(|&l| l).unwrap();
    let heard = (end + 1 - start) as f64 * 0.02;
    // About a second of the long track, then the short one's second (and the receiver's
    // concealment after it): far from the long track's 20 s.
    assert!((1.9..2.8).contains(&heard), "{heard} s heard");
    let at = |s: f64| (start as f64 * 960.0 + s * 48000.0) as usize;
    assert_frequency(&got[at(0.3)..at(0.7)], 48000, 400.0, "before the skip");
    let tail = end * 960 - 24000;
    assert_frequency(&got[tail - 9600..tail], 48000, 700.0, "after the skip");
}

/// Loudness normalisation through the call: a quiet track and a loud one (20 dB apart)
/// queued back to back reach the listener within 2 dB of each other once each has settled,
/// where without it they arrive as far apart as they went in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalised_tracks_reach_the_listener_at_one_level() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let quiet = dir.path().join("quiet.wav");
    write_wav(&quiet, 48000, 1, &sine(440.0, 2000.0, 48000, 0, 48000 * 3));
    let loud = dir.path().join("loud.wav");
    write_wav(&loud, 48000, 1, &sine(660.0, 20000.0, 48000, 0, 48000 * 3));
    let mut levels = Vec::new();
    for loudness in [None, Some(LoudnessConfig::default())] {
        let mix = dir.path().join(format!("mix{}.wav", loudness.is_some()));
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
        let mut player = s
            .join(
                1,
                CallConfig {
                    loudness,
                    ..playing(wav_source(&quiet))
                },
            )
            .await;
        player.enqueue(wav_source(&loud)).await.unwrap();
        source_ended(&mut player).await;
        source_ended(&mut player).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        player.leave().await.unwrap();
        listener.leave().await.unwrap();
        let (got, _) = read_wav(&mix);
        let start = got.iter().position(|x| x.unsigned_abs() > 300).unwrap();
        // The last second of each 3 s track.
        let rms = |from: f64| {
            let a = start + (from * 48000.0) as usize;
            let b = &got[a..a + 48000];
            (b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / b.len() as f64).sqrt()
        };
        let db = 20.0 * (rms(4.8) / rms(1.8)).log10();
        levels.push(db);
    }
    assert!(
        levels[0] > 17.0,
        "without normalising: {:.1} dB apart",
        levels[0]
    );
    assert!(
        levels[1].abs() < 2.0,
        "normalised: {:.1} dB apart",
        levels[1]
    );
}

/// `ssrc`'s recording in `summary` holds a 2 s tone whole: audible (10 ms blocks over
/// -30 dBFS) for at least 1.9 s, and at `freq`.
fn assert_whole_tone(summary: &CallSummary, ssrc: u32, freq: f64, what: &str) {
    let file = summary
        .recordings
        .iter()
        .find(|(s, _)| *s == ssrc)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("{what}: the speaker was not recorded"));
    let (samples, _) = read_wav(&file);
    let block = RATE as usize / 100;
    let audible = samples
        .chunks_exact(block)
        .filter(|b| rms(b) > 0.03)
        .count();
    assert!(
        audible >= 190,
        "{what}: the 2 s tone is audible in {audible} of 200 blocks"
    );
    let start = samples.iter().position(|s| s.abs() > 2000).unwrap() + RATE as usize / 10;
    assert_frequency(&samples[start..start + RATE as usize], RATE, freq, what);
}

/// A connected participant that records every speaker into `dir/rec`.
async fn recording_listener(s: &Setup, user: i64, dir: &Path, config: CallConfig) -> Call {
    let rec = dir.join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let mut call = s
        .join(
            user,
            CallConfig {
                record_dir: Some(rec),
                ..config
            },
        )
        .await;
    connected(&mut call).await;
    call
}

/// `call` plays a tone of `secs` seconds at `freq` and is unmuted.
async fn play_tone(call: &mut Call, dir: &Path, freq: f64, secs: usize) {
    call.set_source(Some(tone_source(dir, freq, secs, false)))
        .unwrap();
    call.unmute().await.unwrap();
}

/// Waits for `speaker`'s tone to end and reach `listener`, which then leaves: its recording
/// of the speaker must hold the tone whole ([`assert_whole_tone`]).
async fn heard_whole(listener: Call, speaker: &mut Call, freq: f64, what: &str) {
    source_ended(speaker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ssrc = speaker.ssrc();
    let summary = listener.leave().await.unwrap();
    assert_whole_tone(&summary, ssrc, freq, what);
}

/// A call with nothing to send and nobody to hear (a bot idle in a silent call) does not run
/// its 20 ms clock: it wakes a few times a second, not fifty. When someone speaks, the clock
/// starts again at once and what it says is recorded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_call_sleeps_and_wakes_when_someone_speaks() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let idle = recording_listener(&s, 2002, dir.path(), CallConfig::default()).await;
    let mut other = s.join(1001, CallConfig::default()).await;
    connected(&mut other).await;

    let before = idle.stats().wakeups;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Fresh statistics: a command publishes them at once on an idle call.
    idle.pause().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let woke = idle.stats().wakeups - before;
    eprintln!("an idle call woke {woke} times in 3 s");
    // Ticking, it wakes 150 times in 3 s for the clock alone.
    assert!(woke < 40, "an idle call woke {woke} times in 3 s");

    play_tone(&mut other, dir.path(), 700.0, 2).await;
    heard_whole(idle, &mut other, 700.0, "the idle call's recording").await;
    other.leave().await.unwrap();
}

/// A bot that only sends 60 ms packets ticks once per packet, not three times (a third of the
/// wake-ups), its ticks also serve the ICE agent's timer, and what it sends is heard whole: the
/// 2 s tone is in the listener's recording from end to end, at its frequency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_of_60_ms_packets_ticks_once_per_packet_and_is_heard_whole() {
    use groupcall_engine::audio::EncoderConfig;
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = recording_listener(&s, 2, dir.path(), CallConfig::default()).await;
    let mut bot = s
        .join(
            1,
            CallConfig {
                encoder: EncoderConfig {
                    packet_ms: 60,
                    ..EncoderConfig::voice()
                },
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut bot).await;
    play_tone(&mut bot, dir.path(), 700.0, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (wakeups, sent) = (bot.stats().wakeups, bot.stats().packets_sent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = bot.stats();
    let (woke, packets) = (stats.wakeups - wakeups, stats.packets_sent - sent);
    eprintln!("a 60 ms sender woke {woke} times and sent {packets} packets in 1 s");
    // Statistics are published every 100 ms, so the window is 0.9 to 1.1 s: 15 to 19 packets.
    assert!((14..=20).contains(&packets), "{packets} packets in 1 s");
    // Ticking every 20 ms, the clock alone would wake it 50 times a second; the ICE agent's
    // 200 ms timer, served apart, five more. Its ticks serve that timer, so what is left
    // besides them is the odd datagram (a consent answer, a receiver report).
    assert!(
        woke <= packets + 4,
        "a 60 ms sender woke {woke} times in 1 s for {packets} ticks"
    );
    heard_whole(listener, &mut bot, 700.0, "the 60 ms sender's audio").await;
    bot.leave().await.unwrap();
}

/// A listener playing out on its 20 ms clock reads its socket at its ticks instead of waking
/// for every packet (engine/src/socket.rs): about one wake-up per tick where there were two
/// (the packet's and the tick's), and what it hears is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_reads_at_its_ticks_and_hears_whole() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = recording_listener(&s, 2, dir.path(), CallConfig::default()).await;
    let mut speaker = s.join(1, CallConfig::default()).await;
    connected(&mut speaker).await;
    play_tone(&mut speaker, dir.path(), 700.0, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = listener.stats();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = listener.stats();
    let woke = after.wakeups - before.wakeups;
    let packets: u64 = after.speakers.iter().map(|s| s.packets).sum::<u64>()
        - before.speakers.iter().map(|s| s.packets).sum::<u64>();
    eprintln!("a listener woke {woke} times for {packets} packets in 1 s");
    // Statistics are published every 100 ms: a window of 0.9 to 1.1 s, 45 to 55 packets
    // and as many ticks. Woken for each packet as well, it would be about 100.
    assert!((40..=60).contains(&packets), "{packets} packets in 1 s");
    assert!(
        woke <= packets + 10,
        "a listener woke {woke} times in 1 s for {packets} packets"
    );
    heard_whole(listener, &mut speaker, 700.0, "the listener's recording").await;
    speaker.leave().await.unwrap();
}

/// A listener whose only speaker went quiet and was forgotten stops its clock, and its socket
/// goes back to the reactor: it then sleeps, and a new speaker still wakes it at once and is
/// heard whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_read_at_its_ticks_sleeps_when_alone_and_wakes_for_the_next_speaker() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = CallConfig {
        speaker_timeout: Duration::from_millis(300),
        ..CallConfig::default()
    };
    let listener = recording_listener(&s, 3, dir.path(), config).await;
    let mut first = s.join(1, CallConfig::default()).await;
    connected(&mut first).await;
    play_tone(&mut first, dir.path(), 500.0, 1).await;
    source_ended(&mut first).await;
    // Forgotten after 300 ms of silence, checked every 100 ms.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let before = listener.stats();
    assert_eq!(before.speakers_tracked, 0, "the quiet speaker is forgotten");
    tokio::time::sleep(Duration::from_secs(2)).await;
    listener.pause().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let woke = listener.stats().wakeups - before.wakeups;
    // Still on its 20 ms clock it would wake about 100 times in 2 s.
    assert!(woke < 30, "a listener alone woke {woke} times in 2 s");

    let mut second = s.join(2, CallConfig::default()).await;
    connected(&mut second).await;
    play_tone(&mut second, dir.path(), 700.0, 2).await;
    let what = "the second speaker, after the listener slept";
    heard_whole(listener, &mut second, 700.0, what).await;
    first.leave().await.unwrap();
    second.leave().await.unwrap();
}

/// With `speaking_events` off a call sends no `Speaking` event, yet its statistics still hold
/// each speaker's level; the default call beside it, read as it goes, gets ten a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_events_can_be_turned_off_and_the_levels_stay_in_the_stats() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut quiet = s
        .join(
            3,
            CallConfig {
                speaking_events: false,
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut quiet).await;
    let mut told = s.join(2, CallConfig::default()).await;
    connected(&mut told).await;
    let mut speaker = s.join(1, CallConfig::default()).await;
    connected(&mut speaker).await;
    let ssrc = speaker.ssrc();
    // Each call's events read as they come, as an application does, for 1.5 s of the tone.
    let read = |mut call: Call| {
        tokio::spawn(async move {
            let end = tokio::time::Instant::now() + Duration::from_millis(1_500);
            let mut n = 0;
            while let Ok(Some(e)) = tokio::time::timeout_at(end, call.next_event()).await {
                if matches!(e, CallEvent::Speaking { ssrc: s, .. } if s == ssrc) {
                    n += 1;
                }
            }
            (call, n)
        })
    };
    play_tone(&mut speaker, dir.path(), 700.0, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (quiet, told) = (read(quiet), read(told));
    let (quiet, without) = quiet.await.unwrap();
    let (told, with) = told.await.unwrap();
    let level = quiet
        .stats()
        .speakers
        .iter()
        .find(|s| s.ssrc == ssrc)
        .map(|s| s.level);
    assert_eq!(without, 0, "Speaking events with them off");
    assert!(with >= 10, "{with} Speaking events in 1.5 s by default");
    assert!(
        level.is_some_and(|l| l > 0.05),
        "the level in the quiet call's stats: {level:?}"
    );
    source_ended(&mut speaker).await;
    quiet.leave().await.unwrap();
    told.leave().await.unwrap();
    speaker.leave().await.unwrap();
}

/// On the engine's own call threads a call does not share the application's runtime: the
/// 200 ms stall that makes packets late above leaves these on time, and the call goes on
/// sending while the application's only thread is held.
#[tokio::test(flavor = "current_thread")]
async fn on_call_threads_a_stalled_application_delays_no_packet() {
    let s = Setup::start().await;
    let refused = Engine::with_call_threads(s.signaling(1), 0).err();
    assert!(
        matches!(refused, Some(groupcall_engine::Error::InvalidConfig(_))),
        "{refused:?}"
    );
    let engine = Engine::with_call_threads(s.signaling(1), 1).unwrap();
    assert_eq!(engine.call_threads(), 1);
    let (_dir, tone) = wav_of(&sine(500.0, 8000.0, RATE, 0, 5 * RATE as usize));
    let mut a = engine.join(s.call.clone(), playing(tone)).await.unwrap();
    connected(&mut a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_before = a.stats().packets_sent;
    // The one thread of the application's runtime (and the server's) is held.
    std::thread::sleep(Duration::from_millis(200));
    let sent_during = a.stats().packets_sent - sent_before;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = a.stats();
    assert!(
        sent_during >= 5,
        "{sent_during} packets sent while the application was held"
    );
    assert_eq!(stats.late_packets, 0, "{stats:?}");
    assert!(
        stats.send_late_max < Duration::from_millis(20),
        "{:?}",
        stats.send_late_max
    );
    a.leave().await.unwrap();
}

/// Pacing is measured where it can fail: a runtime thread held for 200 ms (an overloaded
/// machine, a blocking call in someone's task) makes the next packets late, and the call says
/// so in `late_packets` and `send_late_max`.
#[tokio::test(flavor = "current_thread")]
async fn packets_sent_late_are_counted() {
    let s = Setup::start().await;
    let (_dir, tone) = wav_of(&sine(500.0, 8000.0, RATE, 0, 5 * RATE as usize));
    let mut a = s.join(1, playing(tone)).await;
    connected(&mut a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_before = a.stats().packets_sent;
    // The one thread of this runtime, the call's too, is held.
    std::thread::sleep(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = a.stats();
    assert!(stats.packets_sent > sent_before, "it went on sending");
    assert!(
        stats.late_packets >= 1,
        "a 200 ms stall made no late packet: {stats:?}"
    );
    assert!(
        stats.send_late_max >= Duration::from_millis(150),
        "the latest packet was only {:?} late",
        stats.send_late_max
    );
    a.leave().await.unwrap();
}

/// A recording started mid-call (`Call::record`) holds the call from then on: the second of
/// two tones, played after it started, is in the speaker's file and in the mix; the first,
/// played before, is not. Recording again what is recorded is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_started_mid_call_holds_what_follows() {
    let s = Setup::start().await;
    let (dir, tones) = wav_of(&two_tone(2.0, 440.0, 880.0));
    let mut l = s.join(2, CallConfig::default()).await;
    connected(&mut l).await;
    let mut a = s.join(1, playing(tones)).await;
    connected(&mut a).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let rec = dir.path().join("later");
    let mix = dir.path().join("later-mix.wav");
    l.record(Some(rec.clone()), Some(mix.clone()))
        .await
        .expect("record");
    let again = l.record(None, Some(dir.path().join("again.wav"))).await;
    assert!(
        matches!(again, Err(groupcall_engine::Error::InvalidConfig(_))),
        "{again:?}"
    );
    source_ended(&mut a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ssrc = a.ssrc();
    a.leave().await.unwrap();
    let summary = l.leave().await.unwrap();
    assert_eq!(summary.mix.as_deref(), Some(mix.as_path()));
    let file = recording_of(&summary, ssrc);
    let (mixed, _) = read_wav(&mix);
    for (name, got) in [("file", &file), ("mix", &mixed)] {
        let heard = trim(got);
        assert!(
            heard.len() > RATE as usize / 2,
            "{name}: only {} samples of tone",
            heard.len()
        );
        let (hi, lo) = (tone_energy(heard, 880.0), tone_energy(heard, 440.0));
        assert!(
            hi > 20.0 * lo,
            "{name}: the tone after the start (880 Hz, {hi:.3e}) against before it (440 Hz, {lo:.3e})"
        );
    }
}
