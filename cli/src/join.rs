//! `groupcall join`: join a call, play a source, record, until the end, a duration or Ctrl+C.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "devices")]
use groupcall_engine::audio::device::{MicrophoneConfig, SpeakerConfig};
use groupcall_engine::audio::source::{OpenOptions, RawFormat};
#[cfg(feature = "devices")]
use groupcall_engine::audio::ProcessingConfig;
use groupcall_engine::audio::{
    Application, Channels, EncoderConfig, LoudnessConfig, Source, SourceOptions,
};
use groupcall_engine::signaling::JoinOptions;
use groupcall_engine::video::VideoSource;
use groupcall_engine::{Call, CallConfig, CallEvent, CallSummary, Engine};

use crate::backend::{parse_peer, BackendArgs};
use crate::status;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The call: a Telegram @username, t.me link or chat id; with --local, the call id; none
    /// with --signaling stdio.
    #[arg(required_unless_present = "signaling")]
    pub call: Option<String>,
    /// Bring your own signaling: `stdio` prints the join payload as a JSON line and reads the
    /// server's answer (and roster updates) as JSON lines on standard input (see README).
    #[arg(long, value_enum, conflicts_with = "local")]
    pub signaling: Option<SignalingMode>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Play this file (WAV, Ogg/Opus, MP3, AAC, FLAC, Vorbis, ALAC, raw .pcm/.raw s16le;
    /// anything else through ffmpeg), an http(s) URL (streamed and decoded in-process; a web
    /// page through yt-dlp, when installed), or `-` for raw s16le on standard input. Repeat it
    /// to play several one after another, without gaps.
    #[arg(long, value_name = "FILE|-")]
    pub play: Vec<String>,
    /// Also play the files listed in this file, one path per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub playlist: Option<PathBuf>,
    /// Play the files in a random order.
    #[arg(long)]
    pub shuffle: bool,
    #[command(flatten)]
    pub raw: RawArgs,
    /// Start the file over when it ends.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Start playing this many seconds into the file (WAV and in-process decoded files).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, requires = "play")]
    pub start: Option<f64>,
    /// Record the mix of everyone to this WAV file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Record each participant to their own WAV file in this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Leave silences longer than this many seconds out of the --record-dir files (by default
    /// each file keeps the call's timeline and lines up with the mix).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub trim_silence: Option<f64>,
    /// Join muted (nothing is sent until unmuted). Without --play this is the default.
    #[arg(long)]
    pub muted: bool,
    /// Publish a camera: `pattern` (a generated test picture with a frame counter), a .y4m
    /// file (read natively), `-` (raw I420 on standard input: give --video-size and --fps) or
    /// any other video file (decoded by ffmpeg). Sent as three H.264 simulcast layers.
    #[arg(long, value_name = "FILE|pattern|-")]
    pub video: Option<String>,
    /// Share a screen from FILE (as --video takes it): a second, send-only connection with
    /// two H.264 simulcast layers, beside the camera and the sound.
    #[arg(long, value_name = "FILE|pattern|-")]
    pub screen: Option<String>,
    /// The published picture's size (default 1280x720; a .y4m file keeps its own).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub video_size: Option<(u32, u32)>,
    /// The published frame rate (default 30; a .y4m file keeps its own).
    #[arg(long, value_name = "N")]
    pub fps: Option<f32>,
    /// Decode every participant's camera and record each to a Y4M file in this directory
    /// (`peer<PEER>_ssrc<SSRC>_camera.y4m`; ffplay, mpv and VLC play them).
    #[arg(long, value_name = "DIR")]
    pub record_video_dir: Option<PathBuf>,
    /// Decode every participant's video without recording it (the figures are in the report):
    /// what an application that shows video costs.
    #[arg(long)]
    pub decode_video: bool,
    /// Join as this channel or chat (dialog id, e.g. -1001234567890).
    #[arg(long, value_name = "PEER")]
    pub join_as: Option<String>,
    /// Speaker invite hash (from a `?voicechat=` link).
    #[arg(long, value_name = "HASH")]
    pub invite_hash: Option<String>,
    /// Leave after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<f64>,
    /// Send stereo (the voice preset is mono, as Telegram's apps).
    #[arg(long)]
    pub stereo: bool,
    /// Send what this microphone hears (the default input without a NAME; `groupcall devices`
    /// lists them), with echo cancellation, noise suppression and gain control.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "", conflicts_with_all = ["play", "playlist"])]
    pub mic: Option<String>,
    /// Play the call on this speaker (the default output without a NAME).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub speaker: Option<String>,
    /// With --mic: no echo cancellation (for a headset, where the speaker cannot be heard).
    #[arg(long, requires = "mic")]
    pub no_echo_cancel: bool,
    /// With --mic: no noise suppression.
    #[arg(long, requires = "mic")]
    pub no_noise_suppression: bool,
    /// With --mic: no automatic gain control.
    #[arg(long, requires = "mic")]
    pub no_gain_control: bool,
    /// Read keys on standard input: `m` then Enter mutes or unmutes, `q` then Enter leaves.
    #[arg(long)]
    pub keys: bool,
    /// Normalise the loudness of what is played to this many LUFS (default -16 when given
    /// without a value), so tracks of a queue play at one level; a limiter keeps peaks under
    /// -1 dBFS.
    #[arg(long, value_name = "LUFS", num_args = 0..=1, default_missing_value = "-16", allow_hyphen_values = true)]
    pub normalize: Option<f32>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// No status line (events are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Send media through this UDP relay instead of straight to the server (e.g. a
    /// `groupcall impair` relay, to hear how the engine copes with a bad network).
    #[arg(long, value_name = "ADDR")]
    pub media_via: Option<std::net::SocketAddr>,
    /// On leaving, write the wall-clock times that anchor the audio to this file as JSON lines:
    /// `source_start` (the first frame sent) and `record_start` (sample 0 of --record), in
    /// microseconds since the Unix epoch.
    #[arg(long, value_name = "FILE")]
    pub clock_log: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalingMode {
    /// JSON lines on standard input and output.
    Stdio,
}

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RawArgs {
    /// Sample rate of raw input (standard input, .raw/.pcm files).
    #[arg(long, default_value_t = 48_000)]
    pub raw_rate: u32,
    /// Channels of raw input.
    #[arg(long, default_value_t = 2)]
    pub raw_channels: usize,
    /// Decode files with an ffmpeg process instead of in-process (for a format only ffmpeg
    /// reads, or to compare the two).
    #[arg(long)]
    pub ffmpeg: bool,
}

/// The encoder flags `join` and `bench-load` share, each over the preset's value.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EncoderArgs {
    /// Encoder settings: `voice` (32 kbit/s mono, libopus VOIP with in-band FEC, as
    /// Telegram's apps), `lean` (64 kbit/s mono CELT: a sixth of voice's encoder CPU, full band, no
    /// FEC; for many calls per host) or `music` (128 kbit/s stereo, libopus AUDIO, full
    /// band). The flags below override a preset's values.
    #[arg(long, value_enum, default_value_t = Preset::Voice)]
    pub preset: Preset,
    /// Opus bitrate in kbit/s, 6 to 510 (default: the preset's, 32 for voice, 128 for music).
    #[arg(long, value_name = "KBITS", value_parser = clap::value_parser!(u32).range(6..=510))]
    pub bitrate: Option<u32>,
    /// libopus complexity, 0 (least CPU) to 10 (default: the preset's, 3 for voice, 5 for
    /// music); docs/performance.md measures what each costs and sounds like.
    #[arg(long, value_name = "0-10", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub complexity: Option<u8>,
    /// Audio per packet, 20 (the default), 40 or 60 ms: longer packets mean fewer packets and
    /// more delay (ntgcalls sends 60 ms); a call that only sends then wakes once per packet,
    /// which with `--preset lean` saves about 15 % of its CPU.
    #[arg(long, value_name = "MS", value_parser = parse_packet_ms)]
    pub packet_ms: Option<u8>,
    /// How libopus codes: `voip` (SILK and hybrid, speech), `audio` (music) or `low-delay`
    /// (CELT alone: a fraction of the CPU, no in-band FEC). Default: the preset's.
    #[arg(long, value_enum)]
    pub application: Option<ApplicationArg>,
    /// The loss rate in % the in-band FEC is planned for (0 sends none; default: the
    /// preset's, 10 for voice).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub expected_loss: Option<u8>,
}

impl EncoderArgs {
    /// The preset's settings with the flags given on top.
    pub fn config(&self) -> EncoderConfig {
        let base = match self.preset {
            Preset::Voice => EncoderConfig::voice(),
            Preset::Lean => EncoderConfig::lean(),
            Preset::Music => EncoderConfig::music(),
        };
        EncoderConfig {
            bitrate: self.bitrate.map_or(base.bitrate, |k| k * 1000),
            complexity: self.complexity.unwrap_or(base.complexity),
            packet_ms: self.packet_ms.unwrap_or(base.packet_ms),
            application: self.application.map_or(base.application, Application::from),
            expected_loss_percent: self.expected_loss.unwrap_or(base.expected_loss_percent),
            ..base
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplicationArg {
    Voip,
    Audio,
    LowDelay,
}

impl From<ApplicationArg> for Application {
    fn from(a: ApplicationArg) -> Self {
        match a {
            ApplicationArg::Voip => Application::Voip,
            ApplicationArg::Audio => Application::Audio,
            ApplicationArg::LowDelay => Application::LowDelay,
        }
    }
}

/// `--packet-ms`: what the encoder takes (`EncoderConfig::packet_ms`).
pub(crate) fn parse_packet_ms(s: &str) -> Result<u8, String> {
    match s.trim() {
        "20" => Ok(20),
        "40" => Ok(40),
        "60" => Ok(60),
        _ => Err(format!("{s:?}: packets are 20, 40 or 60 ms")),
    }
}

/// A number of seconds that a timer can hold (finite, not negative, under a year).
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && (0.0..=31_536_000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s} seconds is out of range: give 0 to 31536000 (a year)"
        ))
    }
}

/// Opens what `--play` names (see `Source::open`).
pub async fn open_source(
    spec: &str,
    raw: RawArgs,
    options: SourceOptions,
) -> Result<Source, String> {
    let open = OpenOptions {
        raw: RawFormat {
            rate: raw.raw_rate,
            channels: raw.raw_channels,
        },
        ffmpeg: raw.ffmpeg,
        source: options,
    };
    Source::open(spec, open).await.map_err(|e| e.to_string())
}

/// A device named on the command line: empty is the default one.
#[cfg(feature = "devices")]
fn device_name(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_owned())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preset {
    #[default]
    Voice,
    Lean,
    Music,
}

/// Stereo with `--stereo` or the music preset, else mono.
fn send_channels(args: &Args) -> Channels {
    if args.stereo || args.encoder.preset == Preset::Music {
        Channels::Stereo
    } else {
        Channels::Mono
    }
}

/// The encoder settings of the preset, with --stereo, --bitrate and --complexity on top.
fn encoder_config(args: &Args, channels: Channels) -> EncoderConfig {
    EncoderConfig {
        channels,
        ..args.encoder.config()
    }
}

/// The engine settings the arguments ask for.
fn call_config(
    args: &Args,
    source: Option<Source>,
    channels: Channels,
) -> Result<CallConfig, String> {
    let has_source = source.is_some() || args.mic.is_some();
    #[cfg(not(feature = "devices"))]
    if args.mic.is_some() || args.speaker.is_some() {
        return Err("this groupcall was built without microphone and speaker support (the cargo feature `devices`)".into());
    }
    Ok(CallConfig {
        #[cfg(feature = "devices")]
        microphone: args.mic.as_deref().map(|n| MicrophoneConfig {
            device: device_name(n),
            processing: ProcessingConfig {
                echo_cancellation: !args.no_echo_cancel,
                noise_suppression: !args.no_noise_suppression,
                gain_control: !args.no_gain_control,
            },
        }),
        #[cfg(feature = "devices")]
        speaker: args.speaker.as_deref().map(|n| SpeakerConfig {
            device: device_name(n),
        }),
        muted: Some(args.muted || !has_source),
        source,
        encoder: encoder_config(args, channels),
        loudness: args.normalize.map(|target_lufs| LoudnessConfig {
            target_lufs,
            ..LoudnessConfig::default()
        }),
        record_dir: args.record_dir.clone(),
        record_video_dir: args.record_video_dir.clone(),
        video_sink: args
            .decode_video
            .then(|| groupcall_engine::video::VideoSink::callback(|_| {})),
        video: match &args.video {
            Some(spec) if args.signaling == Some(SignalingMode::Stdio) && spec == "-" => {
                return Err("--video - reads raw video from standard input, which --signaling stdio already uses for signaling; give a file or a named pipe".into());
            }
            Some(spec) => Some(
                VideoSource::open(spec, args.video_size, args.fps)
                    .map_err(|e| format!("--video {spec}: {e}"))?,
            ),
            None => None,
        },
        record_mix: args.record.clone(),
        record_trim_silence: args.trim_silence.map(Duration::from_secs_f64),
        media_via: args.media_via,
        ..CallConfig::default()
    })
}

/// `WxH`, as `--video-size` takes it.
pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WxH (e.g. 1280x720)"))?;
    let (w, h) = (
        w.parse::<u32>()
            .map_err(|_| format!("{s:?} is not WxH (e.g. 1280x720)"))?,
        h.parse::<u32>()
            .map_err(|_| format!("{s:?} is not WxH (e.g. 1280x720)"))?,
    );
    groupcall_engine::video::Frame::check_size(w, h).map_err(|e| e.to_string())?;
    if w % 4 != 0 || h % 4 != 0 {
        return Err(format!(
            "{w}x{h}: both sides must be multiples of 4 (a camera's lowest layer is a quarter of the size)"
        ));
    }
    Ok((w, h))
}

pub async fn run(args: Args) -> Result<(), String> {
    if args.screen.as_deref() == Some("-") && args.signaling == Some(SignalingMode::Stdio) {
        return Err("--screen - reads raw video from standard input, which --signaling stdio already uses for signaling; give a file or a named pipe".into());
    }
    if args.screen.as_deref() == Some("-") && args.video.as_deref() == Some("-") {
        return Err("--video - and --screen - cannot both read standard input; give one a file or a named pipe".into());
    }
    let screen = match &args.screen {
        Some(spec) => Some(
            VideoSource::open(spec, args.video_size, args.fps)
                .map_err(|e| format!("--screen {spec}: {e}"))?,
        ),
        None => None,
    };
    let channels = send_channels(&args);
    let mut tracks = playlist(&args)?;
    if args.signaling == Some(SignalingMode::Stdio) && tracks.contains(&"-".to_string()) {
        return Err("--play - reads audio from standard input, which --signaling stdio already uses for signaling; play a file or a named pipe instead".into());
    }
    if tracks.len() > 1 && (args.looping || args.signaling.is_some()) {
        return Err(format!(
            "{} files to play: --loop and --signaling stdio play one; give one --play",
            tracks.len()
        ));
    }
    let options = SourceOptions {
        channels,
        looping: args.looping,
    };
    let mut source = match tracks.pop_front() {
        Some(spec) => Some(open_source(&spec, args.raw, options).await?),
        None => None,
    };
    if let (Some(source), Some(start)) = (source.as_mut(), args.start) {
        source
            .seek(Duration::from_secs_f64(start))
            .map_err(|e| format!("--start: {e}"))?;
    }
    let has_source = source.is_some();
    // A player with nothing to record leaves when its source is done.
    let leave_at_end = has_source
        && !args.looping
        && args.record.is_none()
        && args.record_dir.is_none()
        && args.record_video_dir.is_none()
        && args.video.is_none();
    // A camera alone (no sound, nothing recorded) leaves when its video is done.
    let leave_after_video = args.video.is_some()
        && !has_source
        && args.record.is_none()
        && args.record_dir.is_none()
        && args.record_video_dir.is_none();
    let mut config = call_config(&args, source, channels)?;
    if args.signaling == Some(SignalingMode::Stdio) {
        return crate::stdio::run(args.duration, leave_at_end, config, screen).await;
    }
    let mut clock = ClockLog::new(args.clock_log.clone())?;
    let call_name = args.call.clone().unwrap_or_default();
    let backend = args.backend.connect().await?;
    let target = backend.resolve(&call_name).await?;
    config.join = JoinOptions {
        join_as: args.join_as.as_deref().map(parse_peer).transpose()?,
        invite_hash: args.invite_hash.clone().or(target.invite_hash.clone()),
        ..JoinOptions::default()
    };
    let engine = Engine::new(target.signaling.clone());
    let call = engine
        .join(target.call.clone(), config)
        .await
        .map_err(|e| format!("cannot join {call_name}: {e}"))?;
    eprintln!("joined {call_name} with SSRC {}", call.ssrc());
    if let Some(screen) = screen {
        call.share_screen(screen)
            .await
            .map_err(|e| format!("cannot share the screen: {e}"))?;
        eprintln!("sharing the screen");
    }
    let mut queue = Queue {
        tracks,
        raw: args.raw,
        options,
        playing: usize::from(has_source),
    };
    queue.refill(&call).await;
    let summary = drive(
        call,
        args.duration,
        LeaveWhen {
            sources_end: leave_at_end,
            video_ends: leave_after_video,
        },
        args.quiet,
        &mut clock,
        &mut queue,
        args.keys,
    )
    .await?;
    report(&summary);
    clock.update(&summary.stats)
}

/// The files `--play` (repeated) and `--playlist` name, shuffled with `--shuffle`.
fn playlist(args: &Args) -> Result<VecDeque<String>, String> {
    let mut tracks: Vec<String> = args.play.clone();
    if let Some(list) = &args.playlist {
        let text = std::fs::read_to_string(list)
            .map_err(|e| format!("cannot read the playlist {}: {e}", list.display()))?;
        tracks.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        if tracks.is_empty() {
            return Err(format!("the playlist {} names no file", list.display()));
        }
    }
    if tracks.len() > 1 && tracks.iter().any(|t| t == "-") {
        return Err("--play - (standard input) cannot be part of a list of files".into());
    }
    if args.shuffle {
        // Fisher-Yates, on a xorshift seeded from the clock: a play order needs no more.
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        for i in (1..tracks.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            tracks.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    Ok(tracks.into())
}

/// The files still to play. One is kept queued in the call behind the playing one, so the
/// next starts without a gap while at most two are open at a time.
pub struct Queue {
    tracks: VecDeque<String>,
    raw: RawArgs,
    options: SourceOptions,
    /// Sources handed to the call that have not finished.
    playing: usize,
}

impl Queue {
    /// Opens the next file or URL (files off the async runtime: opening reads and primes them) and queues
    /// it in the call, unless one is queued already. A file that cannot be opened is reported
    /// and skipped.
    async fn refill(&mut self, call: &Call) {
        while self.playing < 2 {
            let Some(spec) = self.tracks.pop_front() else {
                return;
            };
            let (raw, options) = (self.raw, self.options);
            let opened = open_source(&spec, raw, options).await;
            match opened {
                Ok(source) => match call.enqueue(source).await {
                    Ok(()) => self.playing += 1,
                    Err(e) => eprintln!("cannot queue {spec}: {e}"),
                },
                Err(e) => eprintln!("skipping {spec}: {e}"),
            }
        }
    }

    /// A source finished; true when nothing is left to play.
    async fn finished_one(&mut self, call: &Call) -> bool {
        self.playing = self.playing.saturating_sub(1);
        self.refill(call).await;
        self.playing == 0
    }
}

/// Prints events and a status line until the call ends, `duration` passes, the source ends
/// (as `leave` says) or Ctrl+C; then leaves.
/// When `drive` leaves on its own.
pub struct LeaveWhen {
    /// After the last audio source.
    pub sources_end: bool,
    /// When the camera's source ends.
    pub video_ends: bool,
}

pub async fn drive(
    mut call: Call,
    duration: Option<f64>,
    leave: LeaveWhen,
    quiet: bool,
    clock: &mut ClockLog,
    queue: &mut Queue,
    keys: bool,
) -> Result<CallSummary, String> {
    let deadline =
        duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    // Keys for a person at the terminal: a line each (`m` mutes or unmutes, `q` leaves).
    let mut lines = keys.then(|| {
        use tokio::io::AsyncBufReadExt;
        tokio::io::BufReader::new(tokio::io::stdin()).lines()
    });
    let mut muted = call.stats().muted;
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    // Made once: a Ctrl+C that lands while an event is handled is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            e = call.next_event() => match e {
                Some(e) => {
                    if let Some(line) = status::event("call", &e) {
                        eprintln!("{line}");
                    }
                    match e {
                        CallEvent::Ended { reason } => {
                            return Err(format!("the call ended: {}", status::end_reason(&reason)));
                        }
                        CallEvent::VideoSourceEnded { .. } if leave.video_ends => break,
                        CallEvent::SourceEnded { .. } | CallEvent::SourceError { .. } => {
                            // The next file is queued here; the call leaves after the last.
                            let nothing_left = queue.finished_one(&call).await;
                            if nothing_left && leave.sources_end {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                None => return Err("the call ended".into()),
            },
            _ = status_tick.tick() => {
                let stats = call.stats();
                clock.update(&stats)?;
                if !quiet {
                    eprintln!("{}", status::line("status", &stats));
                }
            }
            line = async { lines.as_mut().expect("guarded").next_line().await }, if lines.is_some() => {
                match line.ok().flatten().as_deref().map(str::trim) {
                    None | Some("q") => break,
                    Some("m") => {
                        let r = if muted { call.unmute().await } else { call.mute().await };
                        match r {
                            Ok(()) => {
                                muted = !muted;
                                eprintln!("{}", if muted { "muted" } else { "unmuted" });
                            }
                            Err(e) => eprintln!("cannot {}: {e}", if muted { "unmute" } else { "mute" }),
                        }
                    }
                    Some(other) => eprintln!("keys: m then Enter mutes or unmutes, q then Enter leaves (not {other:?})"),
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
            r = &mut ctrl_c => {
                r.map_err(|e| format!("cannot wait for Ctrl+C: {e}"))?;
                eprintln!("leaving (Ctrl+C)");
                break;
            }
        }
    }
    call.leave()
        .await
        .map_err(|e| format!("leaving failed: {e}"))
}

/// The `--clock-log` file: one JSON line per anchor, written as soon as the call has it (so
/// a process that is killed still leaves what it had).
pub struct ClockLog {
    path: Option<PathBuf>,
    source_start: bool,
    record_start: bool,
}

impl ClockLog {
    /// Creates (truncates) the file now, so a path that cannot be written is refused at once.
    pub fn new(path: Option<PathBuf>) -> Result<Self, String> {
        if let Some(p) = &path {
            std::fs::write(p, "")
                .map_err(|e| format!("cannot write the clock log {}: {e}", p.display()))?;
        }
        Ok(ClockLog {
            path,
            source_start: false,
            record_start: false,
        })
    }

    pub fn update(&mut self, stats: &groupcall_engine::CallStats) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let micros = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros())
        };
        let mut text = String::new();
        for (event, at, done) in [
            (
                "source_start",
                stats.source_started_at,
                &mut self.source_start,
            ),
            ("record_start", stats.mix_started_at, &mut self.record_start),
        ] {
            if let (Some(at), false) = (at, *done) {
                *done = true;
                text += &format!("{{\"event\":\"{event}\",\"unix_us\":{}}}\n", micros(at));
            }
        }
        if text.is_empty() {
            return Ok(());
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write the clock log {}: {e}", path.display()))
    }
}

pub fn report(summary: &CallSummary) {
    eprintln!(
        "left: sent {} packets, received {}",
        summary.stats.packets_sent, summary.stats.packets_received
    );
    for (ssrc, path) in &summary.recordings {
        eprintln!("recorded SSRC {ssrc} to {}", path.display());
    }
    for path in &summary.video_recordings {
        eprintln!("recorded video to {}", path.display());
    }
    if let Some(v) = &summary.stats.video_sent {
        eprintln!(
            "video sent: {} frames per layer (lowest first) {:?}, {} packets, {} retransmitted, {} keyframes ({} asked for)",
            v.frames.iter().max().unwrap_or(&0), v.frames, v.packets, v.retransmitted, v.keyframes, v.keyframe_requests
        );
    }
    let r = &summary.stats.video_received;
    if r.frames > 0 {
        eprintln!(
            "video received: {} frames, {} decoded, {} dropped, {} NACKs sent, {} RTX received, {} keyframes asked for",
            r.frames, r.decoded, r.frames_dropped, r.nacks_sent, r.rtx_packets, r.keyframe_requests
        );
    }
    if let Some(mix) = &summary.mix {
        eprintln!("recorded the mix to {}", mix.display());
    }
    for e in &summary.errors {
        eprintln!("recording error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::{open_source, parse_seconds, RawArgs};
    use groupcall_engine::audio::{Channels, SourceOptions};

    /// MP3, FLAC, Ogg Vorbis, AAC (MP4 and ADTS) and ALAC open in-process (never through ffmpeg, whose sources are named
    /// `ffmpeg: …`); text with an audio extension falls through to ffmpeg as a last resort.
    #[tokio::test]
    async fn compressed_files_play_without_ffmpeg() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/fixtures");
        let options = SourceOptions {
            channels: Channels::Mono,
            looping: false,
        };
        let raw = RawArgs {
            raw_rate: 48_000,
            raw_channels: 1,
            ffmpeg: false,
        };
        for f in [
            "tone440.mp3",
            "tone550.flac",
            "tone660.ogg",
            "tone770.m4a",
            "tone880.aac",
            "tone330_alac.m4a",
        ] {
            let path = format!("{dir}/{f}");
            let source = open_source(&path, raw, options).await.unwrap();
            assert_eq!(source.name(), path, "{f} decoded in-process");
        }
    }

    #[test]
    fn durations_a_timer_cannot_hold_are_refused() {
        assert_eq!(parse_seconds("2.5"), Ok(2.5));
        assert_eq!(parse_seconds("0"), Ok(0.0));
        for bad in ["inf", "NaN", "-1", "1e12", "soon"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    fn try_args(extra: &[&str]) -> Result<super::Args, clap::Error> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: super::Args,
        }
        let mut argv = vec!["join", "1"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    fn args(extra: &[&str]) -> super::Args {
        try_args(extra).unwrap()
    }

    /// A preset is the base; each encoder flag overrides its one field, and `--stereo` or the
    /// music preset make it stereo.
    #[test]
    fn encoder_flags_override_their_preset() {
        use groupcall_engine::audio::{Application, Channels, EncoderConfig};
        let config = |extra: &[&str]| {
            let a = args(extra);
            super::encoder_config(&a, super::send_channels(&a))
        };
        assert_eq!(config(&[]), EncoderConfig::voice());
        assert_eq!(config(&["--preset", "lean"]), EncoderConfig::lean());
        assert_eq!(config(&["--preset", "music"]), EncoderConfig::music());
        let tuned = config(&[
            "--preset",
            "lean",
            "--bitrate",
            "48",
            "--complexity",
            "3",
            "--packet-ms",
            "60",
            "--stereo",
        ]);
        assert_eq!(
            tuned,
            EncoderConfig {
                bitrate: 48_000,
                complexity: 3,
                packet_ms: 60,
                channels: Channels::Stereo,
                ..EncoderConfig::lean()
            }
        );
        let voice = config(&["--application", "low-delay", "--expected-loss", "0"]);
        assert_eq!(voice.application, Application::LowDelay);
        assert_eq!(voice.expected_loss_percent, 0);
        assert!(
            voice.fec,
            "FEC stays asked for; libopus sends none at 0 % planned loss"
        );
        for bad in [
            &["--bitrate", "5"][..],
            &["--bitrate", "511"],
            &["--complexity", "11"],
            &["--expected-loss", "101"],
            &["--preset", "loud"],
            &["--application", "speech"],
        ] {
            assert!(try_args(bad).is_err(), "{bad:?} was taken");
        }
    }

    /// `--play` repeated and `--playlist` (comments and blank lines skipped) make one list, in
    /// order; `--shuffle` keeps the same files; standard input cannot be part of a list.
    #[test]
    fn play_lists_come_from_arguments_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "# my list\nc.mp3\n\n  d.flac  \n").unwrap();
        let l = list.to_str().unwrap();
        let tracks = super::playlist(&args(&[
            "--play",
            "a.wav",
            "--play",
            "b.ogg",
            "--playlist",
            l,
        ]))
        .unwrap();
        assert_eq!(tracks, ["a.wav", "b.ogg", "c.mp3", "d.flac"]);
        let mut shuffled: Vec<String> =
            super::playlist(&args(&["--play", "a.wav", "--playlist", l, "--shuffle"]))
                .unwrap()
                .into();
        shuffled.sort();
        assert_eq!(shuffled, ["a.wav", "c.mp3", "d.flac"]);
        assert!(super::playlist(&args(&["--play", "-", "--play", "a.wav"])).is_err());
        let missing = dir.path().join("none.txt");
        let err = super::playlist(&args(&["--playlist", missing.to_str().unwrap()])).unwrap_err();
        assert!(err.contains("none.txt"), "{err}");
    }
}
