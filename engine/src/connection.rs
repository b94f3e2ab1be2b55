//! One connection of a call to the server: the join that makes it (a fresh payload, retried
//! with new SSRCs on duplicates), the socket and the media transport it leads to, and the audio
//! sender on it. A rejoin replaces the whole connection; nothing in it outlives one.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use groupcall_media::{
    JoinPayload, LocalEndpoint, LocalIdentity, RemotePeer, RtcAnswer, SenderInfo, ServerAnswer,
    Setup, Transport, VideoCodec, VideoPublish,
};
use groupcall_signaling::{CallId, CallRef, JoinOptions, Joined, Signaling};
use tokio::net::UdpSocket;

use crate::audio::AudioSender;
use crate::call::CallConfig;
use crate::error::{Error, Result};
use crate::socket::CallSocket;
use crate::video::send::VideoSender;

/// A successful join: the accepted payload's identity and the transport it leads to.
pub(crate) struct Connection {
    pub socket: CallSocket,
    pub transport: Transport,
    pub sender: AudioSender,
    /// The camera's RTP side, when the join declared one.
    pub video: Option<VideoSender>,
    pub ssrc: u32,
    pub call_id: Option<CallId>,
    /// The server's answer, to tell a repeat of it from a new one.
    pub answer_json: String,
}

pub(crate) type JoinFuture = Pin<Box<dyn Future<Output = Result<(Joined, LocalIdentity)>> + Send>>;

/// Sends the join with fresh payloads (a new one per SSRC-duplicate retry) and returns the
/// accepted payload's identity with the answer.
pub(crate) async fn join_once(
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    options: JoinOptions,
    publish: VideoPublish,
) -> Result<(Joined, LocalIdentity)> {
    let mut made: Vec<LocalIdentity> = Vec::new();
    let joined = {
        let mut factory = || {
            let identity = LocalIdentity::generate()?;
            let payload = JoinPayload::new(&identity, publish);
            made.push(identity);
            Ok(payload)
        };
        signaling.join(&call, &mut factory, &options).await?
    };
    let ssrc = joined.payload.audio_ssrc();
    let identity = made
        .into_iter()
        .find(|i| i.audio_ssrc == ssrc)
        .ok_or_else(|| {
            Error::CallEnded(format!(
                "the server accepted SSRC {ssrc}, which this engine never offered"
            ))
        })?;
    Ok((joined, identity))
}

/// The local address that routes to `target`: the transport's one host candidate must be a
/// concrete address, and libwebrtc-style servers learn it from our checks.
fn local_ip_towards(target: SocketAddr) -> std::io::Result<IpAddr> {
    let unspecified: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(unspecified)?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

pub(crate) fn connect(
    joined: &Joined,
    identity: &LocalIdentity,
    config: &CallConfig,
    publish: VideoPublish,
    now: Instant,
) -> Result<Connection> {
    let rtc: &RtcAnswer = match &joined.answer {
        ServerAnswer::Rtc(r) => r,
        _ => {
            return Err(Error::StreamUnsupported {
                answer: joined.answer_json.clone(),
            })
        }
    };
    let mut remote = RemotePeer::from_answer(rtc)?;
    if let Some(via) = config.media_via {
        remote.candidates = vec![via];
    }
    let mut last_err = None;
    let mut bound = None;
    for &candidate in &remote.candidates {
        match local_ip_towards(candidate).and_then(|ip| {
            let s = std::net::UdpSocket::bind((ip, 0))?;
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => {
                bound = Some((s, candidate));
                break;
            }
            Err(e) => last_err = Some((candidate, e)),
        }
    }
    let (std_socket, first) = match (bound, last_err) {
        (Some(b), _) => b,
        (None, Some((c, e))) => {
            return Err(Error::Socket {
                target: c.to_string(),
                source: e,
            })
        }
        (None, None) => {
            return Err(Error::Media(groupcall_media::Error::NoUsableCandidate));
        }
    };
    // One host candidate of one family: pairs with the other family could never work.
    remote.candidates.retain(|c| c.is_ipv4() == first.is_ipv4());
    let local_addr = std_socket.local_addr().map_err(|e| Error::Socket {
        target: first.to_string(),
        source: e,
    })?;
    let socket = UdpSocket::from_std(std_socket).map_err(|e| Error::Socket {
        target: first.to_string(),
        source: e,
    })?;
    let mut transport = Transport::new(
        config.transport.clone(),
        LocalEndpoint {
            addr: local_addr,
            ice: identity.ice.clone(),
            certificate: identity.certificate.clone(),
            setup: Setup::Passive,
        },
        remote,
        now,
    )?;
    let ssrc = identity.audio_ssrc;
    // Muted or listening only, reports still come from the SSRC the payload declared.
    transport.set_report_ssrc(ssrc);
    let sender = AudioSender::new(
        ssrc,
        transport.audio_payload_type(),
        &config.encoder,
        rand::random(),
        rand::random(),
    )?;
    let video = match publish {
        VideoPublish::None => None,
        publish => {
            let codec = video_codec(rtc)?;
            let start = start_bitrate(rtc, codec);
            Some(VideoSender::new(ssrc, publish, codec, start)?)
        }
    };
    Ok(Connection {
        socket: CallSocket::new(socket),
        transport,
        sender,
        video,
        ssrc,
        call_id: joined.call,
        answer_json: joined.answer_json.clone(),
    })
}

/// The codec to publish with: the first this build encodes (H.264, then VP8) that the server
/// takes. A server that announces no video section takes Telegram's fixed set.
fn video_codec(answer: &RtcAnswer) -> Result<VideoCodec> {
    let ours = crate::video::simulcast::encodable();
    let offered: Vec<&str> = answer
        .video
        .as_ref()
        .map(|v| {
            v.media
                .payload_types
                .iter()
                .map(|p| p.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let takes = |c: VideoCodec| {
        offered.is_empty() || offered.iter().any(|n| n.eq_ignore_ascii_case(c.name()))
    };
    if let Some(c) = ours.iter().copied().find(|&c| takes(c)) {
        return Ok(c);
    }
    let ours: Vec<&str> = ours.iter().map(|c| c.name()).collect();
    Err(Error::Codec {
        codec: "video",
        reason: format!(
            "the server takes {} video and this build encodes {}: build groupcall-engine with the feature for one the server takes (`h264`, `vp8`)",
            offered.join(", "),
            if ours.is_empty() { "none".to_string() } else { ours.join(", ") }
        ),
    })
}

/// `x-google-start-bitrate` (kbit/s) of `codec` in the answer, in bits per second: where the
/// server says the estimate may start (docs/protocol.md §12.11).
fn start_bitrate(answer: &RtcAnswer, codec: VideoCodec) -> Option<u64> {
    let video = answer.video.as_ref()?;
    let p = video
        .media
        .payload_types
        .iter()
        .find(|p| p.id == codec.payload_type())?;
    let v = p.parameters.get("x-google-start-bitrate")?;
    let kbps = v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))?;
    Some(kbps.clamp(30, 10_000) * 1000)
}

impl Connection {
    /// A sender report for our source, once something was sent on this connection.
    pub(crate) fn send_report(&mut self) {
        if !self.transport.is_connected() {
            return;
        }
        let c = self;
        let sent = c.sender.stats();
        let wall = SystemTime::now();
        let mut reports = Vec::new();
        if sent.packets > 0 {
            reports.push(SenderInfo {
                ssrc: c.ssrc,
                rtp_time: c.sender.rtp_timestamp(),
                packets: sent.packets as u32,
                octets: sent.payload_bytes as u32,
            });
        }
        // Video's reports map its RTP clock onto the same wallclock as the audio's: what a
        // receiver lines the two up with (lip sync).
        if let Some(v) = &c.video {
            reports.extend(v.sender_reports(Instant::now()));
        }
        for info in reports {
            if let Err(e) = c.transport.send_sender_report(&info, wall) {
                tracing::debug!("sender report not sent: {e}");
            }
        }
    }
}
