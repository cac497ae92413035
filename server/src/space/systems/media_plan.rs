//! Media plan: diffs the wanted proximity links against the current ones and tells both
//! ends of each change: `ConnectPeer` (the higher id is the polite side) or `DisconnectPeer`.

use crate::space::resources::{Outbox, ProximityGraph, Recipient};
use bevy_ecs::prelude::*;
use quad_shared::protocol::ServerMsg;

pub fn media_plan(mut graph: ResMut<ProximityGraph>, mut outbox: ResMut<Outbox>) {
    let graph = &mut *graph;
    for &(a, b) in graph.links.difference(&graph.wanted) {
        outbox.push(Recipient::One(a), &ServerMsg::DisconnectPeer { peer: b });
        outbox.push(Recipient::One(b), &ServerMsg::DisconnectPeer { peer: a });
    }
    for &(a, b) in graph.wanted.difference(&graph.links) {
        outbox.push(
            Recipient::One(a),
            &ServerMsg::ConnectPeer {
                peer: b,
                polite: false,
            },
        );
        outbox.push(
            Recipient::One(b),
            &ServerMsg::ConnectPeer {
                peer: a,
                polite: true,
            },
        );
    }
    std::mem::swap(&mut graph.links, &mut graph.wanted);
}
