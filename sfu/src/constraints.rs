//! What receivers ask to see, and what that asks of publishers (docs/protocol.md §6).
//!
//! A client says over the data channel which endpoints' video it wants and how tall:
//! `ReceiverVideoConstraints`, on open, on every change and every 5 s. The server turns a
//! height into one of the publisher's simulcast layers, and tells each publisher the tallest
//! anyone wants of it (`SenderVideoConstraints`), so that it can stop encoding layers nobody
//! watches. The messages come from the network: parsing is tolerant of what it does not use,
//! strict about sizes, and never panics.

use std::collections::HashMap;

use serde::Deserialize;

pub use groupcall_media::video::layers::{layer_for_height, TOP_HEIGHT};

/// The most endpoints one message may name; a call has far fewer video senders.
pub const MAX_ENDPOINTS: usize = 256;
/// The longest endpoint id taken (the local server's are about 20 bytes).
pub const MAX_ENDPOINT_LEN: usize = 256;
/// The longest message parsed; the data channel allows 256 KiB, constraints need a few hundred
/// bytes per endpoint.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A data-channel message from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    Receiver(ReceiverConstraints),
    /// Another colibri class (ignored, as Telegram's server ignores what it does not know).
    Other(String),
}

/// `ReceiverVideoConstraints`, reduced to what forwarding needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverConstraints {
    /// For endpoints not listed; 0 means none of their video.
    pub default_max_height: u32,
    pub max_heights: HashMap<String, u32>,
}

impl ReceiverConstraints {
    pub fn max_height(&self, endpoint: &str) -> u32 {
        self.max_heights
            .get(endpoint)
            .copied()
            .unwrap_or(self.default_max_height)
    }
}

/// Why a message was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(usize),
    #[error("not a colibri JSON message: {0}")]
    Json(String),
    #[error("ReceiverVideoConstraints names {0} endpoints, over the {MAX_ENDPOINTS} limit")]
    TooManyEndpoints(usize),
    #[error("an endpoint id of {0} bytes is over the {MAX_ENDPOINT_LEN}-byte limit")]
    EndpointTooLong(usize),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "colibriClass")]
    class: String,
}

#[derive(Deserialize, Default)]
struct Height {
    #[serde(rename = "maxHeight", default)]
    max_height: Option<i64>,
}

#[derive(Deserialize)]
struct Receiver {
    #[serde(rename = "defaultConstraints", default)]
    default_constraints: Option<Height>,
    #[serde(default)]
    constraints: HashMap<String, Height>,
}

/// Heights are non-negative and at most a few thousand; anything else is taken as the nearest.
fn height(v: Option<i64>) -> u32 {
    v.unwrap_or(0).clamp(0, 16_384) as u32
}

/// Parses one text message of the data channel.
pub fn parse(text: &str) -> Result<ClientMessage, MessageError> {
    if text.len() > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLong(text.len()));
    }
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;
    if envelope.class != "ReceiverVideoConstraints" {
        return Ok(ClientMessage::Other(envelope.class));
    }
    let r: Receiver = serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;
    if r.constraints.len() > MAX_ENDPOINTS {
        return Err(MessageError::TooManyEndpoints(r.constraints.len()));
    }
    if let Some(long) = r.constraints.keys().find(|k| k.len() > MAX_ENDPOINT_LEN) {
        return Err(MessageError::EndpointTooLong(long.len()));
    }
    Ok(ClientMessage::Receiver(ReceiverConstraints {
        default_max_height: height(r.default_constraints.unwrap_or_default().max_height),
        max_heights: r
            .constraints
            .into_iter()
            .map(|(k, v)| (k, height(v.max_height)))
            .collect(),
    }))
}

/// `SenderVideoConstraints` for a publisher whose tallest wanted layer is `ideal_height`.
pub fn sender_constraints(ideal_height: u32) -> String {
    serde_json::json!({
        "colibriClass": "SenderVideoConstraints",
        "videoConstraints": {"idealHeight": ideal_height},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntgcalls_constraints_parse_and_unknown_classes_pass() {
        // What ntgcalls sends on add_incoming_video.
        let m = parse(
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"endpoint-7":{"maxHeight":720,"minHeight":180}},"defaultConstraints":{"maxHeight":0},"onStageEndpoints":[]}"#,
        )
        .unwrap();
        let ClientMessage::Receiver(r) = m else {
            panic!("{m:?}")
        };
        assert_eq!(r.max_height("endpoint-7"), 720);
        assert_eq!(r.max_height("someone-else"), 0);
        assert_eq!(
            parse(r#"{"colibriClass":"EndpointStats","x":1}"#).unwrap(),
            ClientMessage::Other("EndpointStats".into())
        );
    }

    #[test]
    fn malformed_messages_are_errors_never_panics() {
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"colibriClass":5}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":[]}"#,
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"a":{"maxHeight":"tall"}}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // Odd numbers are taken as the nearest sensible height.
        let ClientMessage::Receiver(r) = parse(
            r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"a":{"maxHeight":-5},"b":{"maxHeight":99999999999}}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((r.max_height("a"), r.max_height("b")), (0, 16_384));
        // Limits.
        let many: Vec<String> = (0..=MAX_ENDPOINTS)
            .map(|i| format!(r#""e{i}":{{"maxHeight":180}}"#))
            .collect();
        let text = format!(
            r#"{{"colibriClass":"ReceiverVideoConstraints","constraints":{{{}}}}}"#,
            many.join(",")
        );
        assert_eq!(
            parse(&text),
            Err(MessageError::TooManyEndpoints(MAX_ENDPOINTS + 1))
        );
        let long = "x".repeat(MAX_MESSAGE_LEN + 1);
        assert_eq!(parse(&long), Err(MessageError::TooLong(long.len())));
    }

    #[test]
    fn heights_pick_layers_as_tgcalls_thresholds_do() {
        assert_eq!(layer_for_height(0, 3), None);
        assert_eq!(layer_for_height(720, 3), Some(2));
        assert_eq!(layer_for_height(1080, 3), Some(2));
        assert_eq!(layer_for_height(360, 3), Some(1));
        assert_eq!(layer_for_height(180, 3), Some(0));
        assert_eq!(layer_for_height(90, 3), Some(0));
        // A screen's two layers: full and half.
        assert_eq!(layer_for_height(720, 2), Some(1));
        assert_eq!(layer_for_height(360, 2), Some(0));
        assert_eq!(layer_for_height(180, 2), Some(0));
        let s: serde_json::Value = serde_json::from_str(&sender_constraints(360)).unwrap();
        assert_eq!(s["videoConstraints"]["idealHeight"], 360);
    }
}
