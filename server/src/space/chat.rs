//! Chat routing: who a message reaches. Nearby: everyone within talking distance (the
//! proximity disconnect radius) when it is sent, in the same room or the same hallway;
//! room: everyone in the sender's class; space: everyone; direct: one person. The sender
//! gets its own line back (with the id it was given), so every client shows the same.
//!
//! Lines are queued in the [`Journal`] for the space task to store; the text was checked
//! by the session (size, rate, control characters).

use super::class::Classes;
use super::components::{Avatar, Identity, Position};
use super::resources::{Outbox, Recipient, SpaceSettings};
use super::spatial_grid::SpatialGrid;
use crate::store::{AuditRecord, ChatRecord};
use bevy_ecs::prelude::*;
use quad_shared::AvatarId;
use quad_shared::protocol::{ChatLine, ChatScope, ChatTo, ErrorCode, ErrorMsg, ServerMsg};
use rustc_hash::FxHashMap;

/// What the world wants stored; the space task takes it after every call.
#[derive(Resource, Debug, Default)]
pub struct Journal {
    /// The next chat line's id (continues after the stored ones).
    pub next_chat_id: u64,
    pub chat: Vec<ChatRecord>,
    pub audit: Vec<AuditRecord>,
}

/// Routes one message from `from`; an error is for the sender.
pub fn send(
    world: &mut World,
    entities: &FxHashMap<AvatarId, Entity>,
    from: AvatarId,
    to: ChatTo,
    text: String,
    at_ms: u64,
) -> Result<(), ErrorMsg> {
    let Some(&sender) = entities.get(&from) else {
        return Ok(());
    };
    let (from_name, from_role, from_user, at) = {
        let (Some(avatar), Some(identity), Some(position)) = (
            world.get::<Avatar>(sender),
            world.get::<Identity>(sender),
            world.get::<Position>(sender),
        ) else {
            return Ok(());
        };
        (
            avatar.name.clone(),
            identity.role,
            identity.user.clone(),
            position.0,
        )
    };
    let classes = world.resource::<Classes>();
    let user_of = |id: AvatarId| -> Option<String> {
        entities
            .get(&id)
            .and_then(|e| world.get::<Identity>(*e))
            .map(|i| i.user.0.clone())
    };
    let (scope, recipients, to_name): (ChatScope, Vec<AvatarId>, Option<String>) = match to {
        ChatTo::Space => (ChatScope::Space, Vec::new(), None),
        ChatTo::Room => {
            let (members, room) = classes.classmates(from);
            let Some(room) = room else {
                return Err(ErrorMsg::new(
                    ErrorCode::WrongState,
                    "room chat works in a room: walk into one first",
                ));
            };
            (ChatScope::Room(room.to_owned()), members.to_vec(), None)
        }
        ChatTo::Nearby => {
            let radius = world
                .resource::<SpaceSettings>()
                .proximity
                .disconnect_radius;
            let mine = classes.class_of.get(&from).copied();
            let mut near = vec![from];
            world
                .resource::<SpatialGrid>()
                .for_each_within(at, radius, |entry, _| {
                    if entry.id != from && classes.class_of.get(&entry.id).copied() == mine {
                        near.push(entry.id);
                    }
                });
            (ChatScope::Nearby, near, None)
        }
        ChatTo::Direct(to) => {
            let name = entities
                .get(&to)
                .and_then(|e| world.get::<Avatar>(*e))
                .map(|a| a.name.clone());
            let Some(name) = name else {
                return Err(ErrorMsg::new(
                    ErrorCode::WrongState,
                    format!("{to} is not in the space"),
                ));
            };
            let mut both = vec![from];
            if to != from {
                both.push(to);
            }
            (ChatScope::Direct, both, Some(name))
        }
    };
    // Only nearby and direct history is per person.
    let stored_recipients: Vec<String> = match scope {
        ChatScope::Nearby | ChatScope::Direct => {
            recipients.iter().filter_map(|id| user_of(*id)).collect()
        }
        _ => Vec::new(),
    };
    let mut journal = world.resource_mut::<Journal>();
    journal.next_chat_id += 1;
    let line = ChatLine {
        id: journal.next_chat_id,
        at_ms,
        scope,
        from: Some(from),
        from_name,
        from_role,
        to_name,
        text,
    };
    journal.chat.push(ChatRecord {
        line: line.clone(),
        from_user: from_user.0,
        recipients: stored_recipients,
    });
    let msg = ServerMsg::Chat(line);
    let mut outbox = world.resource_mut::<Outbox>();
    if matches!(to, ChatTo::Space) {
        outbox.push(Recipient::Everyone, &msg);
    } else {
        match quad_shared::codec::encode(&msg) {
            Ok(frame) => {
                let frame = bytes::Bytes::from(frame);
                for id in recipients {
                    outbox.frames.push((Recipient::One(id), frame.clone()));
                }
            }
            Err(e) => tracing::error!("cannot encode a chat line: {e}"),
        }
    }
    Ok(())
}
