//! Room plan: when an avatar walks into a classroom zone it joins the room's media through
//! the SFU (`JoinRoomMedia`); walking out sends `LeaveRoomMedia`. The moves are queued for
//! the space task, which tells the SFU.
//!
//! Switches make before they break, so a door costs no silence: walking in, the avatar's
//! hallway links stay until its client says the room plays (`MediaReady`); walking out, the
//! room media stays until its hallway links play. Either way the old media goes after
//! [`SWITCH_GRACE_SECS`] at most, and at once when there is nothing to wait for.

use crate::space::components::{Avatar, InZone};
use crate::space::resources::{
    Outbox, ProximityGraph, Recipient, RoomMove, RoomPresence, SpaceMap, SpaceSettings, Switch,
    SwitchKind,
};
use bevy_ecs::prelude::*;
use quad_shared::AvatarId;
use quad_shared::map::ZoneKind;
use quad_shared::protocol::ServerMsg;

/// The longest the old media of a switch stays, seconds.
pub const SWITCH_GRACE_SECS: f32 = 2.0;

pub fn room_plan(
    map: Res<SpaceMap>,
    settings: Res<SpaceSettings>,
    graph: Res<ProximityGraph>,
    mut presence: ResMut<RoomPresence>,
    mut outbox: ResMut<Outbox>,
    moved: Query<(&Avatar, &InZone), Changed<InZone>>,
) {
    let grace = ((SWITCH_GRACE_SECS * f32::from(settings.tick_hz)) as u32).max(1);
    // Switches that ran out, or wait for nothing: walked out with no one near, as a link
    // plan made since the avatar walked out says (links are not planned at every tick).
    let plans = graph.plans_committed();
    let done: Vec<AvatarId> = presence
        .switching
        .iter_mut()
        .filter_map(|(id, switch)| {
            switch.ticks_left = switch.ticks_left.saturating_sub(1);
            let nothing_to_wait_for = match switch.kind {
                SwitchKind::Leaving(_) => switch.plans_at_start != plans,
                SwitchKind::Entering => false,
            } && graph.peers_of(*id).len() == 0;
            (switch.ticks_left == 0 || nothing_to_wait_for).then_some(*id)
        })
        .collect();
    for id in done {
        finish_switch(&mut presence, &mut outbox, id);
    }

    for (avatar, zone) in &moved {
        let id = avatar.id;
        let room = zone
            .0
            .and_then(|z| map.0.zone(z))
            .filter(|z| z.kind == ZoneKind::Classroom);
        let now = room.map(|z| z.id);
        let leaving = match presence.switching.get(&id) {
            Some(Switch {
                kind: SwitchKind::Leaving(r),
                ..
            }) => Some(*r),
            _ => None,
        };
        if leaving.is_some() && leaving == now {
            // Back into the room it was walking out of: it never left.
            presence.switching.remove(&id);
            continue;
        }
        // Where its media is headed: out of the room it is leaving, or the room it is in.
        let headed = if leaving.is_some() {
            None
        } else {
            presence.room_of.get(&id).copied()
        };
        if headed == now {
            // From one open zone to another (or within the same room): nothing changes.
            continue;
        }
        // A switch in progress ends here: the avatar is on to the next place.
        finish_switch(&mut presence, &mut outbox, id);
        if let Some(old) = presence.room_of.get(&id).copied() {
            if now.is_none() {
                // Out into the open: the room stays until the hallway plays.
                presence.switching.insert(
                    id,
                    Switch {
                        kind: SwitchKind::Leaving(old),
                        ticks_left: grace,
                        plans_at_start: plans,
                    },
                );
                continue;
            }
            leave_room(&mut presence, &mut outbox, id, old);
        }
        if let Some(room) = room {
            presence.room_of.insert(id, room.id);
            outbox.push(
                Recipient::One(id),
                &ServerMsg::JoinRoomMedia {
                    room: room.id,
                    name: room.name.clone(),
                },
            );
            presence.moves.push(RoomMove {
                id,
                name: avatar.name.clone(),
                to: Some((room.id, room.name.clone())),
            });
            if graph.peers_of(id).len() > 0 {
                presence.switching.insert(
                    id,
                    Switch {
                        kind: SwitchKind::Entering,
                        ticks_left: grace,
                        plans_at_start: plans,
                    },
                );
            }
        }
    }
}

/// Ends `id`'s switch, if it has one: the old media goes.
pub fn finish_switch(presence: &mut RoomPresence, outbox: &mut Outbox, id: AvatarId) {
    match presence.switching.remove(&id) {
        Some(Switch {
            kind: SwitchKind::Leaving(room),
            ..
        }) => leave_room(presence, outbox, id, room),
        // The proximity system drops the hallway links at the next tick.
        Some(Switch {
            kind: SwitchKind::Entering,
            ..
        })
        | None => {}
    }
}

fn leave_room(
    presence: &mut RoomPresence,
    outbox: &mut Outbox,
    id: AvatarId,
    room: quad_shared::ZoneId,
) {
    if presence.room_of.get(&id) != Some(&room) {
        return;
    }
    presence.room_of.remove(&id);
    outbox.push(Recipient::One(id), &ServerMsg::LeaveRoomMedia { room });
    presence.moves.push(RoomMove {
        id,
        name: String::new(),
        to: None,
    });
}
