//! The data-channel messages about video (docs/protocol.md §6). A publisher reads
//! `SenderVideoConstraints`, the tallest picture any receiver wants of our camera: layers above
//! it are not encoded, and a height of 0 (nobody watches) encodes nothing. The text comes from
//! the network: anything else, or anything malformed, is not a constraint. A receiver writes
//! `ReceiverVideoConstraints` ([`VideoSubscription`]): which participants' video it wants, how
//! tall.

use std::collections::HashMap;

use groupcall_media::video::layers::layer_for_height;
use serde::Deserialize;

/// Which video a call receives: every endpoint at most `default_max_height` tall, except those
/// in `max_heights` (endpoint ids, as `ReceivedVideo::endpoint` and the roster give them). The
/// server sends the simulcast layer that suits the height: 720 and up the top layer, 360 the
/// middle, less the lowest, 0 none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoSubscription {
    pub default_max_height: u32,
    pub max_heights: HashMap<String, u32>,
}

impl VideoSubscription {
    /// Everyone's video at up to `max_height`.
    pub fn all(max_height: u32) -> Self {
        VideoSubscription {
            default_max_height: max_height,
            max_heights: HashMap::new(),
        }
    }

    /// Only these endpoints, each at up to its height.
    pub fn only(endpoints: impl IntoIterator<Item = (String, u32)>) -> Self {
        VideoSubscription {
            default_max_height: 0,
            max_heights: endpoints.into_iter().collect(),
        }
    }

    /// The `ReceiverVideoConstraints` message.
    pub fn to_message(&self) -> String {
        let constraints: serde_json::Map<String, serde_json::Value> = self
            .max_heights
            .iter()
            .map(|(e, h)| (e.clone(), serde_json::json!({ "maxHeight": h })))
            .collect();
        serde_json::json!({
            "colibriClass": "ReceiverVideoConstraints",
            "defaultConstraints": { "maxHeight": self.default_max_height },
            "constraints": constraints,
        })
        .to_string()
    }
}

/// Longer messages are not constraints (they need a few dozen bytes).
const MAX_LEN: usize = 4096;

#[derive(Deserialize)]
struct Sender {
    #[serde(rename = "colibriClass")]
    class: String,
    #[serde(rename = "videoConstraints")]
    constraints: Option<Constraints>,
}

#[derive(Deserialize)]
struct Constraints {
    #[serde(rename = "idealHeight")]
    ideal_height: Option<i64>,
}

/// The `idealHeight` of a `SenderVideoConstraints` message (negative heights read as 0).
pub fn sender_ideal_height(text: &str) -> Option<u32> {
    if text.len() > MAX_LEN {
        return None;
    }
    let m: Sender = serde_json::from_str(text).ok()?;
    if m.class != "SenderVideoConstraints" {
        return None;
    }
    let h = m.constraints?.ideal_height?;
    Some(h.clamp(0, i64::from(u32::MAX)) as u32)
}

/// How many of `layers` simulcast layers (lowest first) a receiver wanting `height` needs.
pub fn layers_for_height(height: u32, layers: usize) -> usize {
    layer_for_height(height, layers).map_or(0, |top| top + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_turn_into_layers_and_anything_else_is_ignored() {
        let m = |h: &str| {
            format!(
                r#"{{"colibriClass":"SenderVideoConstraints","videoConstraints":{{"idealHeight":{h}}}}}"#
            )
        };
        assert_eq!(sender_ideal_height(&m("720")), Some(720));
        assert_eq!(sender_ideal_height(&m("-5")), Some(0));
        assert_eq!(sender_ideal_height(&m("\"x\"")), None);
        assert_eq!(
            sender_ideal_height(r#"{"colibriClass":"ReceiverVideoConstraints"}"#),
            None
        );
        assert_eq!(sender_ideal_height("not json"), None);
        assert_eq!(sender_ideal_height(&" ".repeat(10_000)), None);
        assert_eq!(layers_for_height(720, 3), 3);
        assert_eq!(layers_for_height(360, 3), 2);
        assert_eq!(layers_for_height(180, 3), 1);
        assert_eq!(layers_for_height(0, 3), 0);
        assert_eq!(layers_for_height(720, 2), 2);
    }
}
