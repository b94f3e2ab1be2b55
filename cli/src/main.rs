//! `groupcall`: the command line of the engine. Each subcommand lives in its own module; this
//! file only parses arguments, sets up logging and turns errors into one line and an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backend;
mod benchvideo;
mod callcmd;
mod demo;
mod devices;
mod impair;
mod join;
mod load;
mod login;
mod serve;
mod soak;
mod status;
mod stdio;

/// A native participant engine for Telegram group calls, and a local Telegram-compatible server.
#[derive(Parser)]
#[command(name = "groupcall", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Offline demo: a local server, a bot playing a clip, bots recording it, a report.
    Demo(demo::Args),
    /// Run the local Telegram-compatible group-call server (control API and media).
    Serve(serve::Args),
    /// Join a call: play, record, until the end, --duration or Ctrl+C.
    Join(Box<join::Args>),
    /// Talk in a call as a person: the default microphone and speaker (or --mic NAME,
    /// --speaker NAME) with echo cancellation, noise suppression and gain control; who is
    /// speaking on the status line; `m` then Enter mutes, `q` then Enter leaves.
    Talk(Box<join::Args>),
    /// List the microphones and speakers (for --mic and --speaker).
    Devices,
    /// Log in to Telegram interactively and save the session.
    Login(login::Args),
    /// Create, start, invite to, list join-as peers of, or end a call.
    #[command(subcommand)]
    Call(callcmd::CallCommand),
    /// Load test: a local server and N participants in this process; CPU, memory, loss,
    /// join and audio latency figures.
    BenchLoad(load::Args),
    /// Video figures: CPU of a published camera and of a received stream, glass-to-glass
    /// latency from the counter drawn into each picture, memory across play/stop cycles.
    BenchVideo(benchvideo::Args),
    /// Soak test: thousands of join/play/switch/mute/leave cycles and forced rejoins, plus one
    /// long call, against a local server in this process; prints memory and open fds.
    Soak(soak::Args),
    /// A loopback UDP relay that loses, delays, reorders and duplicates RTP, for testing a
    /// receiver against a bad network.
    Impair(impair::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("groupcall: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Join(args) => join::run(*args).await,
            Command::Talk(args) => {
                let mut args = *args;
                if !args.play.is_empty() || args.playlist.is_some() {
                    Err(
                        "talk sends the microphone; to play files use `groupcall join --play`"
                            .to_string(),
                    )
                } else {
                    args.mic.get_or_insert_with(String::new);
                    args.speaker.get_or_insert_with(String::new);
                    args.keys = true;
                    join::run(args).await
                }
            }
            Command::Devices => devices::run(),
            Command::Login(args) => login::run(args).await,
            Command::Call(cmd) => callcmd::run(cmd).await,
            Command::BenchLoad(args) => load::run(args).await,
            Command::BenchVideo(args) => benchvideo::run(args).await,
            Command::Soak(args) => soak::run(args).await,
            Command::Impair(args) => impair::run(args).await,
        }
    });
    // Do not wait for blocking reads still pending (standard input in stdio signaling would
    // keep the process alive until its writer closes it).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groupcall: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    // rtc-sctp warns of every INIT it refuses; a libwebrtc peer (ntgcalls, Telegram's apps)
    // sends one from its end too, which the server's side refuses by design and counts
    // (media/src/datachannel.rs): a warning per join there says nothing wrong. -vv shows it.
    let default = match verbose {
        0 => "warn,rtc_sctp::endpoint=error",
        1 => "info,rtc_sctp::endpoint=error",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
