//! `groupcall serve`: the local server, until Ctrl+C.

use std::net::SocketAddr;
use std::time::Duration;

use groupcall_engine::media::{SrtpProfile, VideoCodec};
use groupcall_sfu::{LocalServer, LocalServerConfig, VideoOffer};

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
    /// SRTP profile to accept; repeat for several, in order of preference (default: all three).
    #[arg(long = "srtp", value_enum, value_name = "PROFILE")]
    srtp: Vec<Srtp>,
    /// Video codec the answers offer; repeat for several (default: all three). Clients send
    /// H.264 when it is offered and VP8 when only VP8 is.
    #[arg(long = "video-codec", value_enum, value_name = "CODEC")]
    video_codecs: Vec<Codec>,
    /// Where libwebrtc clients' bandwidth estimate starts, in kbit/s (x-google-start-bitrate in
    /// the answer); 0 leaves it to the client (300, only the lowest simulcast layer).
    #[arg(long, default_value_t = groupcall_sfu::forwarder::DEFAULT_START_BITRATE_KBPS)]
    video_start_kbps: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Codec {
    Vp8,
    Vp9,
    H264,
}

impl From<Codec> for VideoCodec {
    fn from(c: Codec) -> Self {
        match c {
            Codec::Vp8 => VideoCodec::Vp8,
            Codec::Vp9 => VideoCodec::Vp9,
            Codec::H264 => VideoCodec::H264,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Srtp {
    /// AEAD_AES_128_GCM
    Aes128Gcm,
    /// AEAD_AES_256_GCM
    Aes256Gcm,
    /// AES_CM_128_HMAC_SHA1_80
    Sha1_80,
}

impl From<Srtp> for SrtpProfile {
    fn from(s: Srtp) -> Self {
        match s {
            Srtp::Aes128Gcm => SrtpProfile::AeadAes128Gcm,
            Srtp::Aes256Gcm => SrtpProfile::AeadAes256Gcm,
            Srtp::Sha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
        }
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    let server = LocalServer::start(LocalServerConfig {
        control_addr: args.control,
        media_addr: args.media,
        dtls_start_delay: Duration::from_millis(args.dtls_delay_ms),
        srtp_profiles: if args.srtp.is_empty() {
            SrtpProfile::ALL.to_vec()
        } else {
            args.srtp.iter().map(|&p| p.into()).collect()
        },
        video: VideoOffer {
            codecs: if args.video_codecs.is_empty() {
                VideoCodec::ALL.to_vec()
            } else {
                args.video_codecs.iter().map(|&c| c.into()).collect()
            },
            start_bitrate_kbps: (args.video_start_kbps > 0).then_some(args.video_start_kbps),
        },
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
