//! The join payload: the JSON a participant puts in `phone.joinGroupCall.params`
//! (docs/protocol.md §1). Its field names and order are those tgcalls writes; SSRCs are signed 32-bit
//! numbers on the wire and plain `u32` here.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::identity::{Fingerprint, LocalIdentity};

/// An SSRC. Telegram writes SSRCs as signed 32-bit numbers; this reads both the signed form and
/// the unsigned one some clients send, and always writes the signed form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireSsrc(pub u32);

impl Serialize for WireSsrc {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_i32(self.0 as i32)
    }
}

impl<'de> Deserialize<'de> for WireSsrc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        ssrc_from_i64(v).map(WireSsrc).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{v} is not an SSRC (a signed or unsigned 32-bit number)"
            ))
        })
    }
}

/// Maps the signed or unsigned JSON form of an SSRC to `u32`.
pub fn ssrc_from_i64(v: i64) -> Option<u32> {
    if (i32::MIN as i64..=u32::MAX as i64).contains(&v) {
        Some(v as u32)
    } else {
        None
    }
}

/// DTLS role as written in the `setup` field (RFC 4145 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    /// Sends the ClientHello (DTLS client).
    Active,
    /// Waits for the ClientHello (DTLS server). What tgcalls and ntgcalls declare.
    Passive,
    /// Either; the answerer decides. Treated as passive by a server that picks the complement.
    Actpass,
}

impl Setup {
    /// The role the other side takes.
    pub fn complement(self) -> Setup {
        match self {
            Setup::Active => Setup::Passive,
            Setup::Passive | Setup::Actpass => Setup::Active,
        }
    }

    /// Whether this side is the DTLS client.
    pub fn is_dtls_client(self) -> bool {
        self == Setup::Active
    }
}

/// One entry of `fingerprints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtlsFingerprint {
    pub fingerprint: String,
    pub hash: String,
    pub setup: Setup,
}

impl DtlsFingerprint {
    /// The SHA-256 fingerprint, or an error if the hash is not sha-256 or the value is malformed.
    pub fn sha256(&self) -> Result<Fingerprint> {
        if !self.hash.eq_ignore_ascii_case("sha-256") {
            return Err(Error::Config(format!(
                "fingerprint hash {:?} is not supported; only sha-256 is",
                self.hash
            )));
        }
        Fingerprint::parse(&self.fingerprint)
    }
}

/// A group of related SSRCs: `SIM` (simulcast layers) or `FID` (a stream and its RTX).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsrcGroup {
    pub semantics: String,
    pub sources: Vec<WireSsrc>,
}

/// Which video the participant declares it may publish. Decides the `ssrc-groups` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VideoPublish {
    /// Audio only: no `ssrc-groups` key at all.
    #[default]
    None,
    /// Camera: three simulcast layers.
    Camera,
    /// Screen share: two simulcast layers.
    Screen,
}

impl VideoPublish {
    pub fn layers(self) -> u32 {
        match self {
            VideoPublish::None => 0,
            VideoPublish::Camera => 3,
            VideoPublish::Screen => 2,
        }
    }

    /// The groups tgcalls derives from the audio SSRC `a`: layer i has primary `a+1+2i` and RTX
    /// `a+2+2i` (wrapping, so they may exceed 2^31 and serialise negative), one `SIM` over the
    /// primaries when there is more than one layer, and one `FID` per layer.
    pub fn ssrc_groups(self, audio_ssrc: u32) -> Vec<SsrcGroup> {
        let layers = self.layers();
        if layers == 0 {
            return Vec::new();
        }
        let primary = |i: u32| audio_ssrc.wrapping_add(1 + 2 * i);
        let mut groups = Vec::with_capacity(layers as usize + 1);
        if layers > 1 {
            groups.push(SsrcGroup {
                semantics: "SIM".into(),
                sources: (0..layers).map(|i| WireSsrc(primary(i))).collect(),
            });
        }
        for i in 0..layers {
            groups.push(SsrcGroup {
                semantics: "FID".into(),
                sources: vec![WireSsrc(primary(i)), WireSsrc(primary(i).wrapping_add(1))],
            });
        }
        groups
    }
}

/// The join payload, field for field as tgcalls serialises it (keys in alphabetical order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinPayload {
    pub fingerprints: Vec<DtlsFingerprint>,
    pub pwd: String,
    pub ssrc: WireSsrc,
    #[serde(rename = "ssrc-groups", default, skip_serializing_if = "Vec::is_empty")]
    pub ssrc_groups: Vec<SsrcGroup>,
    pub ufrag: String,
}

impl JoinPayload {
    /// The payload for `identity`, declaring `video` sources. Always `setup: passive`, as tgcalls.
    pub fn new(identity: &LocalIdentity, video: VideoPublish) -> Self {
        JoinPayload {
            fingerprints: vec![DtlsFingerprint {
                fingerprint: identity.fingerprint.to_string(),
                hash: "sha-256".into(),
                setup: Setup::Passive,
            }],
            pwd: identity.ice.pwd.clone(),
            ssrc: WireSsrc(identity.audio_ssrc),
            ssrc_groups: video.ssrc_groups(identity.audio_ssrc),
            ufrag: identity.ice.ufrag.clone(),
        }
    }

    /// The audio SSRC as `u32`.
    pub fn audio_ssrc(&self) -> u32 {
        self.ssrc.0
    }

    /// Every SSRC this payload claims: audio plus all video group members.
    pub fn all_sources(&self) -> Vec<u32> {
        let mut v = vec![self.ssrc.0];
        for g in &self.ssrc_groups {
            for s in &g.sources {
                if !v.contains(&s.0) {
                    v.push(s.0);
                }
            }
        }
        v
    }

    /// The JSON text for `phone.joinGroupCall.params`.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and vectors cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a payload (the server side of a join). Errors name the field that is wrong.
    pub fn parse(json: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let p: JoinPayload = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Error::NotJson(inner.to_string())
            } else {
                Error::json(
                    if path == "." { "payload".into() } else { path },
                    inner.to_string(),
                )
            }
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Checks what serde cannot: credentials present, a usable fingerprint.
    pub fn validate(&self) -> Result<()> {
        if self.ufrag.is_empty() {
            return Err(Error::json("ufrag", "must not be empty"));
        }
        if self.pwd.is_empty() {
            return Err(Error::json("pwd", "must not be empty"));
        }
        let fp = self
            .fingerprints
            .first()
            .ok_or_else(|| Error::json("fingerprints", "must hold at least one fingerprint"))?;
        fp.sha256()
            .map_err(|e| Error::json("fingerprints[0]", e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_groups_match_tgcalls() {
        let g = VideoPublish::Camera.ssrc_groups(100);
        let as_u32 = |g: &SsrcGroup| g.sources.iter().map(|s| s.0).collect::<Vec<_>>();
        assert_eq!(g.len(), 4);
        assert_eq!(g[0].semantics, "SIM");
        assert_eq!(as_u32(&g[0]), [101, 103, 105]);
        assert_eq!(as_u32(&g[1]), [101, 102]);
        assert_eq!(as_u32(&g[2]), [103, 104]);
        assert_eq!(as_u32(&g[3]), [105, 106]);
        let s = VideoPublish::Screen.ssrc_groups(100);
        assert_eq!(as_u32(&s[0]), [101, 103]);
        assert_eq!(s.len(), 3);
        assert!(VideoPublish::None.ssrc_groups(100).is_empty());
    }

    #[test]
    fn high_ssrcs_serialise_signed_and_parse_back() {
        let groups = VideoPublish::Camera.ssrc_groups(0x7fff_fffe);
        let json = serde_json::to_string(&groups).unwrap();
        assert!(json.contains("-2147483647"), "{json}");
        let back: Vec<SsrcGroup> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, groups);
    }

    #[test]
    fn unsigned_ssrc_form_is_accepted_and_out_of_range_refused() {
        let w: WireSsrc = serde_json::from_str("4294967295").unwrap();
        assert_eq!(w.0, u32::MAX);
        let w: WireSsrc = serde_json::from_str("-1").unwrap();
        assert_eq!(w.0, u32::MAX);
        assert!(serde_json::from_str::<WireSsrc>("4294967296").is_err());
        assert!(serde_json::from_str::<WireSsrc>("\"5\"").is_err());
    }

    #[test]
    fn parse_names_the_bad_field() {
        let ok = r#"{"fingerprints":[{"fingerprint":"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F","hash":"sha-256","setup":"passive"}],"pwd":"p","ssrc":5,"ufrag":"u"}"#;
        assert!(JoinPayload::parse(ok).is_ok());
        let e = JoinPayload::parse(&ok.replace(r#""ssrc":5"#, r#""ssrc":"5""#)).unwrap_err();
        assert!(e.to_string().starts_with("ssrc:"), "{e}");
        let e = JoinPayload::parse(&ok.replace("passive", "sideways")).unwrap_err();
        assert!(e.to_string().contains("fingerprints[0].setup"), "{e}");
        let e = JoinPayload::parse(&ok.replace("0A:", "0Z:")).unwrap_err();
        assert!(e.to_string().contains("fingerprints[0]"), "{e}");
        let e = JoinPayload::parse(&ok.replace(r#""ufrag":"u""#, r#""ufrag":"""#)).unwrap_err();
        assert!(e.to_string().contains("ufrag"), "{e}");
        assert!(matches!(
            JoinPayload::parse("{not json"),
            Err(Error::NotJson(_))
        ));
    }
}
