//! Class plan: keeps class membership in step with classroom zones. Walking into a
//! classroom joins its class (the class's state is sent, devices the teacher turned off
//! stay off); walking out leaves it at once. It then sends each class that changed since
//! the last tick its state, once.

use crate::space::class::Classes;
use crate::space::components::{Avatar, Identity, InZone};
use crate::space::resources::{Outbox, SpaceMap};
use bevy_ecs::prelude::*;
use quad_shared::map::ZoneKind;

pub fn class_plan(
    map: Res<SpaceMap>,
    mut classes: ResMut<Classes>,
    mut outbox: ResMut<Outbox>,
    moved: Query<(&Avatar, &Identity, &InZone), Changed<InZone>>,
) {
    for (avatar, identity, zone) in &moved {
        let room = zone
            .0
            .and_then(|z| map.0.zone(z))
            .filter(|z| z.kind == ZoneKind::Classroom);
        match room {
            Some(room) => classes.enter(
                &mut outbox,
                (avatar.id, identity.role, &identity.user, &avatar.name),
                room.id,
                (&room.name, room.capacity),
            ),
            None => classes.leave(&mut outbox, avatar.id),
        }
    }
    // Everything that changed a class since the last tick (here, and commands between
    // ticks) reaches its room once, with the latest state.
    classes.send_announced(&mut outbox);
}
