//! Movement: applies each avatar's pending input with `quad_shared::movement`, within the
//! time budget that caps its speed.

use crate::space::components::{Avatar, Motion, Position};
use crate::space::resources::{SlotTable, SpaceClock, SpaceMap};
use bevy_ecs::prelude::*;
use quad_shared::movement::{self, STEP_SECONDS};

pub fn movement(
    clock: Res<SpaceClock>,
    map: Res<SpaceMap>,
    mut slots: ResMut<SlotTable>,
    mut avatars: Query<(&Avatar, &mut Motion, &mut Position)>,
) {
    let earned = clock.dt / STEP_SECONDS;
    for (avatar, mut motion, mut position) in &mut avatars {
        // Motion is bookkeeping nobody watches for changes; Position is watched, so it is
        // written only when it really changes.
        let motion = motion.bypass_change_detection();
        motion.budget_steps = (motion.budget_steps + earned).min(Motion::MAX_BUDGET_STEPS);
        if motion.pending.is_empty() {
            continue;
        }
        let mut p = position.0;
        for input in motion.pending.drain(..) {
            // A client that sends more movement than time allows is clamped, not trusted.
            let allowed = (input.steps as f32)
                .min(motion.budget_steps.floor())
                .max(0.0) as u8;
            p = movement::apply(&map.0.collision, p, input.dir, allowed);
            motion.budget_steps -= allowed as f32;
            motion.last_seq = input.seq;
        }
        if p != position.0 {
            position.0 = p;
            if let Some(wire) = slots.wire.get_mut(avatar.slot as usize) {
                *wire = quad_shared::protocol::quantize(p.to_array());
            }
        }
    }
}
