//! `groupcall demo`: the whole thing offline. A local server on loopback, a speaker bot that
//! plays the bundled clip and listener bots that record it; live status, a report, a PNG of
//! the waveforms, and an exit code that says whether the audio made it through.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use groupcall_engine::audio::{Channels, Source, SourceOptions};
use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{CallRef, CreateCall, PeerId, Signaling};
use groupcall_engine::{Call, CallConfig, CallEvent, CallSummary, Engine};
use groupcall_sfu::{LocalServer, LocalServerConfig};

use crate::status;

/// The bundled clip: one second each of C5, E5, G5 and C6 (see engine/assets/README.md).
const CLIP: &[u8] = include_bytes!("../assets/demo-clip.wav");
const NOTES: [f64; 4] = [523.25, 659.25, 783.99, 1046.5];
const SPEAKER: i64 = 1001;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the clip, the recordings and the waveform PNG go.
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
        let config = CallConfig {
            record_dir: Some(dir),
            record_mix: Some(args.out.join(format!("listener{}-mix.wav", i + 1))),
            ..CallConfig::default()
        };
        let c = Engine::new(backend(2001 + i as i64)?)
            .join(call.clone(), config)
            .await
            .map_err(|e| format!("listener {} cannot join: {e}", i + 1))?;
        bots.push(Bot {
            name: format!("listener{}", i + 1),
            call: c,
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
    let speaker = Engine::new(backend(SPEAKER)?)
        .join(
            call.clone(),
            CallConfig {
                source: Some(source),
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
                println!("  {}", status::line(&bot.name, &bot.call.stats()));
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the clip did not finish playing within 30 s: the speaker never connected or stalled".into());
        }
    }

    let speaker_ssrc = bots[0].call.ssrc();
    let mut summaries: Vec<(String, CallSummary)> = Vec::new();
    for bot in bots {
        let s = bot
            .call
            .leave()
            .await
            .map_err(|e| format!("{} cannot leave: {e}", bot.name))?;
        summaries.push((bot.name, s));
    }
    server.shutdown().await;

    println!("\nreport");
    let sent = read_mono(&clip)?;
    let mut ok = true;
    let mut first_received = None;
    for (name, s) in summaries.iter().skip(1) {
        let Some((_, path)) = s.recordings.iter().find(|(ssrc, _)| *ssrc == speaker_ssrc) else {
            println!("  {name}: received nothing from the speaker (SSRC {speaker_ssrc})  FAIL");
            ok = false;
            continue;
        };
        let got = read_mono(path)?;
        let verdict = check_notes(&got.0, got.1);
        println!(
            "  {name}: {} packets received, {:.2} s recorded to {}  {}",
            s.stats.packets_received,
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
    if ok {
        println!("the audio made it through");
        Ok(())
    } else {
        Err("the audio did not make it through (see the report above)".into())
    }
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
