//! `groupcall soak`: many short calls and one long one against a local server in this process,
//! to show that nothing accumulates: cycles of join / play / switch source / mute / unmute /
//! leave, with a rejoin forced by the server every few cycles, while one long call plays and
//! listens throughout. It prints the resident memory and the open file descriptors as it goes
//! and exits non-zero on a panic, a failed cycle or a leaked descriptor.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use groupcall_engine::audio::{Channels, Source, SourceOptions};
use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::{Call, CallConfig, CallEvent, ConnectionState, EndReason, Engine};
use groupcall_sfu::{LocalServer, LocalServerConfig};

const STEP_LIMIT: Duration = Duration::from_secs(10);
/// User ids of the cycling participants start here (the long call's are 2 and 3).
const FIRST_USER: i64 = 100_000;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Join / play / switch / mute / leave cycles in all.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    cycles: u64,
    /// Cycles running at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    parallel: u32,
    /// Every this many cycles, the server drops the participant and it must rejoin.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rejoin_every: u64,
    /// The long call lasts at least this many seconds (it runs past the cycles if they finish
    /// sooner). 0: as long as the cycles.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    long_secs: u64,
    /// A line of figures every this many cycles.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    report_every: u64,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    failed: AtomicU64,
    panics: AtomicU64,
    rejoins: AtomicU64,
}

/// Resident memory of this process in KiB (Linux `/proc`), 0 where it cannot be read.
fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The anonymous part of the resident memory (heap, stacks): what the process allocated. The
/// rest is mostly the binary's own pages, mapped in as code paths run for the first time.
fn anon_kib() -> u64 {
    status_kib("RssAnon:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn write_tone(path: &Path, freq: f64, secs: f64) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    for i in 0..(48_000.0 * secs) as usize {
        let v = (i as f64 * freq * std::f64::consts::TAU / 48_000.0).sin() * 8000.0;
        w.write_sample(v as i16)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    w.finalize()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn tone(path: &Path, looping: bool) -> Result<Source, String> {
    Source::wav(
        path,
        SourceOptions {
            channels: Channels::Mono,
            looping,
        },
    )
    .map_err(|e| e.to_string())
}

async fn wait(
    call: &mut Call,
    what: &str,
    mut pick: impl FnMut(&CallEvent) -> bool,
) -> Result<(), String> {
    let found = tokio::time::timeout(STEP_LIMIT, async {
        while let Some(e) = call.next_event().await {
            if pick(&e) {
                return Ok(());
            }
            if let CallEvent::Ended { reason } = e {
                return Err(format!("{what}: the call ended ({reason})"));
            }
        }
        Err(format!("{what}: the call's events stopped"))
    })
    .await;
    found.unwrap_or_else(|_| Err(format!("{what}: not within {STEP_LIMIT:?}")))
}

fn is_connected(e: &CallEvent) -> bool {
    matches!(e, CallEvent::State(ConnectionState::Connected))
}

struct Shared {
    control: String,
    call: CallRef,
    tones: [PathBuf; 2],
    counters: Counters,
    rejoin_every: u64,
}

/// One cycle; `Err` says which step failed.
async fn cycle(s: &Shared, n: u64) -> Result<(), String> {
    let user = FIRST_USER + (n % 10_000) as i64;
    let signaling: Arc<dyn Signaling> = Arc::new(
        LocalSignaling::new(s.control.clone(), PeerId::User(user)).map_err(|e| e.to_string())?,
    );
    let engine = Engine::new(signaling.clone());
    let config = CallConfig {
        source: Some(tone(&s.tones[0], true)?),
        ..CallConfig::default()
    };
    let mut call = engine
        .join(s.call.clone(), config)
        .await
        .map_err(|e| format!("join: {e}"))?;
    wait(&mut call, "connect", is_connected).await?;
    call.set_source(Some(tone(&s.tones[1], true)?))
        .map_err(|e| format!("set_source: {e}"))?;
    call.mute().await.map_err(|e| format!("mute: {e}"))?;
    call.unmute().await.map_err(|e| format!("unmute: {e}"))?;
    if n.is_multiple_of(s.rejoin_every) {
        // The server forgets this participant: it must notice and join again.
        signaling
            .leave(&s.call, call.ssrc())
            .await
            .map_err(|e| format!("forced leave: {e}"))?;
        wait(&mut call, "rejoin", |e| {
            matches!(e, CallEvent::Rejoined { .. })
        })
        .await?;
        wait(&mut call, "reconnect", is_connected).await?;
        s.counters.rejoins.fetch_add(1, Ordering::Relaxed);
    }
    let summary = call.leave().await.map_err(|e| format!("leave: {e}"))?;
    if let Some(EndReason::Internal(e)) = summary.reason {
        s.counters.panics.fetch_add(1, Ordering::Relaxed);
        return Err(format!("internal: {e}"));
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("groupcall-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = soak(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn soak(args: &Args, dir: &Path) -> Result<(), String> {
    let tones = [dir.join("a.wav"), dir.join("b.wav")];
    write_tone(&tones[0], 440.0, 1.0)?;
    write_tone(&tones[1], 660.0, 1.0)?;
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .map_err(|e| format!("cannot start the local server: {e}"))?;
    let control = server.control_url();
    let creator =
        LocalSignaling::new(control.clone(), PeerId::User(1)).map_err(|e| e.to_string())?;
    let info = creator
        .create_call(
            None,
            &CreateCall {
                title: Some("groupcall soak".into()),
                ..CreateCall::default()
            },
        )
        .await
        .map_err(|e| format!("cannot create the call: {e}"))?;
    let call = CallRef::Id(info.id);
    let fds_before = open_fds();

    // The long call: one participant plays all along, one listens and takes the audio.
    let join_long = |user: i64, config: CallConfig| {
        let (control, call) = (control.clone(), call.clone());
        async move {
            let signaling =
                LocalSignaling::new(control, PeerId::User(user)).map_err(|e| e.to_string())?;
            let mut c = Engine::new(Arc::new(signaling))
                .join(call, config)
                .await
                .map_err(|e| format!("the long call's join: {e}"))?;
            wait(&mut c, "the long call connects", is_connected).await?;
            Ok::<Call, String>(c)
        }
    };
    let player = join_long(
        2,
        CallConfig {
            source: Some(tone(&tones[0], true)?),
            ..CallConfig::default()
        },
    )
    .await?;
    let (app, frames) = groupcall_engine::audio::AppSink::channel(256);
    let listener = join_long(
        3,
        CallConfig {
            app_sink: Some(app),
            ..CallConfig::default()
        },
    )
    .await?;
    let heard = Arc::new(AtomicU64::new(0));
    let heard_by_task = heard.clone();
    // The application side of the listener: takes every frame, on a thread of its own (the
    // frame channel is a blocking one); it ends when the call drops its sender.
    let drain = std::thread::spawn(move || {
        while frames.recv().is_ok() {
            heard_by_task.fetch_add(1, Ordering::Relaxed);
        }
    });

    let shared = Arc::new(Shared {
        control: control.clone(),
        call: call.clone(),
        tones,
        counters: Counters::default(),
        rejoin_every: args.rejoin_every,
    });
    let started = Instant::now();
    println!(
        "soak: {} cycles, {} at once, a forced rejoin every {}; start: RSS {:.1} MiB, {} fds",
        args.cycles,
        args.parallel,
        args.rejoin_every,
        rss_kib() as f64 / 1024.0,
        fds_before
    );
    println!(
        "{:>9} {:>8} {:>9} {:>9} {:>6} {:>7} {:>7} {:>8}",
        "cycles", "secs", "rss_mib", "anon_mib", "fds", "failed", "panics", "rejoins"
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.parallel {
        let (shared, next, cycles) = (shared.clone(), next.clone(), args.cycles);
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= cycles {
                    break;
                }
                if let Err(e) = cycle(&shared, n).await {
                    shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if errors.len() < 5 {
                        errors.push(format!("cycle {n}: {e}"));
                    }
                }
                shared.counters.done.fetch_add(1, Ordering::Relaxed);
            }
            errors
        }));
    }
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut reported = 0;
    let report = |c: &Counters| {
        let done = c.done.load(Ordering::Relaxed);
        let (rss, anon) = (rss_kib(), anon_kib());
        println!(
            "{:>9} {:>8.1} {:>9.1} {:>9.1} {:>6} {:>7} {:>7} {:>8}",
            done,
            started.elapsed().as_secs_f64(),
            rss as f64 / 1024.0,
            anon as f64 / 1024.0,
            open_fds(),
            c.failed.load(Ordering::Relaxed),
            c.panics.load(Ordering::Relaxed),
            c.rejoins.load(Ordering::Relaxed)
        );
        (done, rss, anon)
    };
    while shared.counters.done.load(Ordering::Relaxed) < args.cycles {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = shared.counters.done.load(Ordering::Relaxed);
        if done / args.report_every > reported {
            reported = done / args.report_every;
            samples.push(report(&shared.counters));
        }
    }
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.map_err(|e| format!("a soak worker failed: {e}"))?);
    }
    let long = Duration::from_secs(args.long_secs);
    while started.elapsed() < long {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push(report(&shared.counters));
    }
    samples.push(report(&shared.counters));
    let listener_stats = listener.stats();
    let player_summary = player
        .leave()
        .await
        .map_err(|e| format!("the long call's leave: {e}"))?;
    listener
        .leave()
        .await
        .map_err(|e| format!("the long call's leave: {e}"))?;
    let _ = tokio::task::spawn_blocking(move || drain.join()).await;
    // Give the server a moment to drop what it kept for the participants that left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_after = open_fds();

    let c = &shared.counters;
    let secs = started.elapsed().as_secs_f64();
    let warm_sample = samples.get(samples.len() / 10).or(samples.first());
    let warm = warm_sample.map_or(0, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let (warm_anon, last_anon) = (
        warm_sample.map_or(0, |s| s.2),
        samples.last().map_or(0, |s| s.2),
    );
    println!(
        "soak: {} cycles in {secs:.0} s ({:.1}/s): {} failed, {} panics, {} forced rejoins",
        c.done.load(Ordering::Relaxed),
        c.done.load(Ordering::Relaxed) as f64 / secs,
        c.failed.load(Ordering::Relaxed),
        c.panics.load(Ordering::Relaxed),
        c.rejoins.load(Ordering::Relaxed)
    );
    println!(
        "soak: RSS after warm-up {:.1} MiB, at the end {:.1} MiB (change {:+.2} MiB), peak {:.1} MiB",
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        (last as f64 - warm as f64) / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "soak: of it anonymous (heap, stacks): after warm-up {:.1} MiB, at the end {:.1} MiB (change {:+.2} MiB)",
        warm_anon as f64 / 1024.0,
        last_anon as f64 / 1024.0,
        (last_anon as f64 - warm_anon as f64) / 1024.0,
    );
    println!("soak: open fds before {fds_before}, after everything left {fds_after}");
    println!(
        "soak: the long call: {} packets sent, listener received {} packets ({} lost), {} frames heard",
        player_summary.stats.packets_sent,
        listener_stats.packets_received,
        listener_stats.speakers.iter().map(|s| s.lost).sum::<u64>(),
        heard.load(Ordering::Relaxed)
    );
    for e in &errors {
        eprintln!("soak: {e}");
    }
    if c.panics.load(Ordering::Relaxed) > 0 || c.failed.load(Ordering::Relaxed) > 0 {
        return Err("soak: some cycles failed (above)".into());
    }
    if fds_after > fds_before {
        return Err(format!(
            "soak: {} file descriptors leaked",
            fds_after - fds_before
        ));
    }
    Ok(())
}
