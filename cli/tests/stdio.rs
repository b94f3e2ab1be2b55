//! `groupcall join --signaling stdio`, driven the way a Telethon/Pyrogram bot would drive it:
//! this test reads the payload line, joins the real local server with it, writes the answer
//! and the roster back, while an engine bot plays a tone into the call; then the recording of
//! the stdio participant must hold that tone.

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use groupcall_engine::media::JoinPayload;
use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::{JoinOptions, PeerId, Signaling};
use groupcall_engine::{CallEvent, ConnectionState};
use serde_json::{json, Value};
use support::e2e::*;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_drives_stdio_signaling_and_the_recording_holds_the_tone() {
    let s = Setup::start().await;
    let (server, call) = (&s.server, &s.call);
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupcall"))
        .args([
            "join",
            "--signaling",
            "stdio",
            "--quiet",
            "--duration",
            "20",
            "--record-dir",
        ])
        .arg(&rec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("groupcall runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || -> Value {
        let line = timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
    };

    // The bridge: the payload goes to the server as the bot's own join...
    let first = next_line().await;
    let payload = JoinPayload::parse(&first["payload"].to_string()).expect("a valid join payload");
    let bridge = LocalSignaling::new(server.control_url(), PeerId::User(4242)).unwrap();
    let mut once = {
        let p = payload.clone();
        move || Ok(p.clone())
    };
    let joined = bridge
        .join(call, &mut once, &JoinOptions::default())
        .await
        .expect("the server takes the stdio payload");
    // A garbage line is reported and ignored; then the answer, as Telegram's string.
    stdin.write_all(b"{not json\n").await.unwrap();
    let answer = json!({ "answer": joined.answer_json });
    stdin
        .write_all(format!("{answer}\n").as_bytes())
        .await
        .unwrap();

    let mut saw_error = false;
    loop {
        let v = next_line().await;
        match v["event"].as_str() {
            Some("connected") => break,
            _ if v.get("error").is_some() => saw_error = true,
            _ => {}
        }
    }
    assert!(saw_error, "the malformed line was reported on stdout");

    // A speaker joins and plays; the bridge tells the stdio participant who it is.
    let mut speaker = s
        .join(1001, playing(tone_source(dir.path(), 880.0, 2, false)))
        .await;
    let ssrc = speaker.ssrc();
    let roster = json!({"participants": [{"source": ssrc as i32, "peer": 1001}]});
    stdin
        .write_all(format!("{roster}\n").as_bytes())
        .await
        .unwrap();
    timeout(Duration::from_secs(15), async {
        while let Some(e) = speaker.next_event().await {
            if matches!(e, CallEvent::SourceEnded { .. }) {
                return;
            }
            if let CallEvent::State(ConnectionState::Rejoining { cause: reason, .. }) = e {
                panic!("speaker lost its connection: {reason}");
            }
        }
    })
    .await
    .expect("the tone was played");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Leave through the protocol: the engine says which source left, and reports its files.
    stdin.write_all(b"{\"leave\": true}\n").await.unwrap();
    let mut left_source = None;
    let recording;
    loop {
        let v = next_line().await;
        if let Some(s) = v["leave"]["source"].as_i64() {
            left_source = Some(s as u32);
        }
        if v["event"] == "participant_joined" {
            assert_eq!(v["peer"], 1001, "{v}");
        }
        if v["event"] == "left" {
            recording = v["recordings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["source"].as_i64() == Some(ssrc as i32 as i64))
                .map(|r| r["path"].as_str().unwrap().to_owned());
            break;
        }
    }
    assert_eq!(left_source, Some(payload.audio_ssrc()));
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "groupcall exited with {status}");
    bridge.leave(call, payload.audio_ssrc()).await.unwrap();
    speaker.leave().await.unwrap();

    let path = recording.expect("the speaker was recorded");
    assert!(
        path.contains("peer1001_"),
        "named after the roster's peer: {path}"
    );
    let (got, _) = read_wav(std::path::Path::new(&path));
    assert!(got.len() > RATE as usize * 3 / 2, "{} samples", got.len());
    let mid = got.len() / 2;
    assert_frequency(
        &got[mid - RATE as usize / 2..mid + RATE as usize / 2],
        RATE,
        880.0,
        "stdio recording",
    );
}

/// A stdio player's progress: `progress` events say where the file is and how long it is;
/// `pause` holds the position, `seek` moves it, `skip` ends the track (one `source_ended`)
/// and the player leaves; a bad seek is an error line and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_player_reports_progress_and_takes_pause_seek_and_skip() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("ten.wav");
    let tone: Vec<i16> = (0..10 * RATE as usize)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / RATE as f64).sin()) as i16
        })
        .collect();
    write_wav(&wav, RATE, 1, &tone);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupcall"))
        .args([
            "join",
            "--signaling",
            "stdio",
            "--quiet",
            "--duration",
            "30",
            "--play",
        ])
        .arg(&wav)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("groupcall runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;
    async fn next_line(lines: &mut Lines) -> Value {
        let line = timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("stdout open");
        eprintln!("< {line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
    }
    // Progress lines come once a second; the next `n` of them.
    async fn progress(lines: &mut Lines, n: usize) -> Vec<Value> {
        let mut got = vec![];
        while got.len() < n {
            let v = next_line(lines).await;
            if v["event"] == "progress" {
                got.push(v);
            }
        }
        got
    }
    let payload = JoinPayload::parse(&next_line(&mut lines).await["payload"].to_string()).unwrap();
    let bridge = LocalSignaling::new(s.server.control_url(), PeerId::User(4243)).unwrap();
    let mut once = {
        let p = payload.clone();
        move || Ok(p.clone())
    };
    let joined = bridge
        .join(&s.call, &mut once, &JoinOptions::default())
        .await
        .unwrap();
    let mut say = async |v: Value| stdin.write_all(format!("{v}\n").as_bytes()).await.unwrap();
    say(json!({ "answer": joined.answer_json })).await;

    let p = progress(&mut lines, 2).await;
    assert_eq!(p[1]["duration"], 10.0, "{}", p[1]);
    let at = p[1]["position"].as_f64().unwrap();
    assert!(at > 0.0 && at < 3.0, "{}", p[1]);

    say(json!({"pause": true})).await;
    let p = progress(&mut lines, 3).await;
    assert_eq!(p[1]["paused"], true, "{}", p[1]);
    assert_eq!(
        p[1]["position"], p[2]["position"],
        "paused, the position holds"
    );

    say(json!({"seek": -1})).await;
    let v = loop {
        let v = next_line(&mut lines).await;
        if v.get("error").is_some() {
            break v;
        }
    };
    assert!(v.to_string().contains("seek"), "{v}");

    say(json!({"seek": 7})).await;
    say(json!({"pause": false})).await;
    // The first report after the seek comes within a second of it.
    let p = progress(&mut lines, 1).await;
    let at = p[0]["position"].as_f64().unwrap();
    assert!((7.0..8.3).contains(&at), "after the seek to 7 s: {}", p[0]);
    assert_eq!(p[0]["paused"], false);

    say(json!({"skip": true})).await;
    let mut ended = 0;
    loop {
        let v = next_line(&mut lines).await;
        if v["event"] == "source_ended" {
            ended += 1;
        }
        if v["event"] == "left" {
            break;
        }
    }
    assert_eq!(ended, 1, "one end for the skipped track");
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    bridge.leave(&s.call, payload.audio_ssrc()).await.unwrap();
}
