//! `groupcall bench-load`: N participants of this engine in one call of the local server, in
//! this one process, for a fixed time; what they cost and how well the audio flows.
//!
//! The server runs on its own tokio runtime, whose threads are named `sfu-server`, so that its
//! CPU time (read per thread from `/proc/self/task`) can be told apart from the engine's; the
//! speakers' audio is pushed from one thread (`load-pusher`), also counted apart. What is left
//! of the process's CPU time (getrusage) is the engine's: every participant's socket, transport,
//! encoder, jitter buffers, decoders, events and signaling.
//!
//! Each speaker plays a quiet speech-like signal with a loud 20 ms tone burst at the start of
//! every second, pushed frame by frame in real time. Listeners ("probes"; all of them unless
//! `--probes` says fewer) take their received frames through an application sink and
//! timestamp each burst's first loud sample; speaker-to-listener latency is that moment minus
//! the moment the burst was pushed. A listener that is not a probe takes no audio at all, so
//! the engine neither buffers nor decodes what it receives.
//!
//! `--scenario many-calls` is a bot host instead: N calls, in each one participant playing a
//! raw PCM file (read ahead on its thread, Opus encoded) to one listener. The listeners run on
//! the server's runtime, so their CPU is counted as the server's and left out; ten of them take
//! the audio unless `--probes` says otherwise. No latency is measured there (nothing is
//! pushed); pacing shows in the listeners' interarrival jitter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groupcall_engine::audio::source::RawFormat;
use groupcall_engine::audio::{
    AppSink, Channels, FramePusher, ReceivedFrame, Source, SourceOptions,
};
use groupcall_engine::error::Error as EngineError;
use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::{Call, CallConfig, CallEvent, CallStats, ConnectionState, Engine};
use groupcall_sfu::{LocalServer, LocalServerConfig};
use tokio::sync::{oneshot, watch};

const RATE: usize = 48_000;
const FRAME: usize = 960;
const FRAMES_PER_SECOND: usize = RATE / FRAME;
/// The burst: a 1 kHz tone at half of full scale, one frame long, once a second.
const BURST_AMPLITUDE: f64 = 16_000.0;
const BURST_HZ: f64 = 1_000.0;
/// A received sample above this is the burst; the background never comes near it.
const ONSET_THRESHOLD: i16 = 8_000;
/// Below this again (a whole frame), the probe waits for the next burst.
const REARM_THRESHOLD: i16 = 5_000;
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const SERVER_THREAD: &str = "sfu-server";
const PUSHER_THREAD: &str = "load-pusher";
/// The first user id of the participants (the call is created by user 1).
const FIRST_USER: i64 = 10_000;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One participant speaks, the others listen.
    OneSpeaker,
    /// Everyone speaks (and hears everyone else).
    AllSpeak,
    /// N calls, each with one of this engine's participants playing (pushed frames, Opus
    /// encoded) to one listener. The listeners run on the server's runtime, so their CPU is
    /// not counted: what is measured is what a bot host pays per call.
    ManyCalls,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::OneSpeaker => "one-speaker",
            Scenario::AllSpeak => "all-speak",
            Scenario::ManyCalls => "many-calls",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Participants in the call, speakers included (with `many-calls`: calls, each with a
    /// speaker and a listener).
    #[arg(short = 'n', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    participants: u32,
    #[arg(long, value_enum, default_value_t = Scenario::OneSpeaker)]
    scenario: Scenario,
    /// Seconds measured, once everyone is connected and a warm-up has passed.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Seconds of audio before the measurement starts (jitter buffers settle, rosters fill).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Listeners that take their audio through an application sink (and measure the latency);
    /// default: every listener (with many-calls: ten). The others take no audio, so the engine
    /// does not decode it.
    #[arg(long)]
    probes: Option<u32>,
    /// How long the server waits after a participant's first ICE check before its DTLS
    /// ClientHello, in ms. 0 measures this engine alone; `groupcall serve` defaults to 50 for
    /// libwebrtc clients, and benches/compare.sh passes the same value to both sides.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=5000))]
    dtls_delay_ms: u64,
    /// The jitter buffers' initial target delay, in ms (default: the engine's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=2000))]
    jitter_initial_ms: Option<u64>,
    /// The jitter buffers' smallest target delay, in ms (default: the engine's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=2000))]
    jitter_min_ms: Option<u64>,
    /// Worker threads of the server's own runtime.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    server_threads: u32,
    /// Number the participants' audio packets for transport-cc too, as the engine did before
    /// (the server then sends each sender feedback ten times a second); for comparison.
    #[arg(long)]
    audio_transport_cc: bool,
    /// Run the measured participants' calls on this many threads of the engine's own
    /// (`Engine::with_call_threads`) instead of on the tool's multi-threaded runtime; 0: on
    /// the runtime.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    call_threads: u32,
    /// With listeners (one-speaker): seconds the speakers are measured alone, after a
    /// second of warm-up, before the listeners join. What the listeners add to that, per
    /// listener, is the figure "CPU per listener"; 0 skips it.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    alone_seconds: u64,
    /// No `Speaking` events (`CallConfig::speaking_events` off), as for an application that
    /// never shows who speaks; by default every participant gets them, ten a second per
    /// speaker, and the tool reads them.
    #[arg(long)]
    no_speaking_events: bool,
    /// The speakers' encoder.
    #[command(flatten)]
    encoder: crate::join::EncoderArgs,
}

/// Burst push times per speaker SSRC, shared by the pusher and the probes.
type PushLog = Arc<Mutex<HashMap<u32, Vec<Instant>>>>;
/// `(onset time, latency)` of every burst a probe heard.
type Latencies = Arc<Mutex<Vec<(Instant, Duration)>>>;

/// What a participant's task hands back when it is told to stop.
struct Outcome {
    stats: CallStats,
    /// From the task's start (the join) to `stats`: what [`CallStats::wakeups`] counts over.
    lifetime: Duration,
    rejoins: u32,
    sink_errors: u32,
    ended_early: Option<String>,
}

struct Participant {
    connected: oneshot::Receiver<Instant>,
    task: tokio::task::JoinHandle<Outcome>,
}

pub async fn run(args: Args) -> Result<(), String> {
    let n = args.participants as usize;
    if n < 2 && args.scenario != Scenario::ManyCalls {
        return Err(format!(
            "-n {n}: a call needs at least 2 participants (one to speak, one to hear)"
        ));
    }
    let speakers = match args.scenario {
        Scenario::OneSpeaker => 1,
        Scenario::AllSpeak | Scenario::ManyCalls => n,
    };
    // Many calls: ten listeners take the audio unless told otherwise (they run beside the
    // server; all of them decoding would starve the speakers being measured on a small box).
    let probes = args.probes.map_or(
        if args.scenario == Scenario::ManyCalls {
            n.min(10)
        } else {
            n
        },
        |p| p as usize,
    );
    let probes: Vec<usize> = match args.scenario {
        // Listeners are participants 1..n.
        Scenario::OneSpeaker => (1..n).take(probes).collect(),
        Scenario::AllSpeak => (0..n).take(probes).collect(),
        // Participant 2k speaks in call k, 2k + 1 listens.
        Scenario::ManyCalls => (0..n).take(probes).map(|k| 2 * k + 1).collect(),
    };

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads as usize)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    let result = run_with_server(&args, &server_rt, n, speakers, &probes).await;
    // Dropping a runtime inside async code is not allowed; its threads just stop.
    server_rt.shutdown_background();
    result
}

async fn run_with_server(
    args: &Args,
    server_rt: &tokio::runtime::Runtime,
    n: usize,
    speakers: usize,
    probes: &[usize],
) -> Result<(), String> {
    let config = LocalServerConfig {
        dtls_start_delay: Duration::from_millis(args.dtls_delay_ms),
        ..LocalServerConfig::default()
    };
    let server = server_rt
        .spawn(LocalServer::start(config))
        .await
        .map_err(|e| format!("the server's start-up task failed: {e}"))?
        .map_err(|e| format!("cannot start the local server: {e}"))?;
    let control = server.control_url();
    let backend = |user: i64| -> Result<Arc<dyn Signaling>, String> {
        Ok(Arc::new(
            LocalSignaling::new(control.clone(), PeerId::User(user)).map_err(|e| e.to_string())?,
        ))
    };
    let many = args.scenario == Scenario::ManyCalls;
    let signal_dir = tempfile::tempdir()
        .map_err(|e| format!("cannot make a directory for the signal file: {e}"))?;
    let signal_file = signal_dir.path().join("signal-s16le-48k-mono.raw");
    if many {
        let bytes: Vec<u8> = signal_second()
            .iter()
            .flatten()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        std::fs::write(&signal_file, bytes.repeat(10))
            .map_err(|e| format!("cannot write {}: {e}", signal_file.display()))?;
    }
    let mut calls = Vec::new();
    for _ in 0..if many { n } else { 1 } {
        let info = backend(1)?
            .create_call(
                None,
                &CreateCall {
                    title: Some("groupcall bench-load".into()),
                    ..CreateCall::default()
                },
            )
            .await
            .map_err(|e| format!("cannot create the call: {e}"))?;
        calls.push(CallRef::Id(info.id));
    }
    // Participants: n in one call, or a speaker and a listener in each of n calls.
    let total = if many { 2 * n } else { n };
    println!(
        "bench-load: {} participants, scenario {}, {} s measured after {} s of warm-up; server \
         {} (media {}), DTLS start delay {} ms; calls on {}",
        n,
        args.scenario.name(),
        args.seconds,
        args.warmup,
        control,
        server.media_addr(),
        args.dtls_delay_ms,
        match args.call_threads {
            0 => "the tool's runtime".to_string(),
            k => format!("{k} call thread(s) of the engine"),
        }
    );

    // The engine whose threads the measured participants' calls run on, if any.
    let threads = match args.call_threads {
        0 => None,
        k => Some(
            Engine::with_call_threads(backend(FIRST_USER)?, k as usize)
                .map_err(|e| e.to_string())?,
        ),
    };
    let push_log: PushLog = Arc::default();
    let stop_pusher = Arc::new(AtomicBool::new(false));
    let push_overflows = Arc::new(AtomicU64::new(0));
    let start_pusher = |pushers: Vec<(u32, FramePusher)>| {
        let stop = stop_pusher.clone();
        let log = push_log.clone();
        let overflows = push_overflows.clone();
        std::thread::Builder::new()
            .name(PUSHER_THREAD.into())
            .spawn(move || push_audio(pushers, log, stop, overflows))
            .map_err(|e| format!("cannot start the pusher thread: {e}"))
    };
    let mut pusher_thread = None;
    // The speakers' engine CPU (cores) and the window, measured before any listener joins.
    let mut alone: Option<(f64, f64)> = None;
    let latencies: Latencies = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss_before = memory("VmRSS");

    // Join one after another: each join-to-connected time is then the engine's alone.
    let mut participants = Vec::with_capacity(total);
    let mut pushers: Vec<(u32, FramePusher)> = Vec::new();
    let mut join_ms = Vec::with_capacity(total);
    for i in 0..total {
        let mut config = CallConfig::default();
        if let Some(ms) = args.jitter_initial_ms {
            config.jitter.initial_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = args.jitter_min_ms {
            config.jitter.min_delay = Duration::from_millis(ms);
        }
        config.encoder = args.encoder.config();
        config.transport.audio_transport_cc = args.audio_transport_cc;
        config.speaking_events = !args.no_speaking_events;
        let speaks = if many { i % 2 == 0 } else { i < speakers };
        let call = if many { &calls[i / 2] } else { &calls[0] };
        let mut pusher = None;
        if speaks && many {
            // A bot playing a file: the same raw signal ntgcalls' FILE source plays.
            let source = Source::raw_file(
                &signal_file,
                RawFormat {
                    rate: RATE as u32,
                    channels: 1,
                },
                SourceOptions {
                    channels: Channels::Mono,
                    looping: true,
                },
            )
            .map_err(|e| format!("participant {i}: {e}"))?;
            config.source = Some(source);
        } else if speaks {
            let (source, p) = Source::pushed(
                8,
                SourceOptions {
                    channels: Channels::Mono,
                    looping: false,
                },
            )
            .map_err(|e| format!("participant {i}: cannot make a pushed source: {e}"))?;
            config.source = Some(source);
            pusher = Some(p);
        }
        if probes.contains(&i) {
            config.app_sink = Some(probe_sink(push_log.clone(), latencies.clone()));
        }
        let signaling = backend(FIRST_USER + i as i64)?;
        // A many-calls listener is not measured: it stays off the call threads.
        let engine = match &threads {
            Some(t) if !many || speaks => t.with_signaling(signaling),
            _ => Engine::new(signaling),
        };
        let started = Instant::now();
        // A many-calls listener lives on the server's runtime: its call's task (spawned by
        // join) and its own run there, and their CPU is counted as the server's.
        let runtime = if many && !speaks {
            server_rt.handle().clone()
        } else {
            tokio::runtime::Handle::current()
        };
        let joined = runtime
            .spawn({
                let call = call.clone();
                async move { engine.join(call, config).await }
            })
            .await
            .map_err(|e| format!("participant {i}: the joining task failed: {e}"))?
            .map_err(|e| format!("participant {i} cannot join: {e}"))?;
        let ssrc = joined.ssrc();
        let (connected_tx, connected_rx) = oneshot::channel();
        let task = runtime.spawn(participant(joined, connected_tx, stop_rx.clone()));
        let mut p = Participant {
            connected: connected_rx,
            task,
        };
        let at = tokio::time::timeout(CONNECT_LIMIT, &mut p.connected)
            .await
            .map_err(|_| {
                format!(
                    "participant {i} did not connect within {} s",
                    CONNECT_LIMIT.as_secs()
                )
            })?
            .map_err(|_| format!("participant {i}: the call ended before it connected"))?;
        join_ms.push(at.saturating_duration_since(started).as_secs_f64() * 1000.0);
        if let Some(p) = pusher {
            pushers.push((ssrc, p));
        }
        participants.push(p);
        // The speakers (who join first) play on their own for a while: what they cost
        // without listeners, so that what each listener adds can be told apart.
        if !many && i + 1 == speakers && speakers < n {
            pusher_thread = Some(start_pusher(std::mem::take(&mut pushers))?);
            if args.alone_seconds > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let c0 = CpuSnapshot::take();
                let t0 = Instant::now();
                tokio::time::sleep(Duration::from_secs(args.alone_seconds)).await;
                let c = CpuSnapshot::take().since(&c0);
                let w = t0.elapsed().as_secs_f64();
                alone = Some((c.engine() / w, w));
            }
        }
    }
    let rss_connected = memory("VmRSS");
    println!(
        "all {total} connected; join-to-connected median {:.1} ms, p95 {:.1} ms",
        percentile(&join_ms, 50.0).unwrap_or(f64::NAN),
        percentile(&join_ms, 95.0).unwrap_or(f64::NAN)
    );

    let pusher_thread = match pusher_thread {
        Some(t) => t,
        None => start_pusher(pushers)?,
    };

    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let cpu0 = CpuSnapshot::take();
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu1 = CpuSnapshot::take();
    let window = window_start.elapsed().as_secs_f64();
    let rss_end = memory("VmRSS");
    let peak = memory("VmHWM");

    stop_pusher.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(n);
    for (i, p) in participants.into_iter().enumerate() {
        match p.task.await {
            Ok(o) => outcomes.push(o),
            Err(e) => return Err(format!("participant {i}'s task failed: {e}")),
        }
    }
    if pusher_thread.join().is_err() {
        return Err("the pusher thread panicked".into());
    }
    server.shutdown().await;

    // ---- figures ----
    let cpu = cpu1.since(&cpu0);
    let engine_cpu = cpu.engine();
    // Per participant of the engine's own: with many-calls, per call (its one speaker).
    let participant_seconds = n as f64 * window;
    let per_participant = engine_cpu / participant_seconds;
    // What one listener adds: the engine's CPU with everyone, less the speakers' alone.
    let listeners = n - speakers;
    let per_listener =
        alone.map(|(cores, _)| (engine_cpu / window - cores) / listeners.max(1) as f64);
    let mut lost = 0u64;
    let mut jitter_max: Option<f64> = None;
    let mut received = 0u64;
    let mut sent = 0u64;
    let mut rejoins = 0u32;
    let mut sink_errors = 0u32;
    let mut late_packets = 0u64;
    let mut send_late_max = Duration::ZERO;
    let mut ended = Vec::new();
    // The measured participants' wake-ups (each call's speaker with many-calls), per second.
    let (mut wakeups, mut speaker_seconds) = (0u64, 0.0);
    for (i, o) in outcomes.iter().enumerate() {
        if (many && i % 2 == 0) || (!many && i < speakers) {
            wakeups += o.stats.wakeups;
            speaker_seconds += o.lifetime.as_secs_f64();
        }
        for s in &o.stats.speakers {
            lost += s.lost;
            received += s.packets;
            jitter_max = Some(jitter_max.map_or(s.jitter_ms, |j| j.max(s.jitter_ms)));
        }
        sent += o.stats.packets_sent;
        late_packets += o.stats.late_packets;
        send_late_max = send_late_max.max(o.stats.send_late_max);
        rejoins += o.rejoins;
        sink_errors += o.sink_errors;
        if let Some(r) = &o.ended_early {
            ended.push(format!("participant {i}: {r}"));
        }
    }
    let lat: Vec<f64> = latencies
        .lock()
        .map_err(|_| "the latency log was poisoned".to_string())?
        .iter()
        .filter(|(at, _)| *at >= window_start)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    let mib = |kb: Option<u64>| kb.map(|k| k as f64 / 1024.0);
    let rss_per = match (rss_before, rss_end) {
        (Some(b), Some(e)) => Some((e as f64 - b as f64) / 1024.0 / n as f64),
        _ => None,
    };
    let rss_per_connected = match (rss_before, rss_connected) {
        (Some(b), Some(e)) => Some((e as f64 - b as f64) / 1024.0 / n as f64),
        _ => None,
    };
    let loss_pct = if lost + received > 0 {
        100.0 * lost as f64 / (lost + received) as f64
    } else {
        0.0
    };

    println!(
        "---- groupcall bench-load: {} participants, {} ----",
        n,
        args.scenario.name()
    );
    println!(
        "CPU over {window:.1} s: process {:.2} s, server {:.2} s, pusher {:.2} s, engine {:.2} s",
        cpu.total, cpu.server, cpu.pusher, engine_cpu
    );
    println!(
        "CPU per participant-second (engine): {:.5} s = {:.3} % of a core ({} speaking, {} \
         listening)",
        per_participant,
        per_participant * 100.0,
        speakers,
        n - speakers
    );
    println!(
        "CPU per participant-second (whole process, server included): {:.3} % of a core",
        cpu.total / participant_seconds * 100.0
    );
    if let (Some((cores, w)), Some(l)) = (alone, per_listener) {
        println!(
            "CPU per listener: {:.3} % of a core (the engine with {listeners} listeners, less \
             {:.3} % for the {speakers} speaking alone over {w:.1} s before they joined)",
            l * 100.0,
            cores * 100.0
        );
    }
    if many {
        println!(
            "CPU per call (its speaker; the listeners run with the server and are not \
             counted): {:.3} % of a core",
            per_participant * 100.0
        );
    }
    println!(
        "RSS: before joining {}, all connected {}, at the end {}, peak (VmHWM) {}",
        show_mib(mib(rss_before)),
        show_mib(mib(rss_connected)),
        show_mib(mib(rss_end)),
        show_mib(mib(peak))
    );
    println!(
        "RSS per extra participant: {} at the end ({} once connected; server's share included)",
        show_mib(rss_per),
        show_mib(rss_per_connected)
    );
    println!(
        "packets: {sent} sent, {received} received, {lost} lost ({loss_pct:.3} %); push \
         overflows {}; rejoins {rejoins}; sink errors {sink_errors}",
        push_overflows.load(Ordering::Relaxed)
    );
    if let Some(j) = jitter_max {
        println!("interarrival jitter (RFC 3550) at the listeners: at most {j:.2} ms");
    }
    let wakeups_per_s = (speaker_seconds > 0.0).then(|| wakeups as f64 / speaker_seconds);
    if let Some(w) = wakeups_per_s {
        println!(
            "wake-ups per speaking participant: {w:.1} a second (whole calls; the 20 ms tick is 50)"
        );
    }
    println!(
        "pacing: {late_packets} packets sent more than 20 ms after their time; the latest {:.1} ms \
         after (whole calls, joins included)",
        send_late_max.as_secs_f64() * 1000.0
    );
    println!(
        "join-to-connected: median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        percentile(&join_ms, 50.0).unwrap_or(f64::NAN),
        percentile(&join_ms, 95.0).unwrap_or(f64::NAN),
        percentile(&join_ms, 100.0).unwrap_or(f64::NAN)
    );
    match (percentile(&lat, 50.0), percentile(&lat, 95.0)) {
        (Some(m), Some(p)) => println!(
            "speaker-to-listener latency: median {m:.1} ms, p95 {p:.1} ms, max {:.1} ms ({} bursts \
             heard by {} probes)",
            percentile(&lat, 100.0).unwrap_or(f64::NAN),
            lat.len(),
            probes.len()
        ),
        _ => println!("speaker-to-listener latency: no burst was heard by a probe"),
    }
    for e in &ended {
        println!("ended early: {e}");
    }

    let encoder = args.encoder.config();
    let mut json = serde_json::json!({
        "tool": "groupcall",
        "scenario": args.scenario.name(),
        "participants": total,
        "calls": calls.len(),
        "cpu_per_call_pct": if many { Some(per_participant * 100.0) } else { None },
        "speakers": speakers,
        "probes": probes.len(),
        "seconds": window,
        "dtls_delay_ms": args.dtls_delay_ms,
        "complexity": encoder.complexity,
        "packet_ms": encoder.packet_ms,
        "preset": format!("{:?}", args.encoder.preset).to_lowercase(),
        "application": format!("{:?}", encoder.application),
        "bitrate_kbps": encoder.bitrate / 1000,
        "expected_loss_pct": encoder.expected_loss_percent,
        "cpu_process_s": cpu.total,
        "cpu_server_s": cpu.server,
        "cpu_pusher_s": cpu.pusher,
        "cpu_engine_s": engine_cpu,
        "cpu_per_participant_s_per_s": per_participant,
        "cpu_per_participant_pct": per_participant * 100.0,
        "rss_before_mib": mib(rss_before),
        "rss_connected_mib": mib(rss_connected),
        "rss_end_mib": mib(rss_end),
        "peak_rss_mib": mib(peak),
        "rss_per_participant_mib": rss_per,
        "packets_sent": sent,
        "packets_received": received,
        "packets_lost": lost,
        "loss_pct": loss_pct,
        "jitter_ms_max": jitter_max,
        "late_packets": late_packets,
        "send_late_max_ms": send_late_max.as_secs_f64() * 1000.0,
        "push_overflows": push_overflows.load(Ordering::Relaxed),
        "rejoins": rejoins,
        "join_ms_median": percentile(&join_ms, 50.0),
        "join_ms_p95": percentile(&join_ms, 95.0),
        "latency_ms_median": percentile(&lat, 50.0),
        "latency_ms_p95": percentile(&lat, 95.0),
        "latency_samples": lat.len(),
        "ended_early": ended.len(),
    });
    // Added apart: one macro call of this size reaches the compiler's recursion limit.
    json["audio_transport_cc"] = args.audio_transport_cc.into();
    json["speaker_wakeups_per_s"] = wakeups_per_s.into();
    json["cpu_speakers_alone_pct"] = alone.map(|(c, _)| c * 100.0).into();
    json["cpu_per_listener_pct"] = per_listener.map(|l| l * 100.0).into();
    json["speaking_events"] = (!args.no_speaking_events).into();
    println!("{json}");
    if !ended.is_empty() {
        return Err(format!("{} participants ended before the end", ended.len()));
    }
    Ok(())
}

fn show_mib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |m| format!("{m:.2} MiB"))
}

/// One participant's task: drains its events (as an application would), reports the moment
/// it first connected, and on `stop` takes its figures and leaves.
async fn participant(
    mut call: Call,
    connected: oneshot::Sender<Instant>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let started = Instant::now();
    let mut connected = Some(connected);
    let mut rejoins = 0;
    let mut sink_errors = 0;
    let mut ended_early = None;
    loop {
        tokio::select! {
            e = call.next_event() => match e {
                Some(CallEvent::State(ConnectionState::Connected)) => {
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
                Some(CallEvent::State(ConnectionState::Rejoining { .. })) => rejoins += 1,
                Some(CallEvent::RecordingError { .. }) => sink_errors += 1,
                Some(CallEvent::Ended { reason }) => {
                    ended_early = Some(format!("{reason:?}"));
                    break;
                }
                Some(_) => {}
                None => {
                    ended_early = Some("the event stream closed".into());
                    break;
                }
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    let stats = call.stats();
    let lifetime = started.elapsed();
    if ended_early.is_none() {
        if let Err(e) = call.leave().await {
            ended_early = Some(format!("leaving failed: {e}"));
        }
    }
    Outcome {
        stats,
        lifetime,
        rejoins,
        sink_errors,
        ended_early,
    }
}

/// A probe's sink: notes when each speaker's burst first comes out loud.
fn probe_sink(log: PushLog, latencies: Latencies) -> AppSink {
    let mut armed: HashMap<u32, bool> = HashMap::new();
    AppSink::callback(move |frame: ReceivedFrame| {
        let now = Instant::now();
        let ready = armed.entry(frame.ssrc).or_insert(false);
        // One pass for the frame's peak (it vectorizes; the tool's share of a listener's CPU
        // stays small), the onset searched only in the rare frame that has one.
        let peak = frame
            .pcm
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        let onset = if peak > ONSET_THRESHOLD as u16 {
            frame
                .pcm
                .iter()
                .position(|s| s.unsigned_abs() > ONSET_THRESHOLD as u16)
        } else {
            None
        };
        match onset {
            Some(at) if *ready => {
                *ready = false;
                let step = frame.channels.count();
                let heard = now + Duration::from_secs_f64((at / step) as f64 / RATE as f64);
                let Ok(log) = log.lock() else { return };
                let pushed = log
                    .get(&frame.ssrc)
                    .and_then(|v| v.iter().rev().find(|&&t| t <= heard).copied());
                if let (Some(p), Ok(mut l)) = (pushed, latencies.lock()) {
                    l.push((now, heard.saturating_duration_since(p)));
                }
            }
            Some(_) => {}
            None => {
                if peak < REARM_THRESHOLD as u16 {
                    *ready = true;
                }
            }
        }
    })
}

/// One second of the speakers' signal: a quiet two-tone "voice" with a slow envelope, and the
/// burst in the first frame.
fn signal_second() -> Vec<Vec<i16>> {
    let tau = 2.0 * std::f64::consts::PI;
    (0..FRAMES_PER_SECOND)
        .map(|f| {
            (f * FRAME..(f + 1) * FRAME)
                .map(|i| {
                    let t = i as f64 / RATE as f64;
                    if f == 0 {
                        (BURST_AMPLITUDE * (tau * BURST_HZ * t).sin()) as i16
                    } else {
                        let env = 0.6 + 0.4 * (tau * 3.0 * t).sin();
                        (env * (1500.0 * (tau * 220.0 * t).sin()
                            + 700.0 * (tau * 1700.0 * t).sin())) as i16
                    }
                })
                .collect()
        })
        .collect()
}

/// Pushes every speaker's next 20 ms frame every 20 ms, in real time, until `stop`.
fn push_audio(
    pushers: Vec<(u32, FramePusher)>,
    log: PushLog,
    stop: Arc<AtomicBool>,
    overflows: Arc<AtomicU64>,
) {
    let frames = signal_second();
    let period = Duration::from_millis(20);
    let start = Instant::now();
    let mut k: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period * k;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let index = k as usize % FRAMES_PER_SECOND;
        for (ssrc, pusher) in &pushers {
            let at = Instant::now();
            match pusher.try_push(frames[index].clone()) {
                Ok(()) => {
                    if index == 0 {
                        if let Ok(mut l) = log.lock() {
                            l.entry(*ssrc).or_default().push(at);
                        }
                    }
                }
                Err(EngineError::PushFull { .. }) => {
                    overflows.fetch_add(1, Ordering::Relaxed);
                }
                // The call is gone: nothing more to push to it.
                Err(_) => {}
            }
        }
        k = k.wrapping_add(1);
    }
}

/// Nearest-rank percentile; `None` for no data.
pub(crate) fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// A `/proc/self/status` field in kB (`VmRSS`, `VmHWM`); `None` where there is no /proc.
pub(crate) fn memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// CPU seconds used so far: the whole process, and its server and pusher threads.
struct CpuSnapshot {
    total: f64,
    server: f64,
    pusher: f64,
}

impl CpuSnapshot {
    fn take() -> Self {
        let (server, pusher) = thread_cpu();
        CpuSnapshot {
            total: process_cpu(),
            server,
            pusher,
        }
    }

    /// The engine's share: the process less the server's and the pusher's threads.
    fn engine(&self) -> f64 {
        self.total - self.server - self.pusher
    }

    fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            total: self.total - earlier.total,
            server: (self.server - earlier.server).max(0.0),
            pusher: (self.pusher - earlier.pusher).max(0.0),
        }
    }
}

/// User + system CPU seconds of the whole process (every thread, exited ones included).
pub(crate) fn process_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given, which is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of the live threads named like the server's runtime and the pusher.
fn thread_cpu() -> (f64, f64) {
    let (mut server, mut pusher) = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        let slot = if comm.starts_with(SERVER_THREAD) {
            &mut server
        } else if comm.starts_with(PUSHER_THREAD) {
            &mut pusher
        } else {
            continue;
        };
        *slot += task_cpu(&dir).unwrap_or(0.0);
    }
    (server, pusher)
}

/// One thread's CPU seconds: schedstat (nanoseconds) where the kernel has it, else stat's
/// clock ticks.
pub(crate) fn task_cpu(dir: &std::path::Path) -> Option<f64> {
    if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Some(ns as f64 / 1e9);
        }
    }
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The name may hold spaces and parentheses: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_background_stays_below_the_thresholds_and_the_burst_above() {
        let s = signal_second();
        assert_eq!(s.len(), FRAMES_PER_SECOND);
        assert!(s[0]
            .iter()
            .any(|x| x.unsigned_abs() > ONSET_THRESHOLD as u16));
        for f in &s[1..] {
            assert!(f
                .iter()
                .all(|x| x.unsigned_abs() < REARM_THRESHOLD as u16 / 2));
        }
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(process_cpu() >= 0.0);
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(memory("VmRSS").is_some_and(|kb| kb > 0));
        }
    }
}
