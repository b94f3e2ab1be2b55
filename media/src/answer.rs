//! The server answer: the JSON in `updateGroupCallConnection.params` (docs/protocol.md §2).
//!
//! Parsed by hand rather than by serde derive so that every problem names its field and says
//! what was expected there (`transport.candidates[1].port: expected a string holding a port
//! number`): the answer comes from the network, and the person debugging a join needs to know
//! exactly which part of it was wrong. Serialising writes Telegram's exact shape, every candidate
//! field a string, which libwebrtc clients insist on (docs/protocol.md §12).

use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use crate::payload::{ssrc_from_i64, DtlsFingerprint, Setup};
use crate::rtp::{ExtensionIds, PayloadKind, RtpParams, OPUS_PAYLOAD_TYPE};

/// What the server answered to a join.
#[derive(Clone, Debug, PartialEq)]
// Built once per join and matched at once: boxing the RTC case would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ServerAnswer {
    /// A real-time transport to connect to.
    Rtc(RtcAnswer),
    /// `{"stream": true}`: listen by downloading broadcast chunks; no transport.
    Stream,
    /// `{"stream": true, "rtmp": true}`: an RTMP livestream; no transport.
    Rtmp,
}

impl ServerAnswer {
    /// Parses the `params` JSON text.
    pub fn parse(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).map_err(|e| Error::NotJson(e.to_string()))?;
        Self::from_value(&v)
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(v: &Value) -> Result<Self> {
        let root = At::root(v);
        root.object()?;
        // NTG's order: rtmp, then stream, then transport. Keys are booleans (TD uses toBool).
        if root.opt("rtmp").map(|r| truthy(r.v)).unwrap_or(false) {
            return Ok(ServerAnswer::Rtmp);
        }
        if root.opt("stream").map(|s| truthy(s.v)).unwrap_or(false) {
            return Ok(ServerAnswer::Stream);
        }
        Ok(ServerAnswer::Rtc(RtcAnswer::parse(&root)?))
    }

    /// The RTC answer, or an error saying which non-RTC mode the server chose.
    pub fn into_rtc(self) -> Result<RtcAnswer> {
        match self {
            ServerAnswer::Rtc(a) => Ok(a),
            ServerAnswer::Stream => Err(Error::NotRtc("stream")),
            ServerAnswer::Rtmp => Err(Error::NotRtc("RTMP")),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            ServerAnswer::Rtc(a) => a.to_value(),
            ServerAnswer::Stream => json!({"stream": true}),
            ServerAnswer::Rtmp => json!({"stream": true, "rtmp": true}),
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => s == "true" || s == "1",
        _ => false,
    }
}

/// The RTC variant of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RtcAnswer {
    pub transport: TransportInfo,
    pub audio: Option<MediaInfo>,
    pub video: Option<VideoInfo>,
}

/// `transport`: the server's ICE credentials, DTLS fingerprint and candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportInfo {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprints: Vec<DtlsFingerprint>,
    pub candidates: Vec<Candidate>,
    pub xmlns: Option<String>,
    pub rtcp_mux: Option<bool>,
}

impl TransportInfo {
    /// The server's SHA-256 fingerprint (tgcalls uses only the first entry).
    pub fn fingerprint(&self) -> Result<Fingerprint> {
        let first = self
            .fingerprints
            .first()
            .ok_or_else(|| Error::json("transport.fingerprints", "is empty"))?;
        first
            .sha256()
            .map_err(|e| Error::json("transport.fingerprints[0]", e.to_string()))
    }

    /// The server's DTLS role as announced, if any.
    pub fn setup(&self) -> Option<Setup> {
        self.fingerprints.first().map(|f| f.setup)
    }

    /// UDP candidate addresses, IPv4 and IPv6, in the server's order.
    pub fn udp_addresses(&self) -> Vec<SocketAddr> {
        self.candidates
            .iter()
            .filter(|c| c.protocol.eq_ignore_ascii_case("udp") && c.component == "1")
            .map(|c| SocketAddr::new(c.ip, c.port))
            .collect()
    }
}

/// One ICE candidate. Every field is a string on the wire; the numeric ones are parsed here.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub priority: u32,
    pub foundation: String,
    pub component: String,
    pub generation: String,
    pub id: String,
    pub network: String,
    pub typ: String,
    pub tcptype: Option<String>,
    pub rel_addr: Option<String>,
    pub rel_port: Option<String>,
}

impl Candidate {
    /// A UDP host candidate as Telegram's server announces it.
    pub fn udp_host(addr: SocketAddr, foundation: &str, id: &str) -> Self {
        Candidate {
            ip: addr.ip(),
            port: addr.port(),
            protocol: "udp".into(),
            priority: 2130706431,
            foundation: foundation.into(),
            component: "1".into(),
            generation: "0".into(),
            id: id.into(),
            network: "0".into(),
            typ: "host".into(),
            tcptype: None,
            rel_addr: None,
            rel_port: None,
        }
    }
}

/// `audio`: payload types and header extensions the server uses.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MediaInfo {
    pub payload_types: Vec<PayloadType>,
    pub rtp_hdrexts: Vec<HeaderExtension>,
}

/// `video`: like [`MediaInfo`] plus the own endpoint id and the server's probing sources.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct VideoInfo {
    pub endpoint: Option<String>,
    pub media: MediaInfo,
    pub server_sources: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PayloadType {
    pub id: u8,
    pub name: String,
    pub clockrate: u32,
    pub channels: Option<u32>,
    /// Values are strings or numbers on the wire; kept as JSON.
    pub parameters: Map<String, Value>,
    pub rtcp_fbs: Vec<RtcpFeedback>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RtcpFeedback {
    pub typ: String,
    pub subtype: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeaderExtension {
    pub id: u8,
    pub uri: String,
}

impl RtcAnswer {
    fn parse(root: &At<'_>) -> Result<Self> {
        let t = root.req("transport")?;
        t.object()?;
        let fingerprints = t
            .req("fingerprints")?
            .array()?
            .iter()
            .map(|f| {
                f.object()?;
                let setup = match f.opt("setup") {
                    None => Setup::Active,
                    Some(s) => match s.string()? {
                        "active" => Setup::Active,
                        "passive" => Setup::Passive,
                        "actpass" => Setup::Actpass,
                        _ => return Err(s.err("expected \"active\", \"passive\" or \"actpass\"")),
                    },
                };
                let fp = DtlsFingerprint {
                    fingerprint: f.req("fingerprint")?.string()?.to_owned(),
                    hash: f.req("hash")?.string()?.to_owned(),
                    setup,
                };
                fp.sha256().map_err(|e| f.err(e.to_string()))?;
                Ok(fp)
            })
            .collect::<Result<Vec<_>>>()?;
        if fingerprints.is_empty() {
            return Err(t
                .req("fingerprints")?
                .err("must hold at least one fingerprint"));
        }
        let candidates = t
            .req("candidates")?
            .array()?
            .iter()
            .map(parse_candidate)
            .collect::<Result<Vec<_>>>()?;
        let transport = TransportInfo {
            ufrag: t.req("ufrag")?.nonempty_string()?.to_owned(),
            pwd: t.req("pwd")?.nonempty_string()?.to_owned(),
            fingerprints,
            candidates,
            xmlns: t
                .opt("xmlns")
                .map(|x| x.string().map(str::to_owned))
                .transpose()?,
            rtcp_mux: t.opt("rtcp-mux").map(|x| x.boolean()).transpose()?,
        };
        let audio = root.opt("audio").map(|a| parse_media(&a)).transpose()?;
        let video = root
            .opt("video")
            .map(|v| -> Result<VideoInfo> {
                Ok(VideoInfo {
                    endpoint: v
                        .opt("endpoint")
                        .map(|e| e.string().map(str::to_owned))
                        .transpose()?,
                    media: parse_media(&v)?,
                    server_sources: match v.opt("server_sources") {
                        None => vec![],
                        Some(s) => s
                            .array()?
                            .iter()
                            .map(|x| {
                                x.v.as_i64()
                                    .and_then(ssrc_from_i64)
                                    .ok_or_else(|| x.err("expected a number holding a 32-bit SSRC"))
                            })
                            .collect::<Result<_>>()?,
                    },
                })
            })
            .transpose()?;
        Ok(RtcAnswer {
            transport,
            audio,
            video,
        })
    }

    /// Telegram's JSON shape (docs/protocol.md §2.3).
    pub fn to_value(&self) -> Value {
        let t = &self.transport;
        let transport = json!({
            "xmlns": t.xmlns.clone().unwrap_or_else(|| "urn:xmpp:jingle:transports:ice-udp:1".into()),
            "rtcp-mux": t.rtcp_mux.unwrap_or(true),
            "ufrag": t.ufrag,
            "pwd": t.pwd,
            "fingerprints": t.fingerprints.iter().map(|f| json!({
                "hash": f.hash, "setup": f.setup, "fingerprint": f.fingerprint,
            })).collect::<Vec<_>>(),
            "candidates": t.candidates.iter().map(candidate_value).collect::<Vec<_>>(),
        });
        let mut root = Map::new();
        root.insert("transport".into(), transport);
        if let Some(a) = &self.audio {
            root.insert("audio".into(), media_value(a));
        }
        if let Some(v) = &self.video {
            let mut m = media_value(&v.media);
            if let Value::Object(o) = &mut m {
                if let Some(e) = &v.endpoint {
                    o.insert("endpoint".into(), json!(e));
                }
                o.insert(
                    "server_sources".into(),
                    json!(v
                        .server_sources
                        .iter()
                        .map(|s| *s as i32)
                        .collect::<Vec<_>>()),
                );
            }
            root.insert("video".into(), m);
        }
        Value::Object(root)
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The RTP parameters this answer sets (docs/protocol.md §2.2): extension ids from
    /// `audio.rtp-hdrexts`, the first `opus`/48000 entry of `audio.payload-types` as the Opus
    /// payload type, every audio and video payload type for classifying what arrives.
    ///
    /// An absent or empty list means the server did not say, and the official client, which
    /// never reads these lists, uses its fixed numbering (§5.1, §5.2); so does this: extensions
    /// 1, 2, 3, Opus 111, video 100..=105. A list that is there is taken exactly: an extension
    /// it does not name is not sent. Audio types that include no Opus are an error, since Opus
    /// is all this side can send.
    pub fn rtp_params(&self) -> Result<RtpParams> {
        let audio = self.audio.as_ref();
        let exts = audio.map(|a| a.rtp_hdrexts.as_slice()).unwrap_or(&[]);
        let extensions = if exts.is_empty() {
            ExtensionIds::TELEGRAM
        } else {
            ExtensionIds::from_uris(exts.iter().map(|e| (e.id, e.uri.as_str())))
        };
        let audio_pts = audio.map(|a| a.payload_types.as_slice()).unwrap_or(&[]);
        let is_opus =
            |p: &PayloadType| p.name.eq_ignore_ascii_case("opus") && p.clockrate == 48_000;
        let opus = if audio_pts.is_empty() {
            OPUS_PAYLOAD_TYPE
        } else {
            audio_pts
                .iter()
                .find(|p| is_opus(p))
                .map(|p| p.id)
                .ok_or_else(|| {
                    Error::json(
                    "audio.payload-types",
                    "lists no \"opus\" at clockrate 48000; Opus is the only audio this side sends",
                )
                })?
        };
        let mut params = RtpParams::empty(extensions, opus);
        match self
            .video
            .as_ref()
            .map(|v| v.media.payload_types.as_slice())
        {
            Some(v) if !v.is_empty() => {
                for pt in v {
                    params.set(pt.id, PayloadKind::Video, pt.clockrate);
                }
            }
            _ => {
                for pt in 100..=105 {
                    params.set(pt, PayloadKind::Video, 90_000);
                }
            }
        }
        // Audio last: a type listed in both sections is audio, as audio is what is played.
        if audio_pts.is_empty() {
            params.set(126, PayloadKind::OtherAudio, 8000);
        }
        for pt in audio_pts {
            let kind = if is_opus(pt) {
                PayloadKind::Opus
            } else {
                PayloadKind::OtherAudio
            };
            params.set(pt.id, kind, pt.clockrate);
        }
        Ok(params)
    }
}

fn candidate_value(c: &Candidate) -> Value {
    let mut o = json!({
        "generation": c.generation, "component": c.component, "protocol": c.protocol,
        "port": c.port.to_string(), "ip": c.ip.to_string(), "foundation": c.foundation,
        "id": c.id, "priority": c.priority.to_string(), "type": c.typ, "network": c.network,
    });
    if let Value::Object(m) = &mut o {
        for (k, v) in [
            ("tcptype", &c.tcptype),
            ("rel-addr", &c.rel_addr),
            ("rel-port", &c.rel_port),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
    }
    o
}

fn media_value(m: &MediaInfo) -> Value {
    json!({
        "payload-types": m.payload_types.iter().map(|p| {
            let mut o = json!({"id": p.id, "name": p.name, "clockrate": p.clockrate});
            if let Value::Object(map) = &mut o {
                if let Some(c) = p.channels { map.insert("channels".into(), json!(c)); }
                if !p.parameters.is_empty() { map.insert("parameters".into(), Value::Object(p.parameters.clone())); }
                if !p.rtcp_fbs.is_empty() {
                    map.insert("rtcp-fbs".into(), p.rtcp_fbs.iter().map(|f| match &f.subtype {
                        Some(s) => json!({"type": f.typ, "subtype": s}),
                        None => json!({"type": f.typ}),
                    }).collect());
                }
            }
            o
        }).collect::<Vec<_>>(),
        "rtp-hdrexts": m.rtp_hdrexts.iter().map(|e| json!({"id": e.id, "uri": e.uri})).collect::<Vec<_>>(),
    })
}

fn parse_candidate(c: &At<'_>) -> Result<Candidate> {
    c.object()?;
    let s = |k: &str| -> Result<String> { Ok(c.req(k)?.string()?.to_owned()) };
    let port = c.req("port")?;
    let port_n = port
        .string()
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| port.err("expected a string holding a port number"))?;
    let ip = c.req("ip")?;
    let ip_v = ip
        .string()
        .ok()
        .and_then(|p| p.parse::<IpAddr>().ok())
        .ok_or_else(|| ip.err("expected a string holding an IPv4 or IPv6 address"))?;
    let prio = c.req("priority")?;
    let priority = prio
        .string()
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| prio.err("expected a string holding a 32-bit priority"))?;
    let opt = |k: &str| -> Result<Option<String>> {
        c.opt(k).map(|x| x.string().map(str::to_owned)).transpose()
    };
    Ok(Candidate {
        ip: ip_v,
        port: port_n,
        protocol: s("protocol")?,
        priority,
        foundation: s("foundation")?,
        component: s("component")?,
        generation: s("generation")?,
        id: s("id")?,
        network: s("network")?,
        typ: s("type")?,
        tcptype: opt("tcptype")?,
        rel_addr: opt("rel-addr")?,
        rel_port: opt("rel-port")?,
    })
}

fn parse_media(m: &At<'_>) -> Result<MediaInfo> {
    m.object()?;
    let payload_types = match m.opt("payload-types") {
        None => vec![],
        Some(p) => p
            .array()?
            .iter()
            .map(|pt| {
                pt.object()?;
                let id = pt.req("id")?;
                let id_v =
                    id.v.as_u64()
                        .or_else(|| id.v.as_str().and_then(|s| s.parse().ok()))
                        .filter(|v| *v <= 127)
                        .ok_or_else(|| id.err("expected a payload type number 0..=127"))?;
                let clock = pt.req("clockrate")?;
                let clockrate = clock
                    .v
                    .as_u64()
                    .and_then(|c| u32::try_from(c).ok())
                    .ok_or_else(|| clock.err("expected a number (Hz)"))?;
                let rtcp_fbs = match pt.opt("rtcp-fbs") {
                    None => vec![],
                    Some(f) => f
                        .array()?
                        .iter()
                        .map(|fb| {
                            fb.object()?;
                            let typ = fb.req("type")?.string()?;
                            let subtype = fb
                                .opt("subtype")
                                .map(|s| s.string().map(str::to_owned))
                                .transpose()?;
                            // tgcalls also accepts {"type":"nack pli"}.
                            Ok(match (subtype, typ.split_once(' ')) {
                                (None, Some((t, s))) => RtcpFeedback {
                                    typ: t.into(),
                                    subtype: Some(s.into()),
                                },
                                (sub, _) => RtcpFeedback {
                                    typ: typ.into(),
                                    subtype: sub,
                                },
                            })
                        })
                        .collect::<Result<_>>()?,
                };
                Ok(PayloadType {
                    id: id_v as u8,
                    name: pt.req("name")?.string()?.to_owned(),
                    clockrate,
                    channels: pt
                        .opt("channels")
                        .and_then(|c| c.v.as_u64())
                        .map(|c| c as u32),
                    parameters: match pt.opt("parameters") {
                        None => Map::new(),
                        Some(p) => p.object()?.clone(),
                    },
                    rtcp_fbs,
                })
            })
            .collect::<Result<_>>()?,
    };
    let rtp_hdrexts = match m.opt("rtp-hdrexts") {
        None => vec![],
        Some(e) => e
            .array()?
            .iter()
            .map(|x| {
                x.object()?;
                let id = x.req("id")?;
                let id_v =
                    id.v.as_u64()
                        .filter(|v| (1..=255).contains(v))
                        .ok_or_else(|| id.err("expected an extension id 1..=255"))?;
                Ok(HeaderExtension {
                    id: id_v as u8,
                    uri: x.req("uri")?.string()?.to_owned(),
                })
            })
            .collect::<Result<_>>()?,
    };
    Ok(MediaInfo {
        payload_types,
        rtp_hdrexts,
    })
}

/// A JSON value and the path that led to it, for error messages.
struct At<'a> {
    v: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn root(v: &'a Value) -> Self {
        At {
            v,
            path: String::new(),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, problem: impl Into<String>) -> Error {
        let path = if self.path.is_empty() {
            "answer".to_owned()
        } else {
            self.path.clone()
        };
        Error::json(path, problem)
    }

    fn object(&self) -> Result<&'a Map<String, Value>> {
        self.v
            .as_object()
            .ok_or_else(|| self.err(format!("expected an object, found {}", kind(self.v))))
    }

    fn opt(&self, key: &str) -> Option<At<'a>> {
        match self.v.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(At {
                v,
                path: self.child_path(key),
            }),
        }
    }

    fn req(&self, key: &str) -> Result<At<'a>> {
        self.opt(key).ok_or_else(|| {
            Error::json(
                self.child_path(key),
                "missing (required by Telegram's answer format)",
            )
        })
    }

    fn string(&self) -> Result<&'a str> {
        self.v
            .as_str()
            .ok_or_else(|| self.err(format!("expected a string, found {}", kind(self.v))))
    }

    fn nonempty_string(&self) -> Result<&'a str> {
        let s = self.string()?;
        if s.is_empty() {
            return Err(self.err("must not be empty"));
        }
        Ok(s)
    }

    fn boolean(&self) -> Result<bool> {
        self.v
            .as_bool()
            .ok_or_else(|| self.err(format!("expected true or false, found {}", kind(self.v))))
    }

    fn array(&self) -> Result<Vec<At<'a>>> {
        let a = self
            .v
            .as_array()
            .ok_or_else(|| self.err(format!("expected an array, found {}", kind(self.v))))?;
        Ok(a.iter()
            .enumerate()
            .map(|(i, v)| At {
                v,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `audio` section Telegram's server announces: Opus 111 and telephone-event 126, extensions
/// 1 (audio level), 2 (abs-send-time), 3 (transport-wide cc).
pub fn telegram_audio_info() -> MediaInfo {
    let mut opus_params = Map::new();
    opus_params.insert("minptime".into(), json!(10));
    opus_params.insert("useinbandfec".into(), json!(1));
    MediaInfo {
        payload_types: vec![
            PayloadType {
                id: 111,
                name: "opus".into(),
                clockrate: 48000,
                channels: Some(2),
                parameters: opus_params,
                rtcp_fbs: vec![RtcpFeedback {
                    typ: "transport-cc".into(),
                    subtype: None,
                }],
            },
            PayloadType {
                id: 126,
                name: "telephone-event".into(),
                clockrate: 8000,
                channels: Some(1),
                parameters: Map::new(),
                rtcp_fbs: vec![],
            },
        ],
        rtp_hdrexts: vec![
            HeaderExtension {
                id: 1,
                uri: crate::rtp::URI_AUDIO_LEVEL.into(),
            },
            HeaderExtension {
                id: 2,
                uri: crate::rtp::URI_ABS_SEND_TIME.into(),
            },
            HeaderExtension {
                id: 3,
                uri: crate::rtp::URI_TRANSPORT_CC.into(),
            },
        ],
    }
}

/// A video codec a server may offer, at Telegram's fixed payload type (docs/protocol.md §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

impl VideoCodec {
    /// Every codec, in the order tgcalls numbers them.
    pub const ALL: [VideoCodec; 3] = [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264];

    /// Its payload type; RTX is the next one. Fixed whatever else is offered: the server
    /// forwards RTP verbatim, so the numbering is part of the wire protocol.
    pub fn payload_type(self) -> u8 {
        match self {
            VideoCodec::Vp8 => 100,
            VideoCodec::Vp9 => 102,
            VideoCodec::H264 => 104,
        }
    }

    /// The name in `payload-types`.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::Vp9 => "VP9",
            VideoCodec::H264 => "H264",
        }
    }

    /// The codec of a video payload type or of its RTX.
    pub fn from_payload_type(pt: u8) -> Option<VideoCodec> {
        VideoCodec::ALL
            .into_iter()
            .find(|c| pt & !1 == c.payload_type())
    }
}

/// The `video` section: VP8/VP9/H264 at 100/102/104 with RTX at +1, extensions 2, 3, 13.
/// libwebrtc clients reject an answer without one, even audio-only (docs/protocol.md §12).
pub fn telegram_video_info(endpoint: &str, server_source: u32) -> VideoInfo {
    telegram_video_info_with(endpoint, server_source, &VideoCodec::ALL)
}

/// [`telegram_video_info`] offering only `codecs` (each with its RTX), at their fixed numbers.
pub fn telegram_video_info_with(
    endpoint: &str,
    server_source: u32,
    codecs: &[VideoCodec],
) -> VideoInfo {
    let fbs = || {
        [
            ("goog-remb", None),
            ("transport-cc", None),
            ("ccm", Some("fir")),
            ("nack", None),
            ("nack", Some("pli")),
        ]
        .into_iter()
        .map(|(t, s)| RtcpFeedback {
            typ: t.into(),
            subtype: s.map(Into::into),
        })
        .collect::<Vec<_>>()
    };
    let mut payload_types = Vec::new();
    for c in VideoCodec::ALL.into_iter().filter(|c| codecs.contains(c)) {
        let (id, name) = (c.payload_type(), c.name());
        payload_types.push(PayloadType {
            id,
            name: name.into(),
            clockrate: 90000,
            channels: None,
            parameters: Map::new(),
            rtcp_fbs: fbs(),
        });
        let mut apt = Map::new();
        apt.insert("apt".into(), json!(id.to_string()));
        payload_types.push(PayloadType {
            id: id + 1,
            name: "rtx".into(),
            clockrate: 90000,
            channels: None,
            parameters: apt,
            rtcp_fbs: vec![],
        });
    }
    VideoInfo {
        endpoint: Some(endpoint.into()),
        media: MediaInfo {
            payload_types,
            rtp_hdrexts: vec![
                HeaderExtension {
                    id: 2,
                    uri: crate::rtp::URI_ABS_SEND_TIME.into(),
                },
                HeaderExtension {
                    id: 3,
                    uri: crate::rtp::URI_TRANSPORT_CC.into(),
                },
                HeaderExtension {
                    id: 13,
                    uri: "urn:3gpp:video-orientation".into(),
                },
            ],
        },
        server_sources: vec![server_source],
    }
}
