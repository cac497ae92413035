//! Replication: sends each client the avatars in its area of interest.
//!
//! Each client has a byte budget (`replication_bytes_per_sec`). Every avatar the client can
//! see whose position it has stale gains priority each tick, nearer ones faster; each tick
//! the highest-priority updates that fit the budget are sent. So a client in a crowd gets
//! its neighbours often and far avatars less often, and never more bytes than the budget
//! (plus its own position, which is always sent when it changes).

use crate::space::components::{Avatar, ClientView, KnownAvatar, Motion, Position, quantize};
use crate::space::resources::{Outbox, Recipient, SpaceClock, SpaceSettings};
use crate::space::spatial_grid::SpatialGrid;
use bevy_ecs::prelude::*;
use bytes::Bytes;
use quad_shared::AvatarId;
use quad_shared::protocol::{AvatarUpdate, ServerMsg, Snapshot};

/// A conservative size of one `AvatarUpdate` on the wire, bytes.
const UPDATE_BYTES: f32 = 12.0;
/// Ticks' worth of budget a client may bank.
const BURST_TICKS: f32 = 4.0;

/// Buffers reused across clients and ticks, so a tick allocates only the frames it sends.
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<(f32, AvatarId)>,
    snapshot: Snapshot,
    buf: Vec<u8>,
}

pub fn replicate(
    clock: Res<SpaceClock>,
    settings: Res<SpaceSettings>,
    grid: Res<SpatialGrid>,
    mut outbox: ResMut<Outbox>,
    mut clients: Query<(&Avatar, &Position, &Motion, &mut ClientView)>,
    mut scratch: Local<Scratch>,
) {
    let tick = clock.tick;
    let aoi = settings.area_of_interest;
    let per_tick = settings.replication_bytes_per_sec as f32 / settings.tick_hz.max(1) as f32;
    let Scratch {
        candidates,
        snapshot,
        buf,
    } = &mut *scratch;

    for (avatar, position, motion, mut view) in &mut clients {
        let view = view.bypass_change_detection();
        view.byte_tokens = (view.byte_tokens + per_tick).min(per_tick * BURST_TICKS);

        grid.for_each_within(position.0, aoi, |entry, d2| {
            if entry.id == avatar.id {
                return;
            }
            let current = quantize(entry.pos);
            let distance = d2.sqrt();
            view.known
                .entry(entry.id)
                .and_modify(|k| {
                    k.current = current;
                    k.seen_tick = tick;
                    k.distance = distance;
                })
                .or_insert_with(|| KnownAvatar::new(current, tick, distance));
        });

        snapshot.avatars.clear();
        snapshot.gone.clear();
        candidates.clear();
        view.known.retain(|id, k| {
            if k.seen_tick != tick {
                if k.sent.is_some() {
                    snapshot.gone.push(*id);
                }
                return false;
            }
            if k.stale() {
                // Never-sent avatars start ahead; nearer avatars age up to 4x faster.
                let closeness = 1.0 - (k.distance / aoi).min(1.0);
                k.priority += 1.0 + 3.0 * closeness + if k.sent.is_none() { 4.0 } else { 0.0 };
                candidates.push((k.priority, *id));
            }
            true
        });

        let own = (position.0.to_array(), motion.last_seq);
        snapshot.you = (view.sent_self != Some(own)).then_some(own.0);

        let fit = (view.byte_tokens / UPDATE_BYTES).max(0.0) as usize;
        if fit < candidates.len() {
            if fit > 0 {
                candidates.select_nth_unstable_by(fit - 1, |a, b| b.0.total_cmp(&a.0));
            }
            candidates.truncate(fit);
        }
        for &(_, id) in candidates.iter() {
            if let Some(k) = view.known.get_mut(&id) {
                k.sent = Some(k.current);
                k.priority = 0.0;
                snapshot
                    .avatars
                    .push(AvatarUpdate(id, k.current.0, k.current.1));
            }
        }

        if snapshot.you.is_none() && snapshot.avatars.is_empty() && snapshot.gone.is_empty() {
            continue;
        }
        snapshot.tick = tick;
        snapshot.ack = motion.last_seq;
        view.sent_self = Some(own);

        buf.clear();
        let msg = ServerMsg::Snapshot(std::mem::take(snapshot));
        let encoded = quad_shared::codec::encode_into(&msg, buf);
        let ServerMsg::Snapshot(s) = msg else {
            unreachable!("constructed as a snapshot just above")
        };
        *snapshot = s;
        match encoded {
            Ok(()) => {
                view.byte_tokens -= buf.len() as f32;
                outbox
                    .frames
                    .push((Recipient::One(avatar.id), Bytes::copy_from_slice(buf)));
            }
            Err(e) => tracing::error!(id = %avatar.id, "cannot encode a snapshot: {e}"),
        }
    }
}
