//! `groupcall serve`: the local server, until Ctrl+C.

use std::net::SocketAddr;
use std::time::Duration;

use groupcall_sfu::{LocalServer, LocalServerConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Control API address (HTTP; loopback only). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8480")]
    control: SocketAddr,
    /// Media address (UDP) that participants connect to. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    media: SocketAddr,
    /// Milliseconds the server waits before its DTLS ClientHello (libwebrtc clients need ~20+).
    #[arg(long, default_value_t = 50)]
    dtls_delay_ms: u64,
}

pub async fn run(args: Args) -> Result<(), String> {
    let server = LocalServer::start(LocalServerConfig {
        control_addr: args.control,
        media_addr: args.media,
        dtls_start_delay: Duration::from_millis(args.dtls_delay_ms),
    })
    .await
    .map_err(|e| e.to_string())?;
    println!("groupcall local server");
    println!("  control API   {}", server.control_url());
    println!("  media (UDP)   {}", server.media_addr());
    println!("Ctrl+C stops it. The API is described in sfu/README.md.");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl+C: {e}"))?;
    println!("stopping");
    server.shutdown().await;
    Ok(())
}
