//! `Avatar`: who an entity is.

use bevy_ecs::prelude::*;
use quad_shared::AvatarId;

/// A person's avatar in the space.
#[derive(Component, Debug, Clone)]
pub struct Avatar {
    pub id: AvatarId,
    /// Its place in [`crate::space::resources::SlotTable`].
    pub slot: u32,
    pub name: String,
}
