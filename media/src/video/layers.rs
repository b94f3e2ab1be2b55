//! Which simulcast layer a height asks for: one rule for the server (which layer a receiver
//! gets) and a publisher (which layers anyone watches), so the two agree.

/// The height that gets the top layer: what a receiver that never sent constraints is taken
/// to want.
pub const TOP_HEIGHT: u32 = 720;

/// The layer of a `layers`-layer simulcast stream that suits a `max_height`, or `None` for
/// none at all (0). Layers are taken as tgcalls lays them out: the top one full size (720p for
/// a camera), each lower one half as tall, so 720 and up gets the top layer, 360 the one below,
/// anything smaller the lowest (tgcalls' own thresholds, docs/protocol.md §5.2).
pub fn layer_for_height(max_height: u32, layers: usize) -> Option<usize> {
    if max_height == 0 || layers == 0 {
        return None;
    }
    let top = layers - 1;
    let below_top = match max_height {
        TOP_HEIGHT.. => 0,
        360..=719 => 1,
        _ => 2,
    };
    Some(top.saturating_sub(below_top))
}
