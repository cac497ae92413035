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
    /// The radius the last interest scan needed to find enough avatars (0: none yet).
    pub scan_radius: f32,
    /// Bytes this client may still be sent (refilled at each snapshot up to a cap).
    pub byte_tokens: f32,
    /// The own position and ack last sent to this client.
    pub sent_self: Option<([f32; 2], u32)>,
    /// Avatars to report as gone in the next snapshot.
    pub gone: Vec<AvatarId>,
    /// Added to the tick to give this client's turn, which says when it is sent snapshots,
    /// looked at in full and re-selected (set at its first snapshot; see the replication
    /// system's cadence).
    pub turn_offset: u32,
}

/// One other avatar a client is interested in (16 bytes: a crowd's clients hold hundreds of
/// thousands of these, and replication walks them at every snapshot).
#[derive(Debug, Clone, Copy)]
pub struct Interest {
    /// Where to read its position in the slot table.
    pub slot: u32,
    pub id: AvatarId,
    /// Quantized position last sent ([`Interest::NEVER`]: not sent yet).
    pub sent: (u16, u16),
    /// Grows while the client's copy is stale, nearer avatars faster; the highest go first.
    pub priority: f32,
}

impl Interest {
    /// `sent` of an avatar the client has not been sent (no quantized position is this).
    pub const NEVER: (u16, u16) = (u16::MAX, u16::MAX);

    pub fn new(slot: u32, id: AvatarId) -> Interest {
        Interest {
            slot,
            id,
            sent: Self::NEVER,
            priority: 0.0,
        }
    }

    /// Whether the client has been sent this avatar's position.
    pub fn was_sent(&self) -> bool {
        self.sent != Self::NEVER
    }
}
