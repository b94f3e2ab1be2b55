//! Join payloads as generated for every join: 10,000 of them, each checked against what
//! Telegram's server and tgcalls expect (docs/protocol.md §1).

use std::collections::HashSet;

use groupcall_media::identity::{ICE_CHARS, PWD_LEN, UFRAG_LEN};
use groupcall_media::payload::WireSsrc;
use groupcall_media::{Fingerprint, JoinPayload, LocalIdentity, Setup, VideoPublish};

#[test]
fn ten_thousand_generated_payloads_are_well_formed_and_round_trip() {
    let modes = [
        VideoPublish::None,
        VideoPublish::Camera,
        VideoPublish::Screen,
    ];
    let mut ssrcs = HashSet::new();
    let mut fingerprints = HashSet::new();
    let mut high_bit_video = 0;
    for i in 0..10_000 {
        let id = LocalIdentity::generate().unwrap();
        let video = modes[i % 3];
        let p = JoinPayload::new(&id, video);
        let a = p.audio_ssrc();
        assert!(a != 0 && a < 1 << 31, "audio ssrc {a}");
        assert_eq!(p.ufrag.len(), UFRAG_LEN);
        assert_eq!(p.pwd.len(), PWD_LEN);
        assert!(p
            .ufrag
            .bytes()
            .chain(p.pwd.bytes())
            .all(|b| ICE_CHARS.contains(&b)));
        assert_eq!(p.fingerprints.len(), 1);
        let f = &p.fingerprints[0];
        assert_eq!((f.hash.as_str(), f.setup), ("sha-256", Setup::Passive));
        assert_eq!(f.fingerprint.len(), 95);
        assert!(f.fingerprint.split(':').all(|h| h.len() == 2
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))));
        // The fingerprint is the certificate's.
        assert_eq!(
            Fingerprint::of_der(id.certificate.certificate[0].as_ref()),
            id.fingerprint
        );
        assert_eq!(f.fingerprint, id.fingerprint.to_string());

        let json = p.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(
            v["ssrc"].as_i64().unwrap() > 0,
            "signed audio ssrc is positive"
        );
        let groups = v.get("ssrc-groups");
        match video {
            VideoPublish::None => assert!(
                groups.is_none(),
                "audio-only has no ssrc-groups key: {json}"
            ),
            VideoPublish::Camera | VideoPublish::Screen => {
                let n = video.layers();
                let g = groups.unwrap().as_array().unwrap();
                assert_eq!(g.len() as u32, n + 1);
                assert_eq!(g[0]["semantics"], "SIM");
                let s = |x: &serde_json::Value| x.as_i64().unwrap() as u32;
                let sim: Vec<u32> = g[0]["sources"].as_array().unwrap().iter().map(s).collect();
                let want: Vec<u32> = (0..n).map(|l| a.wrapping_add(1 + 2 * l)).collect();
                assert_eq!(sim, want);
                for l in 0..n as usize {
                    assert_eq!(g[l + 1]["semantics"], "FID");
                    let fid: Vec<u32> = g[l + 1]["sources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(s)
                        .collect();
                    assert_eq!(fid, [want[l], want[l].wrapping_add(1)]);
                }
                if sim.iter().any(|x| *x >= 1 << 31) {
                    high_bit_video += 1;
                }
            }
        }
        // Keys in tgcalls' (alphabetical) order.
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(JoinPayload::parse(&json).unwrap(), p);
        ssrcs.insert(a);
        fingerprints.insert(id.fingerprint);
    }
    // Fresh randomness every time (collisions in 10,000 draws from 2^31 are ~2% likely: allow one).
    assert!(ssrcs.len() >= 9_999);
    assert_eq!(fingerprints.len(), 10_000);
    let _ = high_bit_video; // usually 0: audio ssrcs near 2^31 are rare
}

#[test]
fn video_ssrcs_past_2_31_serialise_negative() {
    let mut id = LocalIdentity::generate().unwrap();
    id.audio_ssrc = 0x7fff_fffd;
    let p = JoinPayload::new(&id, VideoPublish::Camera);
    let json = p.to_json();
    assert!(json.contains("-2147483648"), "{json}");
    let back = JoinPayload::parse(&json).unwrap();
    assert!(back.all_sources().contains(&0x8000_0000));
    assert_eq!(back.ssrc_groups[0].sources[0], WireSsrc(0x7fff_fffe));
}
