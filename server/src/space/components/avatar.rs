//! `Avatar`: who an entity is.

use bevy_ecs::prelude::*;
use quad_shared::AvatarId;

/// A person's avatar in the space.
#[derive(Component, Debug, Clone)]
pub struct Avatar {
    pub id: AvatarId,
    pub name: String,
}
