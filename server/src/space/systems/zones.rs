//! Zones: keeps each moved avatar's `InZone` in step with the map.

use crate::space::components::{InZone, Position};
use crate::space::resources::SpaceMap;
use bevy_ecs::prelude::*;

pub fn zones(map: Res<SpaceMap>, mut moved: Query<(&Position, &mut InZone), Changed<Position>>) {
    for (position, mut zone) in &mut moved {
        let now = map.0.zone_at(position.0);
        if zone.0 != now {
            zone.0 = now;
        }
    }
}
