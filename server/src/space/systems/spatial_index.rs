//! Spatial index: rebuilds the `SpatialGrid` from every avatar's position.

use crate::space::components::{Avatar, Position};
use crate::space::spatial_grid::{GridEntry, SpatialGrid};
use bevy_ecs::prelude::*;

pub fn spatial_index(mut grid: ResMut<SpatialGrid>, avatars: Query<(Entity, &Avatar, &Position)>) {
    grid.clear();
    for (entity, avatar, position) in &avatars {
        grid.insert(GridEntry {
            entity,
            id: avatar.id,
            slot: avatar.slot,
            pos: position.0,
        });
    }
}
