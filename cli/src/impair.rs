//! `groupcall impair`: a loopback UDP relay that loses, delays, reorders and duplicates RTP
//! (`groupcall_sfu::impair`), until Ctrl+C or SIGTERM. Point a participant's media at it with
//! `groupcall join … --media-via ADDR` (or rewrite the answer's candidates, for other clients).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use groupcall_sfu::impair::{Direction, ImpairConfig, Relay};

#[derive(clap::Args)]
pub struct Args {
    /// The server's media address (UDP), where the relay forwards to.
    #[arg(long)]
    to: SocketAddr,
    /// Where clients send their media. Port 0 picks a free port (printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Which RTP is impaired: down (server to client), up or both.
    #[arg(long, default_value = "down")]
    direction: Direction,
    /// Long-run share of RTP packets lost, 0.0..1.0.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Mean loss burst in packets: 1 for independent losses, more for Gilbert–Elliott bursts.
    #[arg(long, default_value_t = 1.0)]
    burst: f64,
    /// Each packet is delayed by a random 0..J ms (which reorders them).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Share of packets held back an extra --reorder-ms, so later ones overtake them.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    #[arg(long, default_value_t = 30)]
    reorder_ms: u64,
    /// Share of packets sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Loss and delays are a function of the seed and each packet's SSRC and sequence number.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn run(args: Args) -> Result<(), String> {
    let config = ImpairConfig {
        loss: args.loss,
        burst: args.burst,
        jitter: Duration::from_millis(args.jitter_ms),
        reorder: args.reorder,
        reorder_delay: Duration::from_millis(args.reorder_ms),
        duplicate: args.duplicate,
        seed: args.seed,
        direction: args.direction,
    };
    config.validate()?;
    let relay = Relay::start(args.listen, args.to, config)
        .await
        .map_err(|e| format!("cannot start the relay on {}: {e}", args.listen))?;
    println!(
        "impair: listening on {}, relaying to {} ({:?}: loss {} burst {} jitter {} ms reorder {} duplicate {} seed {})",
        relay.local_addr(),
        args.to,
        args.direction,
        args.loss,
        args.burst,
        args.jitter_ms,
        args.reorder,
        args.duplicate,
        args.seed
    );
    wait_for_stop().await?;
    let s = relay.stats();
    println!(
        "impair: {}; STUN up {} down {}",
        s.summary(),
        s.stun_up.load(Ordering::Relaxed),
        s.stun_down.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Ctrl+C or SIGTERM (scripts stop background jobs with the latter).
async fn wait_for_stop() -> Result<(), String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot wait for Ctrl+C: {e}")),
        _ = term.recv() => Ok(()),
    }
}
