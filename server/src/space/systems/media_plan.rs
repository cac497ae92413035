//! Media plan: diffs the wanted proximity links against the current ones and tells both
//! ends of each change: `ConnectPeer` (the higher id is the polite side, and each end
//! learns the other's microphone and camera state) or `DisconnectPeer`.

use crate::space::resources::{MediaStates, Outbox, ProximityGraph, Recipient};
use bevy_ecs::prelude::*;
use quad_shared::protocol::ServerMsg;

pub fn media_plan(
    mut graph: ResMut<ProximityGraph>,
    mut outbox: ResMut<Outbox>,
    media: Res<MediaStates>,
) {
    graph.commit(|a, b, linked| {
        if !linked {
            outbox.push(Recipient::One(a), &ServerMsg::DisconnectPeer { peer: b });
            outbox.push(Recipient::One(b), &ServerMsg::DisconnectPeer { peer: a });
            return;
        }
        outbox.push(
            Recipient::One(a),
            &ServerMsg::ConnectPeer {
                peer: b,
                polite: false,
                media: media.of(b),
            },
        );
        outbox.push(
            Recipient::One(b),
            &ServerMsg::ConnectPeer {
                peer: a,
                polite: true,
                media: media.of(a),
            },
        );
    });
}
