//! The server answer: docs/protocol.md §2.3's example parses, stream modes are their own cases, and
//! each required field removed or retyped gives its own error naming the field.

use groupcall_media::{Error, ServerAnswer};
use serde_json::{json, Value};

fn example() -> Value {
    json!({"transport":{"xmlns":"urn:xmpp:jingle:transports:ice-udp:1","rtcp-mux":true,
      "ufrag":"bvr6j1fkri6020","pwd":"1k7vls8kb2tr4eu093jkalphcq",
      "fingerprints":[{"hash":"sha-256","setup":"active","fingerprint":"9A:18:2C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:0D"}],
      "candidates":[
       {"generation":"0","component":"1","protocol":"udp","port":"32000","ip":"91.108.9.103",
        "foundation":"2","id":"2b603f7dbaff65706a0c113e","priority":"2130706431","type":"host","network":"0"},
       {"generation":"0","component":"1","protocol":"udp","port":"32000","ip":"2001:67c:4e8:f102:6:0:285:207",
        "foundation":"1","id":"26a502bbbaff65703414015c","priority":"2130706431","type":"host","network":"0"}]},
     "audio":{"payload-types":[{"id":111,"name":"opus","clockrate":48000,"channels":2,
        "parameters":{"minptime":10,"useinbandfec":1},"rtcp-fbs":[{"type":"transport-cc"}]},
       {"id":126,"name":"telephone-event","clockrate":8000,"channels":1}],
      "rtp-hdrexts":[{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"},
       {"id":2,"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"},
       {"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"}]},
     "video":{"endpoint":"ep","server_sources":[1017713629, -5],
      "payload-types":[{"id":100,"name":"VP8","clockrate":90000,"rtcp-fbs":[{"type":"goog-remb"},{"type":"nack pli"}]},
       {"id":101,"name":"rtx","clockrate":90000,"parameters":{"apt":"100"}}],
      "rtp-hdrexts":[{"id":13,"uri":"urn:3gpp:video-orientation"}]}})
}

#[test]
fn protocol_example_parses() {
    let a = ServerAnswer::from_value(&example())
        .unwrap()
        .into_rtc()
        .unwrap();
    let t = &a.transport;
    assert_eq!(t.ufrag, "bvr6j1fkri6020");
    assert_eq!(t.candidates.len(), 2);
    assert_eq!(
        t.udp_addresses()[0],
        "91.108.9.103:32000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
    );
    assert_eq!(
        t.udp_addresses()[1],
        "[2001:67c:4e8:f102:6:0:285:207]:32000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
    );
    assert_eq!(t.candidates[0].priority, 2130706431);
    assert_eq!(t.rtcp_mux, Some(true));
    assert!(t.fingerprint().is_ok());
    let audio = a.audio.as_ref().unwrap();
    assert_eq!(audio.payload_types[0].name, "opus");
    assert_eq!(
        audio.rtp_hdrexts.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let video = a.video.as_ref().unwrap();
    assert_eq!(video.server_sources, [1017713629, (-5i32) as u32]);
    let fb = &video.media.payload_types[0].rtcp_fbs[1];
    assert_eq!(
        (fb.typ.as_str(), fb.subtype.as_deref()),
        ("nack", Some("pli"))
    );
    // Writing it back gives Telegram's shape (all candidate fields strings) and parses the same.
    let again = a.to_value();
    assert!(again["transport"]["candidates"][0]["port"].is_string());
    assert!(again["transport"]["candidates"][0]["priority"].is_string());
    assert_eq!(
        ServerAnswer::from_value(&again)
            .unwrap()
            .into_rtc()
            .unwrap(),
        a
    );
}

#[test]
fn stream_and_rtmp_are_their_own_cases() {
    assert_eq!(
        ServerAnswer::parse(r#"{"stream":true}"#).unwrap(),
        ServerAnswer::Stream
    );
    assert_eq!(
        ServerAnswer::parse(r#"{"stream":true,"rtmp":true}"#).unwrap(),
        ServerAnswer::Rtmp
    );
    assert!(matches!(
        ServerAnswer::Stream.into_rtc(),
        Err(Error::NotRtc("stream"))
    ));
    // PTG's placeholder when no connection update arrived.
    let e = ServerAnswer::parse(r#"{"transport":null}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "transport: missing (required by Telegram's answer format)"
    );
    assert!(matches!(
        ServerAnswer::parse("[1,2"),
        Err(Error::NotJson(_))
    ));
    assert!(ServerAnswer::parse("[1]")
        .unwrap_err()
        .to_string()
        .starts_with("answer: expected an object"));
}

fn edit(f: impl FnOnce(&mut Value)) -> String {
    let mut v = example();
    f(&mut v);
    ServerAnswer::from_value(&v).unwrap_err().to_string()
}

#[test]
fn each_required_field_removed_names_itself() {
    for key in ["ufrag", "pwd", "fingerprints", "candidates"] {
        let e = edit(|v| {
            v["transport"].as_object_mut().unwrap().remove(key);
        });
        assert_eq!(
            e,
            format!("transport.{key}: missing (required by Telegram's answer format)")
        );
    }
    for key in [
        "port",
        "protocol",
        "network",
        "generation",
        "id",
        "component",
        "foundation",
        "priority",
        "ip",
        "type",
    ] {
        let e = edit(|v| {
            v["transport"]["candidates"][1]
                .as_object_mut()
                .unwrap()
                .remove(key);
        });
        assert_eq!(
            e,
            format!(
                "transport.candidates[1].{key}: missing (required by Telegram's answer format)"
            )
        );
    }
    for key in ["hash", "fingerprint"] {
        let e = edit(|v| {
            v["transport"]["fingerprints"][0]
                .as_object_mut()
                .unwrap()
                .remove(key);
        });
        assert_eq!(
            e,
            format!(
                "transport.fingerprints[0].{key}: missing (required by Telegram's answer format)"
            )
        );
    }
    assert!(edit(|v| {
        v.as_object_mut().unwrap().remove("transport");
    })
    .starts_with("transport: missing"));
}

/// A change made to the valid answer before it is parsed.
type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn each_required_field_retyped_names_itself() {
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "port number",
            Box::new(|v| v["transport"]["candidates"][1]["port"] = json!(32000)),
            "transport.candidates[1].port: expected a string holding a port number",
        ),
        (
            "port text",
            Box::new(|v| v["transport"]["candidates"][0]["port"] = json!("http")),
            "transport.candidates[0].port: expected a string holding a port number",
        ),
        (
            "port range",
            Box::new(|v| v["transport"]["candidates"][0]["port"] = json!("70000")),
            "transport.candidates[0].port: expected a string holding a port number",
        ),
        (
            "ip",
            Box::new(|v| v["transport"]["candidates"][0]["ip"] = json!("999.1.1.1")),
            "transport.candidates[0].ip: expected a string holding an IPv4 or IPv6 address",
        ),
        (
            "priority",
            Box::new(|v| v["transport"]["candidates"][0]["priority"] = json!(5)),
            "transport.candidates[0].priority: expected a string holding a 32-bit priority",
        ),
        (
            "component",
            Box::new(|v| v["transport"]["candidates"][0]["component"] = json!(1)),
            "transport.candidates[0].component: expected a string, found a number",
        ),
        (
            "ufrag",
            Box::new(|v| v["transport"]["ufrag"] = json!(["x"])),
            "transport.ufrag: expected a string, found an array",
        ),
        (
            "empty pwd",
            Box::new(|v| v["transport"]["pwd"] = json!("")),
            "transport.pwd: must not be empty",
        ),
        (
            "fingerprints",
            Box::new(|v| v["transport"]["fingerprints"] = json!({})),
            "transport.fingerprints: expected an array, found an object",
        ),
        (
            "no fingerprints",
            Box::new(|v| v["transport"]["fingerprints"] = json!([])),
            "transport.fingerprints: must hold at least one fingerprint",
        ),
        (
            "setup",
            Box::new(|v| v["transport"]["fingerprints"][0]["setup"] = json!("sideways")),
            "transport.fingerprints[0].setup: expected \"active\", \"passive\" or \"actpass\"",
        ),
        (
            "candidates",
            Box::new(|v| v["transport"]["candidates"] = json!("none")),
            "transport.candidates: expected an array, found a string",
        ),
        (
            "candidate",
            Box::new(|v| v["transport"]["candidates"][0] = json!(7)),
            "transport.candidates[0]: expected an object, found a number",
        ),
        (
            "rtcp-mux",
            Box::new(|v| v["transport"]["rtcp-mux"] = json!("yes")),
            "transport.rtcp-mux: expected true or false, found a string",
        ),
        (
            "pt id",
            Box::new(|v| v["audio"]["payload-types"][0]["id"] = json!(300)),
            "audio.payload-types[0].id: expected a payload type number 0..=127",
        ),
        (
            "server_sources",
            Box::new(|v| v["video"]["server_sources"] = json!(["a"])),
            "video.server_sources[0]: expected a number holding a 32-bit SSRC",
        ),
    ];
    for (name, f, want) in cases {
        assert_eq!(edit(f), want, "case {name}");
    }
    let e = edit(|v| v["transport"]["fingerprints"][0]["fingerprint"] = json!("12:34"));
    assert!(
        e.starts_with("transport.fingerprints[0]: fingerprint \"12:34\" is not a SHA-256"),
        "{e}"
    );
}
