//! The data-channel messages a publisher reads: `SenderVideoConstraints`, the tallest picture
//! any receiver wants of our camera (docs/protocol.md §6). Layers above it are not encoded; a
//! height of 0 (nobody watches) encodes nothing. The text comes from the network: anything
//! else, or anything malformed, is not a constraint.

use groupcall_media::video::layers::layer_for_height;
use serde::Deserialize;

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
