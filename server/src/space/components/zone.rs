//! `InZone`: the zone an avatar stands in.

use bevy_ecs::prelude::*;
use quad_shared::ZoneId;

/// Recomputed by the zones system whenever the avatar moves.
#[derive(Component, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InZone(pub Option<ZoneId>);
