//! `groupcall demo`: the whole thing offline. A local server on loopback, a speaker bot that
//! plays the bundled clip and shows the counter test pattern as its camera, and listener bots
//! that record both; live status, a report, a PNG of the waveforms, a contact sheet of received
//! pictures, and an exit code that says whether the audio and the video made it through.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use groupcall_engine::audio::{Channels, Source, SourceOptions};
use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::video::{pattern, Frame, ReceivedVideo, VideoSink, VideoSource};
use groupcall_engine::{Call, CallConfig, CallEvent, CallSummary, Engine};
use groupcall_sfu::{LocalServer, LocalServerConfig};

use crate::status;

/// The bundled clip: one second each of C5, E5, G5 and C6 (see engine/assets/README.md).
const CLIP: &[u8] = include_bytes!("../assets/demo-clip.wav");
const NOTES: [f64; 4] = [523.25, 659.25, 783.99, 1046.5];
const SPEAKER: i64 = 1001;
/// The speaker's camera: the counter pattern at this size and rate.
const VIDEO_SIZE: (u32, u32) = (640, 360);
const VIDEO_FPS: f32 = 30.0;
/// Decoded pictures waiting for the demo's loop, which takes them every 100 ms (3 at 30 fps).
const VIDEO_QUEUE: usize = 64;
/// The first listener keeps one picture this often (90 kHz RTP time) for the contact sheet.
const KEEP_EVERY: u32 = 45_000;
/// Pictures on the contact sheet, and its grid.
const SHEET_PICTURES: usize = 8;
const SHEET_COLUMNS: usize = 4;
const THUMB_WIDTH: u32 = 320;
/// A listener passes with at least this many distinct pictures (a second at 30 fps), in order,
/// and less than this share missing between its first and last.
const MIN_PICTURES: usize = 30;
const MAX_MISSING: f64 = 0.05;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the clip, the recordings, the waveform PNG and the contact sheet go.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// How many listener bots record the speaker.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub listeners: u32,
    /// No live status lines.
    #[arg(long)]
    pub quiet: bool,
}

struct Bot {
    name: String,
    call: Call,
    /// A listener's decoded pictures (the speaker has none).
    video: Option<Watch>,
}

/// What a listener saw of the speaker's camera.
struct Watch {
    rx: Receiver<ReceivedVideo>,
    /// Pictures taken from the sink.
    pictures: u64,
    unreadable: u64,
    /// Counters read, in arrival order.
    counters: Vec<u32>,
    /// Whether this listener keeps pictures for the contact sheet (the first one does).
    keep: bool,
    kept: Vec<Thumb>,
    last_kept: Option<u32>,
}

/// A bot after it left.
struct Left {
    name: String,
    summary: CallSummary,
    video: Option<Watch>,
    /// The speaker's audio packets it received.
    heard: u64,
}

/// A received picture, shrunk to the contact sheet's width and converted to RGB.
struct Thumb {
    counter: Option<u32>,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Watch {
    fn new(rx: Receiver<ReceivedVideo>, keep: bool) -> Self {
        Watch {
            rx,
            pictures: 0,
            unreadable: 0,
            counters: Vec::new(),
            keep,
            kept: Vec::new(),
            last_kept: None,
        }
    }

    /// Takes every picture waiting: counts it, reads its counter, keeps one now and then.
    fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.pictures += 1;
            let counter = pattern::read_counter(&v.frame);
            match counter {
                Some(n) => self.counters.push(n),
                None => self.unreadable += 1,
            }
            let due = self
                .last_kept
                .is_none_or(|t| v.rtp_timestamp.wrapping_sub(t) >= KEEP_EVERY);
            if self.keep && due {
                self.last_kept = Some(v.rtp_timestamp);
                let (width, height, rgb) = thumbnail(&v.frame, THUMB_WIDTH);
                self.kept.push(Thumb {
                    counter,
                    width,
                    height,
                    rgb,
                });
            }
        }
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let clip = args.out.join("demo-clip.wav");
    std::fs::write(&clip, CLIP).map_err(|e| format!("cannot write {}: {e}", clip.display()))?;

    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .map_err(|e| format!("cannot start the local server: {e}"))?;
    println!(
        "local server: control API {}, media {}",
        server.control_url(),
        server.media_addr()
    );
    let backend = |user: i64| -> Result<Arc<dyn Signaling>, String> {
        Ok(Arc::new(
            LocalSignaling::new(server.control_url(), PeerId::User(user))
                .map_err(|e| e.to_string())?,
        ))
    };
    let info = backend(1)?
        .create_call(
            None,
            &CreateCall {
                title: Some("groupcall demo".into()),
                ..CreateCall::default()
            },
        )
        .await
        .map_err(|e| format!("cannot create the call: {e}"))?;
    let call = CallRef::Id(info.id);
    println!("call {} created", info.id.id);

    let mut bots = Vec::new();
    for i in 0..args.listeners {
        let dir = args.out.join(format!("listener{}", i + 1));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (sink, rx) = VideoSink::channel(VIDEO_QUEUE);
        let config = CallConfig {
            record_dir: Some(dir.clone()),
            record_mix: Some(args.out.join(format!("listener{}-mix.wav", i + 1))),
            record_video_dir: Some(dir),
            video_sink: Some(sink),
            ..CallConfig::default()
        };
        let c = Engine::new(backend(2001 + i as i64)?)
            .join(call.clone(), config)
            .await
            .map_err(|e| format!("listener {} cannot join: {e}", i + 1))?;
        bots.push(Bot {
            name: format!("listener{}", i + 1),
            call: c,
            video: Some(Watch::new(rx, i == 0)),
        });
    }
    let source = Source::wav(
        &clip,
        SourceOptions {
            channels: Channels::Mono,
            looping: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let camera = VideoSource::pattern(VIDEO_SIZE.0, VIDEO_SIZE.1, VIDEO_FPS)
        .map_err(|e| format!("cannot make the test pattern: {e}"))?;
    let speaker = Engine::new(backend(SPEAKER)?)
        .join(
            call.clone(),
            CallConfig {
                source: Some(source),
                video: Some(camera),
                ..CallConfig::default()
            },
        )
        .await
        .map_err(|e| format!("the speaker cannot join: {e}"))?;
    bots.insert(
        0,
        Bot {
            name: "speaker".into(),
            call: speaker,
            video: None,
        },
    );

    // Run until the speaker's clip is done (and a little more, for the listeners' buffers).
    let started = Instant::now();
    let mut done_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u32;
    while done_at.is_none_or(|t| t.elapsed() < Duration::from_millis(600)) {
        tick.tick().await;
        ticks += 1;
        for (i, bot) in bots.iter_mut().enumerate() {
            if let Some(w) = &mut bot.video {
                w.drain();
            }
            while let Some(e) = bot.call.try_next_event() {
                if let Some(line) = status::event(&bot.name, &e) {
                    println!("{line}");
                }
                match e {
                    CallEvent::SourceEnded { .. } if i == 0 => done_at = Some(Instant::now()),
                    CallEvent::Ended { reason } => {
                        return Err(format!(
                            "{} was dropped from the call: {}",
                            bot.name,
                            status::end_reason(&reason)
                        ))
                    }
                    _ => {}
                }
            }
        }
        if !args.quiet && ticks.is_multiple_of(5) {
            for bot in &bots {
                let mut stats = bot.call.stats();
                // The engine lists every received SSRC among the speakers, video ones too
                // (unnamed, without audio figures); every audio sender here is decoded.
                stats
                    .speakers
                    .retain(|sp| sp.peer.is_some() || sp.receive.is_some());
                println!("  {}", status::line(&bot.name, &stats));
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the clip did not finish playing within 30 s: the speaker never connected or stalled".into());
        }
    }

    let speaker_ssrc = bots[0].call.ssrc();
    let mut summaries: Vec<Left> = Vec::new();
    for bot in bots {
        // The speaker's audio packets as the listener counted them, before the speaker's
        // leaving makes the engine forget them.
        let heard = bot
            .call
            .stats()
            .speakers
            .iter()
            .find(|sp| sp.ssrc == speaker_ssrc)
            .map_or(0, |sp| sp.packets);
        let s = bot
            .call
            .leave()
            .await
            .map_err(|e| format!("{} cannot leave: {e}", bot.name))?;
        let mut video = bot.video;
        if let Some(w) = &mut video {
            // The pictures decoded since the last tick, still in the queue.
            w.drain();
        }
        summaries.push(Left {
            name: bot.name,
            summary: s,
            video,
            heard,
        });
    }
    server.shutdown().await;

    println!("\nreport");
    let sent = read_mono(&clip)?;
    let mut ok = true;
    let mut video_failures = Vec::new();
    let mut first_received = None;
    if let Some(v) = &summaries[0].summary.stats.video_sent {
        println!(
            "  speaker: camera {}x{} at {VIDEO_FPS} fps, {} frames sent per layer (lowest first) {:?}",
            VIDEO_SIZE.0,
            VIDEO_SIZE.1,
            v.frames.iter().max().unwrap_or(&0),
            v.frames
        );
    }
    for Left {
        name,
        summary: s,
        video,
        heard,
    } in summaries.iter().skip(1)
    {
        match s.recordings.iter().find(|(ssrc, _)| *ssrc == speaker_ssrc) {
            None => {
                println!("  {name}: received nothing from the speaker (SSRC {speaker_ssrc})  FAIL");
                ok = false;
            }
            Some((_, path)) => {
                let got = read_mono(path)?;
                let verdict = check_notes(&got.0, got.1);
                println!(
                    "  {name}: {heard} audio packets received, {:.2} s recorded to {}  {}",
                    got.0.len() as f64 / got.1 as f64,
                    path.display(),
                    match &verdict {
                        Ok(()) => "OK: all four notes heard in order".to_string(),
                        Err(e) => format!("FAIL: {e}"),
                    }
                );
                ok &= verdict.is_ok();
                if let Some(mix) = &s.mix {
                    println!("  {name}: mix recorded to {}", mix.display());
                }
                if first_received.is_none() {
                    first_received = Some(got);
                }
            }
        }
        if let Some(w) = video {
            if let Err(e) = report_video(name, s, w) {
                video_failures.push(format!("{name}: {e}"));
            }
        }
    }
    if let Some(received) = &first_received {
        let png = args.out.join("waveforms.png");
        match plot(&png, &sent, received) {
            Ok(()) => println!(
                "  waveforms (sent above, received below): {}",
                png.display()
            ),
            Err(e) => println!("  could not draw {}: {e}", png.display()),
        }
    }
    let thumbs = summaries
        .iter()
        .find_map(|l| l.video.as_ref().filter(|w| w.keep))
        .map_or(&[][..], |w| &w.kept[..]);
    if !thumbs.is_empty() {
        let png = args.out.join("contact-sheet.png");
        match contact_sheet(&png, &spread(thumbs, SHEET_PICTURES)) {
            Ok(()) => println!(
                "  contact sheet (listener1's pictures, each with the counter it read): {}",
                png.display()
            ),
            Err(e) => println!("  could not draw {}: {e}", png.display()),
        }
    }
    match (ok, video_failures.is_empty()) {
        (true, true) => {
            println!("the audio and the video made it through");
            Ok(())
        }
        (true, false) => Err(format!(
            "the audio made it through, the video did not: {}",
            video_failures.join("; ")
        )),
        (false, true) => {
            Err("the video made it through, the audio did not (see the report above)".into())
        }
        (false, false) => Err(format!(
            "neither the audio (see the report above) nor the video made it through: {}",
            video_failures.join("; ")
        )),
    }
}

/// Prints a listener's video lines and says whether it passes.
fn report_video(name: &str, s: &CallSummary, w: &Watch) -> Result<(), String> {
    let r = &s.stats.video_received;
    let counters = Counters::of(&w.counters);
    let mut line = format!(
        "  {name}: video: {} packets, {} pictures decoded ({} without a readable counter, {} dropped by a full queue)",
        r.packets, w.pictures, w.unreadable, r.sink_dropped
    );
    if let Some(c) = &counters {
        line.push_str(&format!(
            ", {} distinct counters #{}..#{}, {:.1} % missing",
            c.distinct,
            c.first,
            c.last,
            c.missing * 100.0
        ));
    }
    println!("{line}");
    let verdict = check_counters(counters.as_ref()).and_then(|()| {
        if s.video_recordings.is_empty() {
            Err("no video recorded".to_string())
        } else {
            Ok(())
        }
    });
    let recorded = s
        .video_recordings
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>();
    println!(
        "  {name}: video recorded to {}  {}",
        if recorded.is_empty() {
            "(nothing)".to_string()
        } else {
            recorded.join(", ")
        },
        match &verdict {
            Ok(()) => format!(
                "OK: counters in order, under {:.0} % missing",
                MAX_MISSING * 100.0
            ),
            Err(e) => format!("FAIL: {e}"),
        }
    );
    verdict
}

/// What a listener's counters say.
#[derive(Debug, PartialEq)]
struct Counters {
    distinct: usize,
    first: u32,
    last: u32,
    /// The share of the counters from the first to the last that never came.
    missing: f64,
    /// The first counter that came after a later one, and that later one.
    out_of_order: Option<(u32, u32)>,
}

impl Counters {
    /// The figures of the counters read, in arrival order; `None` when none was read.
    fn of(counters: &[u32]) -> Option<Self> {
        let (&first, &last) = (counters.first()?, counters.last()?);
        let distinct = counters.iter().collect::<BTreeSet<_>>().len();
        let span = f64::from(last.saturating_sub(first)) + 1.0;
        Some(Counters {
            distinct,
            first,
            last,
            missing: (1.0 - distinct as f64 / span).max(0.0),
            out_of_order: counters
                .windows(2)
                .find(|w| w[1] <= w[0])
                .map(|w| (w[1], w[0])),
        })
    }
}

/// A listener passes with enough pictures, in order, few missing.
fn check_counters(c: Option<&Counters>) -> Result<(), String> {
    let Some(c) = c else {
        return Err("no picture of the speaker's camera with a counter was decoded".into());
    };
    if let Some((late, early)) = c.out_of_order {
        return Err(format!(
            "the counters are out of order (#{late} came after #{early})"
        ));
    }
    if c.distinct < MIN_PICTURES {
        return Err(format!(
            "only {} pictures with a counter (#{}..#{}); at least {MIN_PICTURES} expected",
            c.distinct, c.first, c.last
        ));
    }
    if c.missing >= MAX_MISSING {
        return Err(format!(
            "{:.1} % of the pictures between #{} and #{} missing (under {:.0} % expected)",
            c.missing * 100.0,
            c.first,
            c.last,
            MAX_MISSING * 100.0
        ));
    }
    Ok(())
}

/// At most `n` of `all`, spread evenly from the first to the last.
fn spread<T>(all: &[T], n: usize) -> Vec<&T> {
    if all.len() <= n || n < 2 {
        return all.iter().take(n.max(1)).collect();
    }
    (0..n)
        .map(|i| &all[(i * (all.len() - 1) + (n - 1) / 2) / (n - 1)])
        .collect()
}

/// One I420 pixel as RGB (BT.601, studio range: Y 16..235, U and V 16..240).
fn rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 1.164 * (f32::from(y) - 16.0);
    let d = f32::from(u) - 128.0;
    let e = f32::from(v) - 128.0;
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [
        clamp(c + 1.596 * e),
        clamp(c - 0.392 * d - 0.813 * e),
        clamp(c + 2.017 * d),
    ]
}

/// A picture `width` pixels wide (nearest neighbour) as RGB bytes, with its size.
fn thumbnail(f: &Frame, width: u32) -> (u32, u32, Vec<u8>) {
    let (w, h) = (f.width as usize, f.height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (tw, th) = (width as usize, (width as usize * h).div_ceil(w).max(1));
    let (luma, chroma) = f.data().split_at(w * h);
    let (u, v) = chroma.split_at(cw * ch);
    let mut out = Vec::with_capacity(tw * th * 3);
    for ty in 0..th {
        let sy = ty * h / th;
        for tx in 0..tw {
            let sx = tx * w / tw;
            let c = (sy / 2) * cw + sx / 2;
            out.extend(rgb(luma[sy * w + sx], u[c], v[c]));
        }
    }
    (tw as u32, th as u32, out)
}

/// A 3x5 pixel font for the labels (the bitmap backend has no fonts without extra crates):
/// one row per string, `#` lit; digits, and `?` for anything else.
fn glyph(c: char) -> [&'static str; 5] {
    match c {
        '0' => ["###", "#.#", "#.#", "#.#", "###"],
        '1' => [".#.", "##.", ".#.", ".#.", "###"],
        '2' => ["###", "..#", "###", "#..", "###"],
        '3' => ["###", "..#", "###", "..#", "###"],
        '4' => ["#.#", "#.#", "###", "..#", "..#"],
        '5' => ["###", "#..", "###", "..#", "###"],
        '6' => ["###", "#..", "###", "#.#", "###"],
        '7' => ["###", "..#", "..#", "..#", "..#"],
        '8' => ["###", "#.#", "###", "#.#", "###"],
        '9' => ["###", "#.#", "###", "..#", "###"],
        _ => ["###", "..#", ".##", "...", ".#."],
    }
}

/// The pictures in a grid, each with the counter it read (`?` when none) below it.
fn contact_sheet(path: &Path, thumbs: &[&Thumb]) -> Result<(), String> {
    use plotters::element::BitMapElement;
    use plotters::prelude::*;
    const GAP: u32 = 12;
    const SCALE: i32 = 5;
    let label = 5 * SCALE as u32 + 12;
    let cols = SHEET_COLUMNS.min(thumbs.len()).max(1) as u32;
    let rows = thumbs.len().div_ceil(cols as usize).max(1) as u32;
    let cell_h = thumbs.iter().map(|t| t.height).max().unwrap_or(1) + label;
    let (w, h) = (
        GAP + cols * (THUMB_WIDTH + GAP),
        GAP + rows * (cell_h + GAP),
    );
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    for (i, t) in thumbs.iter().enumerate() {
        let (col, row) = (i as u32 % cols, i as u32 / cols);
        let (x, y) = (
            (GAP + col * (THUMB_WIDTH + GAP)) as i32,
            (GAP + row * (cell_h + GAP)) as i32,
        );
        let picture = BitMapElement::with_ref((x, y), (t.width, t.height), &t.rgb)
            .ok_or("a picture's buffer does not match its size")?;
        root.draw(&picture).map_err(|e| e.to_string())?;
        let text = t.counter.map_or("?".to_string(), |n| n.to_string());
        let top = y + t.height as i32 + 6;
        for (k, c) in text.chars().enumerate() {
            let left = x + k as i32 * 4 * SCALE;
            for (r, bits) in glyph(c).iter().enumerate() {
                for (b, _) in bits.char_indices().filter(|(_, ch)| *ch == '#') {
                    let (px, py) = (left + b as i32 * SCALE, top + r as i32 * SCALE);
                    root.draw(&Rectangle::new(
                        [(px, py), (px + SCALE, py + SCALE)],
                        BLACK.filled(),
                    ))
                    .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// A WAV file as mono samples and its rate.
fn read_mono(path: &Path) -> Result<(Vec<i16>, u32), String> {
    let mut r =
        hound::WavReader::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let spec = r.spec();
    let ch = spec.channels.max(1) as usize;
    let all: Vec<i16> = r
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((all.chunks(ch).map(|f| f[0]).collect(), spec.sample_rate))
}

fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt() / 32768.0
}

/// Energy at one frequency (Goertzel).
fn energy(x: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0)
}

/// The recording holds the four notes, each in its own second, and is loud enough.
fn check_notes(x: &[i16], rate: u32) -> Result<(), String> {
    let block = rate as usize / 100;
    let start = x
        .chunks(block)
        .position(|b| rms(b) > 0.05)
        .ok_or("the recording is silent")?
        * block;
    let sec = rate as usize;
    if x.len() < start + 4 * sec - sec / 10 {
        return Err(format!(
            "only {:.2} s of sound, the clip is 4 s",
            (x.len() - start) as f64 / rate as f64
        ));
    }
    for (i, &want) in NOTES.iter().enumerate() {
        // The middle half of each second: clear of the note changes.
        let from = (start + i * sec + sec / 4).min(x.len());
        let to = (start + i * sec + 3 * sec / 4).min(x.len());
        let part = &x[from..to];
        let level = rms(part);
        if level < 0.05 {
            return Err(format!("second {} is too quiet (RMS {level:.3})", i + 1));
        }
        let e = energy(part, rate, want);
        for &other in NOTES.iter().filter(|&&f| f != want) {
            if energy(part, rate, other) * 10.0 > e {
                return Err(format!("second {} is not the note at {want} Hz", i + 1));
            }
        }
    }
    Ok(())
}

/// Sent and received waveforms, one above the other, as min/max envelopes per pixel column.
fn plot(path: &Path, sent: &(Vec<i16>, u32), received: &(Vec<i16>, u32)) -> Result<(), String> {
    use plotters::prelude::*;
    let (w, h) = (1200u32, 500u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let secs = |s: &(Vec<i16>, u32)| s.0.len() as f64 / s.1 as f64;
    let span = secs(sent).max(secs(received)).max(0.1);
    let panels = root.split_evenly((2, 1));
    for (area, (samples, rate), color) in [(&panels[0], sent, BLUE), (&panels[1], received, RED)] {
        let mut chart = ChartBuilder::on(area)
            .margin(8)
            .build_cartesian_2d(0f64..span, -1f64..1f64)
            .map_err(|e| e.to_string())?;
        let cols = w as usize;
        let per_col = ((span * *rate as f64) / cols as f64).ceil().max(1.0) as usize;
        chart
            .draw_series(samples.chunks(per_col).enumerate().map(|(i, c)| {
                let t = (i * per_col) as f64 / *rate as f64;
                let lo = *c.iter().min().unwrap_or(&0) as f64 / 32768.0;
                let hi = *c.iter().max().unwrap_or(&0) as f64 / 32768.0;
                PathElement::new(vec![(t, lo), (t, hi)], color)
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (span, 0.0)],
                BLACK.mix(0.3),
            )))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use groupcall_engine::video::pattern::QUADRANTS;

    #[test]
    fn bt601_studio_range_to_rgb() {
        assert_eq!(rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(rgb(126, 128, 128), [128, 128, 128]);
        // Pure red in BT.601 studio range is (81, 90, 240).
        let [r, g, b] = rgb(81, 90, 240);
        assert!(r >= 250 && g <= 5 && b <= 5, "{r} {g} {b}");
    }

    #[test]
    fn a_thumbnail_of_the_pattern_keeps_its_quadrants_and_counter_row() {
        let f = pattern::draw(640, 360, 77, Duration::ZERO).unwrap();
        let (w, h, px) = thumbnail(&f, 320);
        assert_eq!((w, h, px.len()), (320, 180, 320 * 180 * 3));
        let at = |x: usize, y: usize| {
            [
                px[(y * 320 + x) * 3],
                px[(y * 320 + x) * 3 + 1],
                px[(y * 320 + x) * 3 + 2],
            ]
        };
        // The inside of each quadrant, clear of the counter row and the moving bar.
        for (i, q) in QUADRANTS.iter().enumerate() {
            let (x, y) = (40 + (i % 2) * 160, 50 + (i / 2) * 90);
            assert_eq!(at(x, y), rgb(q.0, q.1, q.2), "quadrant {i}");
        }
        // A lower layer's picture scales up to the same width.
        let small = pattern::draw(160, 90, 77, Duration::ZERO).unwrap();
        let (sw, sh, _) = thumbnail(&small, 320);
        assert_eq!((sw, sh), (320, 180));
    }

    #[test]
    fn counters_pass_in_order_with_few_missing_and_fail_with_a_reason() {
        let check = |c: &[u32]| check_counters(Counters::of(c).as_ref());
        let mut c: Vec<u32> = (10..110).collect();
        c.retain(|n| n % 25 != 0); // 4 of 100 missing
        let figures = Counters::of(&c).unwrap();
        assert_eq!(
            (figures.first, figures.last, figures.distinct),
            (10, 109, 96)
        );
        assert!((figures.missing - 0.04).abs() < 1e-9);
        check(&c).unwrap();

        let mut sparse: Vec<u32> = (10..110).collect();
        sparse.retain(|n| n % 10 != 0); // 9 of 99 missing between #11 and #109
        let e = check(&sparse).unwrap_err();
        assert!(
            e.contains("9.1 % of the pictures between #11 and #109 missing"),
            "{e}"
        );

        let mut swapped: Vec<u32> = (10..110).collect();
        swapped.swap(40, 41);
        let e = check(&swapped).unwrap_err();
        assert!(e.contains("out of order (#50 came after #51)"), "{e}");
        let mut backwards: Vec<u32> = (10..110).collect();
        backwards.push(20);
        assert!(check(&backwards).unwrap_err().contains("out of order"));

        assert!(check(&[]).unwrap_err().contains("no picture"));
        assert!(check(&[1, 2, 3]).unwrap_err().contains("only 3"));
    }

    #[test]
    fn spread_picks_first_last_and_evenly_between() {
        let all: Vec<u32> = (0..10).collect();
        let got: Vec<u32> = spread(&all, 8).into_iter().copied().collect();
        assert_eq!(got.len(), 8);
        assert_eq!((got[0], got[7]), (0, 9));
        assert!(got.windows(2).all(|w| w[1] > w[0]), "{got:?}");
        assert_eq!(spread(&all[..3], 8).len(), 3);
    }

    #[test]
    fn the_contact_sheet_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let thumbs: Vec<Thumb> = [Some(3), None, Some(1234567890)]
            .into_iter()
            .map(|counter| {
                let (width, height, rgb) = thumbnail(
                    &pattern::draw(640, 360, counter.unwrap_or(0), Duration::ZERO).unwrap(),
                    THUMB_WIDTH,
                );
                Thumb {
                    counter,
                    width,
                    height,
                    rgb,
                }
            })
            .collect();
        let path = dir.path().join("sheet.png");
        contact_sheet(&path, &thumbs.iter().collect::<Vec<_>>()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
