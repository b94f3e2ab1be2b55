//! Microphones and speakers on a machine with no sound card: the test starts its own
//! PulseAudio server with null sinks (`spk`, `spk2`, `micsrc`), feeds a tone into `micsrc`
//! (its monitor is the "microphone") with `pacat`, and records what the call plays from the
//! speaker sink's monitor with `parecord`. Everything is paced in real time, as with a card.
//!
//! Needs `pulseaudio` and `pulseaudio-utils` (scripts/test.sh installs them).
#![cfg(feature = "devices")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use groupcall_engine::audio::device::{devices, MicrophoneConfig, SpeakerConfig};
use groupcall_engine::audio::ProcessingConfig;
use groupcall_engine::{CallConfig, CallEvent};
use support::e2e::*;
use support::*;

/// A PulseAudio server of the test's own, stopped when dropped.
struct Pulse {
    dir: tempfile::TempDir,
    server: Child,
}

impl Pulse {
    fn start() -> Pulse {
        let dir = tempfile::tempdir().unwrap();
        let server = Self::spawn(dir.path());
        Pulse { dir, server }
    }

    fn spawn(dir: &Path) -> Child {
        let socket = dir.join("native");
        let mut cmd = Command::new("pulseaudio");
        cmd.env("HOME", dir)
            .env("XDG_RUNTIME_DIR", dir)
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disable-shm=yes",
            ])
            .args(["--use-pid-file=no", "--system=no"])
            .arg("-L")
            .arg(format!(
                "module-native-protocol-unix auth-anonymous=1 socket={}",
                socket.display()
            ));
        for sink in ["spk", "spk2", "micsrc"] {
            cmd.arg("-L").arg(format!(
                "module-null-sink sink_name={sink} rate=48000 channels=1"
            ));
        }
        let server = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio runs (apt-get install pulseaudio pulseaudio-utils)");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "PulseAudio did not start");
        // cpal's PulseAudio client sends a cookie, and the server refuses a connection whose
        // cookie is not 256 bytes long, even with anonymous auth. A fresh machine has none
        // (~/.config/pulse/cookie is made by the first desktop client): bring one.
        let cookie = dir.join("cookie");
        std::fs::write(&cookie, [0u8; 256]).unwrap();
        // This test binary talks to this server only (cpal's PulseAudio host reads these).
        // SAFETY: set before any thread of this test reads the environment; one test here.
        unsafe {
            std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
            std::env::set_var("PULSE_COOKIE", &cookie);
        }
        server
    }

    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env(
            "PULSE_SERVER",
            format!("unix:{}", self.dir.path().join("native").display()),
        )
        .env("HOME", self.dir.path());
        c
    }

    /// Records `source` (raw s16le mono 48 kHz) into a file until stopped.
    fn record(&self, source: &str, name: &str) -> (Child, PathBuf) {
        let path = self.dir.path().join(name);
        let child = self
            .tool("parecord")
            .args([
                "-d",
                source,
                "--raw",
                "--rate=48000",
                "--channels=1",
                "--format=s16le",
            ])
            // Small fragments: by default it fetches in seconds-long ones, and the last one
            // is lost when it is stopped.
            .arg("--latency-msec=20")
            .arg(&path)
            .spawn()
            .expect("parecord runs");
        (child, path)
    }

    /// Plays raw s16le mono 48 kHz into `sink`, in real time.
    fn play(&self, sink: &str, pcm: &[i16]) -> Child {
        let path = self.dir.path().join(format!("{sink}-in.raw"));
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        self.tool("pacat")
            .args([
                "--playback",
                "-d",
                sink,
                "--raw",
                "--rate=48000",
                "--channels=1",
            ])
            .arg("--latency-msec=20")
            .arg("--format=s16le")
            .arg(&path)
            .spawn()
            .expect("pacat runs")
    }

    fn pactl(&self, args: &[&str]) -> String {
        let out = self.tool("pactl").args(args).output().expect("pactl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Stops a recorder politely (SIGTERM: it writes out what it holds), then reaps it.
fn stop(mut c: Child) {
    let _ = Command::new("kill").arg(c.id().to_string()).status();
    let _ = c.wait();
}

fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// 20 ms blocks with the tone in them.
fn loud_blocks(pcm: &[i16]) -> Vec<usize> {
    pcm.chunks(960)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x.unsigned_abs() > 1500))
        .map(|(i, _)| i)
        .collect()
}

/// The whole story on one PulseAudio server: devices are listed; a tone captured by one
/// engine's microphone comes out of another engine's speaker through the local server (at its
/// pitch, for at least 90 % of its length); the speaker device then vanishes mid-call (an
/// event; the call goes on) and switching to another speaker works; then the microphone vanishes
/// (its source ends with an error, the call goes on) and opening it again works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microphone_reaches_a_speaker_and_vanished_devices_are_replaced() {
    let pulse = Pulse::start();
    let listed = tokio::task::spawn_blocking(devices).await.unwrap().unwrap();
    for name in ["spk", "spk2", "micsrc.monitor"] {
        assert!(
            listed
                .iter()
                .any(|d| d.id == name && d.host == "PulseAudio"),
            "{name} listed: {listed:?}"
        );
    }

    let s = Setup::start().await;
    let mut listener = s
        .join(
            2,
            CallConfig {
                speaker: Some(SpeakerConfig {
                    device: Some("spk".into()),
                }),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut listener).await;
    let mut talker = s
        .join(
            1,
            CallConfig {
                microphone: Some(MicrophoneConfig {
                    device: Some("micsrc.monitor".into()),
                    // Nothing that changes a tone: this checks the path, not the processing.
                    processing: ProcessingConfig::off(),
                }),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut talker).await;

    // 3 s of 700 Hz into the "microphone"; both ends recorded at once.
    let tone = sine(700.0, 12000.0, 48000, 0, 48000 * 3);
    let (mic_rec, mic_path) = pulse.record("micsrc.monitor", "mic.raw");
    let (spk_rec, spk_path) = pulse.record("spk.monitor", "spk.raw");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut feeder = pulse.play("micsrc", &tone);
    tokio::task::spawn_blocking(move || feeder.wait())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop(mic_rec);
    stop(spk_rec);

    let (fed, heard) = (read_raw(&mic_path), read_raw(&spk_path));
    let (f, h) = (loud_blocks(&fed), loud_blocks(&heard));
    assert!(
        !f.is_empty() && !h.is_empty(),
        "fed {} blocks, heard {}",
        f.len(),
        h.len()
    );
    let mid = (h[0] + h.len() / 2) * 960;
    assert_frequency(&heard[mid - 9600..mid + 9600], 48000, 700.0, "the speaker");
    // Audible for at least 90 % of the 150 blocks fed.
    assert!(
        h.len() as f64 >= 0.9 * f.len() as f64,
        "heard {} of {} blocks",
        h.len(),
        f.len()
    );
    // Device to device: from the tone's start at the microphone to its start at the speaker.
    let latency_ms = (h[0] as f64 - f[0] as f64) * 20.0;
    eprintln!("device-to-device latency: {latency_ms:.0} ms (20 ms resolution)");
    assert!(latency_ms > 0.0 && latency_ms < 1000.0, "{latency_ms} ms");

    // The speaker goes away mid-call (its sink is suspended: it takes nothing more, as an
    // unplugged card would): an event, and the call goes on.
    pulse.pactl(&["suspend-sink", "spk", "1"]);
    let failed = until(
        &mut listener,
        10,
        "the vanished speaker reported",
        |e| match e {
            CallEvent::DeviceFailed { device, .. } => Some(device.clone()),
            _ => None,
        },
    )
    .await;
    eprintln!("reported: {failed}");
    assert!(
        talker.stats().connected && listener.stats().connected,
        "the call went on"
    );

    // Another speaker, and the call plays on there.
    listener
        .set_output_device(Some(SpeakerConfig {
            device: Some("spk2".into()),
        }))
        .await
        .unwrap();
    // A PulseAudio playback stream opened through cpal runs only about 2 s after it is made
    // (its first callback comes at once, the next ones 2 s later): wait that out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (rec2, path2) = pulse.record("spk2.monitor", "spk2.raw");
    let (mic2, mic_path2) = pulse.record("micsrc.monitor", "mic2.raw");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut feeder = pulse.play("micsrc", &tone[..48000 * 2]);
    tokio::task::spawn_blocking(move || feeder.wait())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(rec2);
    stop(mic2);
    let heard2 = read_raw(&path2);
    let h2 = loud_blocks(&heard2);
    let f2 = loud_blocks(&read_raw(&mic_path2));
    assert!(f2.len() >= 90, "fed {} blocks", f2.len());
    assert!(
        h2.len() >= 80,
        "the new speaker played {} blocks of 100",
        h2.len()
    );
    let mid = (h2[0] + h2.len() / 2) * 960;
    assert_frequency(
        &heard2[mid - 9600..mid + 9600],
        48000,
        700.0,
        "the new speaker",
    );

    // The microphone goes away (its sink is suspended, so its monitor gives nothing more):
    // its source ends with an error, the call goes on, and it can be opened again.
    pulse.pactl(&["suspend-sink", "micsrc", "1"]);
    let error = until(
        &mut talker,
        10,
        "the vanished microphone reported",
        |e| match e {
            CallEvent::SourceError { error, .. } => Some(error.to_string()),
            _ => None,
        },
    )
    .await;
    eprintln!("reported: {error}");
    assert!(talker.stats().connected, "the call went on");
    pulse.pactl(&["suspend-sink", "micsrc", "0"]);
    talker
        .set_input_device(Some(MicrophoneConfig {
            device: Some("micsrc.monitor".into()),
            processing: ProcessingConfig::off(),
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rec3, path3) = pulse.record("spk2.monitor", "spk3.raw");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut feeder = pulse.play("micsrc", &tone[..48000]);
    tokio::task::spawn_blocking(move || feeder.wait())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(rec3);
    let h3 = loud_blocks(&read_raw(&path3));
    assert!(
        h3.len() >= 40,
        "the reopened microphone was heard for {} blocks of 50",
        h3.len()
    );
    talker.leave().await.unwrap();
    listener.leave().await.unwrap();
}
