//! `groupcall bench-video`: what video costs and how late it arrives, in one process on
//! loopback. A local server; bot A publishes the counter pattern as a camera (pushed frames,
//! so the bench knows when each picture was handed over); bot B decodes it. Then A plays a
//! Y4M file and stops it, again and again, while the process's memory is watched.
//!
//! Figures: CPU of A's encoder thread (every layer of one camera), of B's decoder thread (one
//! received stream) and of the whole process (server and both calls, the pattern drawing left
//! out), as a share of one core; glass-to-glass latency from the push of a picture to its
//! decoded delivery at B (median and 95th percentile), read from the counter drawn into it;
//! pictures missing; and resident memory across the play/stop cycles.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::video::{pattern, VideoSink, VideoSource};
use groupcall_engine::{CallConfig, CallEvent, ConnectionState, Engine};
use groupcall_sfu::{LocalServer, LocalServerConfig};

use crate::load::{memory, percentile, process_cpu, task_cpu};

const PUSHER_THREAD: &str = "bench-pusher";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long CPU and latency are measured, after 2 s of warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The published picture's size.
    #[arg(long, default_value = "1280x720", value_parser = crate::join::parse_size)]
    pub size: (u32, u32),
    #[arg(long, default_value_t = 30.0)]
    pub fps: f32,
    /// Play/stop cycles of a Y4M file for the memory figure (0: none).
    #[arg(long, default_value_t = 20)]
    pub cycles: u32,
    /// How long a bot sending sound and a camera together is watched for drift between the
    /// two (0: not at all).
    #[arg(long, default_value_t = 30.0)]
    pub av_seconds: f64,
}

/// CPU seconds of the live threads whose names start with `prefix`.
fn threads_cpu(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(prefix))
        })
        .filter_map(|t| task_cpu(&t.path()))
        .sum()
}

struct Cpu {
    total: f64,
    encoder: f64,
    decoder: f64,
    pusher: f64,
}

impl Cpu {
    fn take() -> Self {
        Cpu {
            total: process_cpu(),
            encoder: threads_cpu("groupcall-camer"),
            decoder: threads_cpu("groupcall-video"),
            pusher: threads_cpu(PUSHER_THREAD),
        }
    }
}

async fn connected(call: &mut groupcall_engine::Call) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, call.next_event()).await {
            Ok(Some(CallEvent::State(ConnectionState::Connected))) => return Ok(()),
            Ok(Some(CallEvent::Ended { reason })) => {
                return Err(format!("the call ended: {reason}"))
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err("not connected within 10 s".into()),
        }
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    let (w, h) = args.size;
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .map_err(|e| format!("cannot start the local server: {e}"))?;
    let signaling = |user: i64| -> Result<Arc<dyn Signaling>, String> {
        Ok(Arc::new(
            LocalSignaling::new(server.control_url(), PeerId::User(user))
                .map_err(|e| e.to_string())?,
        ))
    };
    let info = signaling(1)?
        .create_call(None, &CreateCall::default())
        .await
        .map_err(|e| e.to_string())?;
    let call = CallRef::Id(info.id);

    // B decodes; each picture's counter and arrival go to the bench.
    let (arrivals_tx, arrivals) = mpsc::channel::<(u32, Instant)>();
    let sink = VideoSink::callback(move |v| {
        if let Some(n) = pattern::read_counter(&v.frame) {
            let _ = arrivals_tx.send((n, Instant::now()));
        }
    });
    let mut b = Engine::new(signaling(2)?)
        .join(
            call.clone(),
            CallConfig {
                video_sink: Some(sink),
                ..CallConfig::default()
            },
        )
        .await
        .map_err(|e| format!("B cannot join: {e}"))?;
    connected(&mut b).await?;

    // A publishes pushed pattern frames; the pusher notes when each counter was handed over.
    let (source, pusher) = VideoSource::pushed(w, h, args.fps).map_err(|e| e.to_string())?;
    let mut a = Engine::new(signaling(1)?)
        .join(
            call.clone(),
            CallConfig {
                video: Some(source),
                ..CallConfig::default()
            },
        )
        .await
        .map_err(|e| format!("A cannot join: {e}"))?;
    connected(&mut a).await?;
    let (pushed_tx, pushed) = mpsc::channel::<(u32, Instant)>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frame_time = Duration::from_secs_f64(1.0 / f64::from(args.fps));
    let pusher_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(PUSHER_THREAD.into())
            .spawn(move || {
                let start = Instant::now();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let due = start + frame_time * n;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let Ok(f) = pattern::draw(w, h, n, Duration::ZERO) else {
                        return;
                    };
                    let at = Instant::now();
                    if pusher.push(f).is_ok() {
                        let _ = pushed_tx.send((n, at));
                    }
                    n += 1;
                }
            })
            .map_err(|e| e.to_string())?
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    while arrivals.try_recv().is_ok() {}
    let before = Cpu::take();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let after = Cpu::take();
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = pusher_thread.join();

    let pushed: HashMap<u32, Instant> = pushed.try_iter().collect();
    let got: Vec<(u32, Instant)> = arrivals.try_iter().collect();
    let latencies: Vec<f64> = got
        .iter()
        .filter_map(|(n, at)| {
            Some(at.saturating_duration_since(*pushed.get(n)?).as_secs_f64() * 1e3)
        })
        .collect();
    let (first, last) = (
        got.first().map_or(0, |g| g.0),
        got.last().map_or(0, |g| g.0),
    );
    let span = last.saturating_sub(first) + 1;
    let distinct: std::collections::BTreeSet<u32> = got.iter().map(|g| g.0).collect();
    let pct = |cpu: f64| 100.0 * cpu / wall;
    let stats = a.stats();
    println!(
        "bench-video: {w}x{h} at {} fps, {:.1} s measured",
        args.fps, wall
    );
    println!(
        "  cpu: encoder thread {:.1} % of a core (one camera, {} layers), decoder thread {:.1} % (one received stream), whole process {:.1} % (server and both calls, pattern drawing excluded)",
        pct(after.encoder - before.encoder),
        stats.video_sent.map_or(0, |s| s.estimate_layers),
        pct(after.decoder - before.decoder),
        pct((after.total - before.total) - (after.pusher - before.pusher)),
    );
    println!(
        "  latency push to decoded picture: median {:.1} ms, p95 {:.1} ms over {} pictures",
        percentile(&latencies, 50.0).unwrap_or(f64::NAN),
        percentile(&latencies, 95.0).unwrap_or(f64::NAN),
        latencies.len()
    );
    println!(
        "  pictures: {} decoded of {} in counters {first}..{last} ({:.2} % missing)",
        distinct.len(),
        span,
        100.0 * (1.0 - distinct.len() as f64 / f64::from(span.max(1)))
    );

    if args.cycles > 0 {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("clip.y4m");
        {
            let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            let mut y4m = groupcall_engine::video::y4m::Y4mWriter::new(
                std::io::BufWriter::new(file),
                640,
                360,
                30.0,
            )
            .map_err(|e| e.to_string())?;
            for i in 0..30 {
                let f = pattern::draw(640, 360, i, Duration::ZERO).map_err(|e| e.to_string())?;
                y4m.write(&f).map_err(|e| e.to_string())?;
            }
            y4m.flush().map_err(|e| e.to_string())?;
        }
        let mut rss = Vec::new();
        for _ in 0..args.cycles {
            let source = VideoSource::y4m(&path).map_err(|e| e.to_string())?;
            a.set_video_source(Some(source))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            a.set_video_source(None).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            rss.push(memory("VmRSS").unwrap_or(0));
        }
        let mib = |kb: u64| kb as f64 / 1024.0;
        println!(
            "  memory over {} play/stop cycles of a Y4M file: RSS {:.1} MiB after the first, {:.1} MiB after the {}th, {:.1} MiB after the last",
            args.cycles,
            mib(rss[0]),
            mib(rss[rss.len() / 2]),
            rss.len() / 2 + 1,
            mib(*rss.last().unwrap_or(&0)),
        );
    }
    let _ = a.leave().await;
    if args.av_seconds > 0.0 {
        av_drift(&signaling(3)?, &call, args.av_seconds).await?;
    }
    let _ = b.leave().await;
    Ok(())
}

/// A bot sends a looping tone and the pattern at 30 fps. Each stream's media time is what it
/// has sent (20 ms per audio packet, 1/30 s per video frame: exactly what their RTP timestamps
/// advance by); their difference, read at the start and the end of the window, is the drift
/// between sound and picture.
async fn av_drift(
    signaling: &Arc<dyn Signaling>,
    call: &CallRef,
    seconds: f64,
) -> Result<(), String> {
    use groupcall_engine::audio::{Channels, Source, SourceOptions};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let wav = dir.path().join("tone.wav");
    {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&wav, spec).map_err(|e| e.to_string())?;
        for i in 0..48_000 {
            let x = (i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin();
            w.write_sample((x * 8000.0) as i16)
                .map_err(|e| e.to_string())?;
        }
        w.finalize().map_err(|e| e.to_string())?;
    }
    let sound = Source::wav(
        &wav,
        SourceOptions {
            channels: Channels::Mono,
            looping: true,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut c = Engine::new(signaling.clone())
        .join(
            call.clone(),
            CallConfig {
                source: Some(sound),
                video: Some(VideoSource::pattern(640, 360, 30.0).map_err(|e| e.to_string())?),
                ..CallConfig::default()
            },
        )
        .await
        .map_err(|e| format!("the A/V bot cannot join: {e}"))?;
    connected(&mut c).await?;
    // Media time sent, in seconds, of sound and of picture (the top layer's frames).
    let media = |c: &groupcall_engine::Call| {
        let s = c.stats();
        let audio = s.packets_sent as f64 * 0.020;
        let video = s
            .video_sent
            .map_or(0.0, |v| *v.frames.iter().max().unwrap_or(&0) as f64 / 30.0);
        audio - video
    };
    // One reading is as coarse as a frame (33 ms); the mean of 50, taken every 100 ms over 5 s
    // at either end of the window, is a few milliseconds.
    async fn mean_over_5s(
        c: &groupcall_engine::Call,
        media: impl Fn(&groupcall_engine::Call) -> f64,
    ) -> f64 {
        let mut sum = 0.0;
        for _ in 0..50 {
            sum += media(c);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sum / 50.0
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let start = mean_over_5s(&c, media).await;
    tokio::time::sleep(Duration::from_secs_f64((seconds - 10.0).max(0.0))).await;
    let end = mean_over_5s(&c, media).await;
    let wall = t0.elapsed().as_secs_f64() - 5.0;
    let drift_ms = (end - start) * 1e3;
    println!(
        "  sound and picture of one bot over {wall:.0} s: the picture moved {drift_ms:+.1} ms against the sound ({:+.0} ppm, {:+.0} ms in 30 minutes at that rate)",
        drift_ms / 1e3 / wall * 1e6,
        drift_ms / wall * 1800.0
    );
    let _ = c.leave().await;
    Ok(())
}
