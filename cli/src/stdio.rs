//! `groupcall join --signaling stdio`: the engine with bring-your-own signaling. Standard
//! output carries only JSON lines (the protocol of `groupcall_signaling::stdio`, plus events);
//! people read standard error.

use std::sync::Arc;
use std::time::Duration;

use groupcall_engine::signaling::stdio::{StdioCommand, StdioSignaling, STDIO_CALL};
use groupcall_engine::signaling::CallRef;
use groupcall_engine::video::VideoSource;
use groupcall_engine::{CallConfig, CallEvent, Engine};
use serde_json::json;

use crate::status;

pub async fn run(
    duration: Option<f64>,
    leave_at_end: bool,
    config: CallConfig,
    screen: Option<VideoSource>,
) -> Result<(), String> {
    let (signaling, mut commands) = StdioSignaling::new(
        tokio::io::BufReader::new(tokio::io::stdin()),
        tokio::io::stdout(),
    );
    let say = |v: serde_json::Value| {
        let s = signaling.clone();
        async move {
            if let Err(e) = s.write_line(&v).await {
                eprintln!("groupcall: {e}");
            }
        }
    };
    let engine = Engine::new(Arc::new(signaling.clone()));
    let mut call = match engine.join(CallRef::Id(STDIO_CALL), config).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot join: {e}");
            say(json!({"error": {"message": msg}})).await;
            return Err(msg);
        }
    };
    eprintln!("joined with SSRC {}", call.ssrc());
    if let Some(screen) = screen {
        // Writes a `presentation_payload` line and waits for its `presentation_answer`.
        match call.share_screen(screen).await {
            Ok(()) => eprintln!("sharing the screen"),
            Err(e) => {
                let msg = format!("cannot share the screen: {e}");
                say(json!({"error": {"message": msg}})).await;
            }
        }
    }
    let deadline =
        duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    // Where the source is, once a second while one plays.
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            e = call.next_event() => {
                let Some(e) = e else { break };
                if let Some(line) = status::event("call", &e) {
                    eprintln!("{line}");
                }
                say(e.to_json()).await;
                match e {
                    CallEvent::Ended { reason } => {
                        return Err(format!("the call ended: {}", status::end_reason(&reason)));
                    }
                    CallEvent::SourceEnded { .. } | CallEvent::SourceError { .. } if leave_at_end => break,
                    _ => {}
                }
            }
            c = commands.recv() => match c {
                None | Some(StdioCommand::Leave) => break,
                Some(StdioCommand::Mute(m)) => {
                    let r = if m { call.mute().await } else { call.unmute().await };
                    if let Err(e) = r {
                        say(json!({"error": {"message": format!("cannot {}: {e}", if m { "mute" } else { "unmute" })}})).await;
                    }
                }
                Some(StdioCommand::Pause(p)) => {
                    let r = if p { call.pause() } else { call.resume() };
                    if let Err(e) = r {
                        say(json!({"error": {"message": format!("cannot {}: {e}", if p { "pause" } else { "resume" })}})).await;
                    }
                }
                Some(StdioCommand::Seek(to)) => {
                    if let Err(e) = call.seek(to).await {
                        say(json!({"error": {"message": format!("cannot seek: {e}")}})).await;
                    }
                }
                Some(StdioCommand::Skip) => {
                    if let Err(e) = call.skip() {
                        say(json!({"error": {"message": format!("cannot skip: {e}")}})).await;
                    }
                }
                Some(StdioCommand::Invalid { line, problem }) => {
                    eprintln!("groupcall: ignored input line ({problem}): {line}");
                    say(json!({"error": {"message": format!("ignored input line: {problem}"), "line": line}})).await;
                }
            },
            _ = progress.tick() => {
                let s = call.stats();
                if let Some(p) = s.source_position {
                    say(json!({"event": "progress", "position": p.as_secs_f64(),
                        "duration": s.source_duration.map(|d| d.as_secs_f64()),
                        "queued": s.queued, "paused": s.paused})).await;
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
            r = &mut ctrl_c => {
                r.map_err(|e| format!("cannot wait for Ctrl+C: {e}"))?;
                break;
            }
        }
    }
    let summary = call
        .leave()
        .await
        .map_err(|e| format!("leaving failed: {e}"))?;
    let recordings: Vec<_> = summary
        .recordings
        .iter()
        .map(|(ssrc, p)| json!({"source": *ssrc as i32, "path": p.display().to_string()}))
        .collect();
    say(json!({"event": "left", "recordings": recordings,
        "mix": summary.mix.as_ref().map(|p| p.display().to_string()),
        "packets_sent": summary.stats.packets_sent, "packets_received": summary.stats.packets_received})).await;
    crate::join::report(&summary);
    Ok(())
}
