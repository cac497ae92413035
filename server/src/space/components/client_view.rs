//! `ClientView`: what one connected client has been told, for replication.

use bevy_ecs::prelude::*;
use glam::Vec2;
use quad_shared::AvatarId;
use rustc_hash::FxHashMap;

/// Replication state of one client: the avatars it knows of and what it was last sent.
#[derive(Component, Debug, Default)]
pub struct ClientView {
    /// Avatars in this client's area of interest, by id.
    pub known: FxHashMap<AvatarId, KnownAvatar>,
    /// Bytes this client may still be sent (refilled each tick up to a cap).
    pub byte_tokens: f32,
    /// The own position and ack last sent to this client.
    pub sent_self: Option<([f32; 2], u32)>,
}

/// One other avatar as a client knows it.
#[derive(Debug, Clone, Copy)]
pub struct KnownAvatar {
    /// Quantized position last sent (`None`: never sent yet).
    pub sent: Option<(u16, u16)>,
    /// Quantized position now.
    pub current: (u16, u16),
    /// Grows while the client's copy is stale; the most stale and nearest go first.
    pub priority: f32,
    /// The tick this avatar was last seen in the area of interest.
    pub seen_tick: u32,
    /// Distance from the client, pixels (for priority).
    pub distance: f32,
}

impl KnownAvatar {
    pub fn new(current: (u16, u16), tick: u32, distance: f32) -> Self {
        KnownAvatar {
            sent: None,
            current,
            priority: 0.0,
            seen_tick: tick,
            distance,
        }
    }

    pub fn stale(&self) -> bool {
        self.sent != Some(self.current)
    }
}

/// Quantizes a position as it travels on the wire.
pub fn quantize(p: Vec2) -> (u16, u16) {
    let u = quad_shared::protocol::AvatarUpdate::new(AvatarId(0), p.to_array());
    (u.1, u.2)
}
