//! Room plan: when an avatar walks into a classroom zone it leaves proximity (the spatial
//! index gives it no links there, so the media planner disconnects its peers) and joins the
//! room's media through the SFU: `JoinRoomMedia`; walking out sends `LeaveRoomMedia`. The
//! moves are queued for the space task, which tells the SFU.

use crate::space::components::{Avatar, InZone};
use crate::space::resources::{Outbox, Recipient, RoomMove, RoomPresence, SpaceMap};
use bevy_ecs::prelude::*;
use quad_shared::map::ZoneKind;
use quad_shared::protocol::ServerMsg;

pub fn room_plan(
    map: Res<SpaceMap>,
    mut presence: ResMut<RoomPresence>,
    mut outbox: ResMut<Outbox>,
    moved: Query<(&Avatar, &InZone), Changed<InZone>>,
) {
    for (avatar, zone) in &moved {
        let room = zone
            .0
            .and_then(|z| map.0.zone(z))
            .filter(|z| z.kind == ZoneKind::Classroom);
        let now = room.map(|z| z.id);
        let before = presence.room_of.get(&avatar.id).copied();
        if now == before {
            continue;
        }
        if let Some(old) = before {
            presence.room_of.remove(&avatar.id);
            outbox.push(
                Recipient::One(avatar.id),
                &ServerMsg::LeaveRoomMedia { room: old },
            );
        }
        if let Some(room) = room {
            presence.room_of.insert(avatar.id, room.id);
            outbox.push(
                Recipient::One(avatar.id),
                &ServerMsg::JoinRoomMedia {
                    room: room.id,
                    name: room.name.clone(),
                },
            );
        }
        presence.moves.push(RoomMove {
            id: avatar.id,
            name: avatar.name.clone(),
            to: room.map(|z| (z.id, z.name.clone())),
        });
    }
}
