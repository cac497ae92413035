//! `Position`: where an avatar stands, authoritative.

use bevy_ecs::prelude::*;
use glam::Vec2;

/// World pixels. Only the movement system writes it after spawn.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Position(pub Vec2);
