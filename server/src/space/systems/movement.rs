//! Movement: applies each avatar's pending input with `quad_shared::movement`, within the
//! time budget that caps its speed, and within the classes' rules: a student in focus mode
//! does not walk, and nobody walks into a room that is locked to them. A refused input is
//! still acknowledged, so the client's prediction snaps back to where the server keeps it.

use crate::space::class::Classes;
use crate::space::components::{Avatar, Identity, Motion, Position};
use crate::space::resources::{
    AppliedInputs, InputQueues, Outbox, Recipient, SlotTable, SpaceClock, SpaceMap, SpaceSettings,
};
use bevy_ecs::prelude::*;
use quad_shared::map::{Map, ZoneKind};
use quad_shared::movement::{self, STEP_SECONDS};
use quad_shared::protocol::{ErrorMsg, ServerMsg};
use quad_shared::{AvatarId, ZoneId};

/// Seconds between two "you cannot walk there" errors to one client.
const REFUSAL_EVERY_SECS: f32 = 2.0;

pub fn movement(
    (clock, settings): (Res<SpaceClock>, Res<SpaceSettings>),
    map: Res<SpaceMap>,
    mut classes: ResMut<Classes>,
    mut outbox: ResMut<Outbox>,
    mut slots: ResMut<SlotTable>,
    (mut inputs, mut applied): (ResMut<InputQueues>, ResMut<AppliedInputs>),
    mut avatars: Query<(Entity, &Avatar, &Identity, &mut Motion, &mut Position)>,
) {
    applied.0.clear();
    let earned = clock.dt / STEP_SECONDS;
    let restricted = classes.restricts_movement();
    let mut refusals: Vec<(AvatarId, ErrorMsg)> = Vec::new();
    for (entity, avatar, identity, mut motion, mut position) in &mut avatars {
        // Motion is bookkeeping nobody watches for changes; Position is watched, so it is
        // written only when it really changes.
        let motion = motion.bypass_change_detection();
        motion.budget_steps = (motion.budget_steps + earned).min(Motion::MAX_BUDGET_STEPS);
        let Some(queue) = inputs.0.get_mut(avatar.slot as usize) else {
            continue;
        };
        if queue.pending.is_empty() {
            continue;
        }
        applied.0.push(entity);
        let mut p = position.0;
        let walk = if restricted {
            classes.may_walk(avatar.id, identity.role)
        } else {
            Ok(())
        };
        for input in queue.pending.drain(..) {
            motion.last_seq = input.seq;
            if let Err(why) = &walk {
                if input.dir != 0 {
                    refusals.push((avatar.id, why.clone()));
                }
                continue;
            }
            // A client that sends more movement than time allows is clamped, not trusted.
            // (The cast floors the non-negative budget without a libm call.)
            let allowed = input.steps.min(motion.budget_steps.max(0.0) as u8);
            let next = movement::apply(&map.0.collision, p, input.dir, allowed);
            motion.budget_steps -= allowed as f32;
            if restricted
                && let Some(room) = room_entered(&map.0, p, next)
                && let Err(why) = classes.may_enter(identity.role, &identity.user, room)
            {
                refusals.push((avatar.id, why));
                continue;
            }
            p = next;
        }
        if p != position.0 {
            position.0 = p;
            slots.set_wire(avatar.slot, quad_shared::protocol::quantize(p.to_array()));
        }
    }
    let every = (REFUSAL_EVERY_SECS * f32::from(settings.tick_hz)) as u32;
    for (id, why) in refusals {
        let last = classes.refusals_told.get(&id).copied();
        if last.is_none_or(|t| clock.tick.wrapping_sub(t) >= every) {
            classes.refusals_told.insert(id, clock.tick);
            outbox.push(Recipient::One(id), &ServerMsg::Error(why));
        }
    }
}

/// The classroom a step from `from` to `to` walks into, if it walks into one.
fn room_entered(map: &Map, from: glam::Vec2, to: glam::Vec2) -> Option<ZoneId> {
    let room = map
        .zone_at(to)
        .filter(|z| map.zone(*z).is_some_and(|z| z.kind == ZoneKind::Classroom))?;
    (map.zone_at(from) != Some(room)).then_some(room)
}
