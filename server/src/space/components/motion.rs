//! `Motion`: movement input waiting to be applied, and the time budget that caps speed.

use bevy_ecs::prelude::*;
use quad_shared::protocol::Input;

/// Input received since the last tick, and how much movement the avatar may still make.
#[derive(Component, Debug, Default)]
pub struct Motion {
    /// Inputs in arrival order, applied at the next tick.
    pub pending: Vec<Input>,
    /// The last input sequence number applied (acknowledged to the client).
    pub last_seq: u32,
    /// Steps of movement the avatar has earned by real time passing and not used yet.
    /// Grows by elapsed time each tick, capped, so no client can move faster than
    /// `SPEED` on average however many inputs it sends.
    pub budget_steps: f32,
}

impl Motion {
    /// Most inputs that may wait for one tick; more and the client is sending too fast.
    pub const MAX_PENDING: usize = 32;
    /// Most steps an avatar can bank: half a second, enough to absorb network jitter.
    pub const MAX_BUDGET_STEPS: f32 = 30.0;
}
