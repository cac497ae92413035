//! Roster: announces who joined and who left since the last tick, encoded once for everyone.

use crate::space::resources::{Outbox, Recipient, RosterChanges};
use bevy_ecs::prelude::*;
use quad_shared::protocol::ServerMsg;

pub fn roster(mut changes: ResMut<RosterChanges>, mut outbox: ResMut<Outbox>) {
    if !changes.joined.is_empty() {
        let people = std::mem::take(&mut changes.joined);
        for chunk in people.chunks(crate::space::world::ROSTER_CHUNK) {
            outbox.push(
                Recipient::Everyone,
                &ServerMsg::PeopleJoined {
                    people: chunk.to_vec(),
                },
            );
        }
    }
    if !changes.left.is_empty() {
        let ids = std::mem::take(&mut changes.left);
        for chunk in ids.chunks(crate::space::world::ROSTER_CHUNK) {
            outbox.push(
                Recipient::Everyone,
                &ServerMsg::PeopleLeft {
                    ids: chunk.to_vec(),
                },
            );
        }
    }
}
