//! `ClientView`: what one connected client has been told, for replication.

use bevy_ecs::prelude::*;
use quad_shared::AvatarId;

/// Replication state of one client: the avatars it is interested in and what it was sent.
#[derive(Component, Debug, Default)]
pub struct ClientView {
    /// The nearest avatars in the area of interest, nearest first; re-selected every few
    /// ticks, not every tick, so a tick's cost is this list's length, not the crowd's size.
    pub interest: Vec<Interest>,
    /// Whether the interest list has been selected at least once (a new client gets its
    /// first list at once, then on its staggered turn).
    pub selected: bool,
    /// Bytes this client may still be sent (refilled each tick up to a cap).
    pub byte_tokens: f32,
    /// The own position and ack last sent to this client.
    pub sent_self: Option<([f32; 2], u32)>,
    /// Avatars to report as gone in the next snapshot.
    pub gone: Vec<AvatarId>,
}

/// One other avatar a client is interested in.
#[derive(Debug, Clone, Copy)]
pub struct Interest {
    /// Where to read its position in the slot table.
    pub slot: u32,
    pub id: AvatarId,
    /// Quantized position last sent (`None`: never sent yet).
    pub sent: Option<(u16, u16)>,
    /// Grows while the client's copy is stale; the highest go first.
    pub priority: f32,
    /// How fast priority grows: nearer avatars age faster.
    pub weight: f32,
}
