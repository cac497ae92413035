//! Spatial index: rebuilds the `SpatialGrid` from every avatar's position.

use crate::space::components::{Avatar, InZone, Position};
use crate::space::resources::{RoomPresence, SpaceMap};
use crate::space::spatial_grid::{GridEntry, SpatialGrid};
use bevy_ecs::prelude::*;

pub fn spatial_index(
    map: Res<SpaceMap>,
    presence: Res<RoomPresence>,
    mut grid: ResMut<SpatialGrid>,
    avatars: Query<(&Avatar, &Position, &InZone)>,
) {
    let map = &map.0;
    grid.rebuild(avatars.iter().map(|(avatar, position, zone)| {
        // Rooms use the SFU and silent zones have no media: no proximity links there.
        let proximity = zone
            .0
            .and_then(|z| map.zone(z))
            .is_none_or(|z| z.kind == quad_shared::map::ZoneKind::Open);
        GridEntry {
            id: avatar.id,
            slot: avatar.slot,
            pos: position.0,
            proximity,
            // Walking into a room keeps the hallway links until the room plays.
            keeps_links: proximity || presence.entering(avatar.id),
        }
    }));
}
