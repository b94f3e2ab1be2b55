//! What a person sees while a call runs: one line per event, and a status line per
//! participant.

use groupcall_engine::{CallEvent, CallStats, ConnectionState, EndReason};

/// A level (0.0..=1.0) as a short bar.
pub fn bar(level: f32) -> String {
    const STEPS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let i = (level.clamp(0.0, 1.0) * 8.0).round() as usize;
    STEPS[i].to_string()
}

/// One line of a call's figures: who it is, its state, what it sent and heard.
pub fn line(name: &str, s: &CallStats) -> String {
    let state = if s.connected {
        "connected"
    } else {
        "connecting"
    };
    let mut out = format!(
        "{name:<10} {state:<10} ssrc {:>10}  sent {:>5}{}",
        s.ssrc,
        s.packets_sent,
        if s.muted { " (muted)" } else { "" }
    );
    if let Some(p) = s.source_position {
        out.push_str(&format!("  at {:.1}", p.as_secs_f64()));
        if let Some(d) = s.source_duration {
            out.push_str(&format!(" / {:.1}", d.as_secs_f64()));
        }
        out.push_str(" s");
        if s.paused {
            out.push_str(" (paused)");
        }
        if s.queued > 0 {
            out.push_str(&format!(" (+{} queued)", s.queued));
        }
    }
    if let Some(v) = &s.video_sent {
        out.push_str(&format!(
            "  video out {} frames, {} layer(s), estimate {} kbit/s",
            v.frames.iter().max().unwrap_or(&0),
            v.estimate_layers,
            v.estimate_bps / 1000
        ));
    }
    let r = &s.video_received;
    if r.frames > 0 || r.ignored > 0 {
        out.push_str(&format!(
            "  video in {} frames, {} decoded, {} dropped",
            r.frames, r.decoded, r.frames_dropped
        ));
    }
    for sp in &s.speakers {
        let who = sp.peer.map_or_else(
            || format!("ssrc {}", sp.ssrc),
            |p| p.dialog_id().to_string(),
        );
        out.push_str(&format!(
            " | from {who}: {} pkts, {} lost, jitter {:.1} ms, level {}",
            sp.packets,
            sp.lost,
            sp.jitter_ms,
            bar(sp.level)
        ));
        if let Some(r) = &sp.receive {
            // What the receive side did about the network: its delay, and the audio it
            // rebuilt (FEC), made up (concealment) or stretched.
            out.push_str(&format!(
                ", delay {:.0}/{:.0} ms, fec {} ms, concealed {} ms, stretched -{}/+{} ms",
                r.delay_ms,
                r.target_delay_ms,
                r.recovered_samples / 48,
                r.concealed_samples / 48,
                r.accelerated_samples / 48,
                r.slowed_samples / 48,
            ));
        }
    }
    out
}

/// An event as a line for a person, `None` for the frequent ones (levels).
pub fn event(name: &str, e: &CallEvent) -> Option<String> {
    let text = match e {
        CallEvent::State(ConnectionState::Connecting) => "connecting".into(),
        CallEvent::State(ConnectionState::Connected) => "connected".into(),
        CallEvent::State(ConnectionState::Disconnected) => {
            "disconnected: nothing heard from the server; waiting".into()
        }
        CallEvent::State(ConnectionState::Rejoining { attempt, cause }) => {
            format!("rejoining (attempt {attempt}): {cause}")
        }
        CallEvent::Rejoined { ssrc } => format!("rejoined with SSRC {ssrc}"),
        CallEvent::ParticipantJoined(p) => format!(
            "{} joined (SSRC {}{})",
            p.peer,
            p.source,
            if p.muted { ", muted" } else { "" }
        ),
        CallEvent::ParticipantLeft(p) => format!("{} left", p.peer),
        CallEvent::ParticipantUpdated(p) => format!(
            "{} is now {}",
            p.peer,
            if p.muted { "muted" } else { "unmuted" }
        ),
        CallEvent::Speaking { .. } => return None,
        CallEvent::SourceEnded { source } => format!("finished playing {source}"),
        CallEvent::SourceError { source, error } => {
            format!("cannot play {source}: {error}")
        }
        CallEvent::RecordingError { error } => format!("recording error: {error}"),
        CallEvent::DeviceFailed { device, error } => {
            format!("the speaker {device} failed ({error}); the call goes on without it")
        }
        CallEvent::Video {
            peer, kind, state, ..
        } => format!("{peer}'s {} {}", kind.as_str(), state.as_str()),
        CallEvent::VideoSourceEnded {
            kind,
            source,
            error: None,
        } => format!("finished showing {source} ({})", kind.as_str()),
        CallEvent::VideoSourceEnded {
            kind,
            source,
            error: Some(e),
        } => format!("cannot show {source} ({}): {e}", kind.as_str()),
        CallEvent::Ended { reason } => format!("call ended: {}", end_reason(reason)),
    };
    Some(format!("{name}: {text}"))
}

pub fn end_reason(r: &EndReason) -> String {
    r.to_string()
}
