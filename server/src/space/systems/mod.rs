//! The space's systems, one per file, registered here in the order they run each tick.

mod cadence;
mod class_plan;
mod media_plan;
mod movement;
pub mod proximity;
mod replicate;
pub mod room_plan;
mod roster;
mod spatial_index;
mod zones;

use bevy_ecs::schedule::{IntoScheduleConfigs, Schedule, SingleThreadedExecutor};

/// One tick: apply input, recompute zones, move avatars in and out of room media and
/// classes, rebuild the spatial index, recompute the proximity graph (10 times a second) and
/// send the media plan's changes, announce roster changes, then send each client what
/// changed in its area of interest (see `cadence` for what runs on which tick).
pub fn tick_schedule() -> Schedule {
    let mut schedule = Schedule::default();
    // One space is one task on one core; a multi-threaded executor would only add overhead.
    schedule.set_executor(SingleThreadedExecutor::new());
    schedule.add_systems(
        (
            movement::movement,
            zones::zones,
            room_plan::room_plan,
            class_plan::class_plan,
            spatial_index::spatial_index,
            proximity::proximity,
            media_plan::media_plan,
            roster::roster,
            replicate::replicate,
        )
            .chain(),
    );
    schedule
}
