//! `Motion`: the last input applied, and the time budget that caps speed. (Input waiting
//! for the next tick is in [`crate::space::resources::InputQueues`].)

use bevy_ecs::prelude::*;

/// What movement the avatar has made and may still make.
#[derive(Component, Debug, Default)]
pub struct Motion {
    /// The last input sequence number applied (acknowledged to the client).
    pub last_seq: u32,
    /// Steps of movement the avatar has earned by real time passing and not used yet.
    /// Grows by elapsed time each tick, capped, so no client can move faster than
    /// `SPEED` on average however many inputs it sends.
    pub budget_steps: f32,
}

impl Motion {
    /// Most steps an avatar can bank: half a second, enough to absorb network jitter.
    pub const MAX_BUDGET_STEPS: f32 = 30.0;
}
