//! `Identity`: what a person is (teacher, student, guest) and who, for chat history.

use crate::auth::UserKey;
use bevy_ecs::prelude::*;
use quad_shared::protocol::Role;

/// Set at join from the join link (or as a guest); never changes during a session.
#[derive(Component, Debug, Clone)]
pub struct Identity {
    pub role: Role,
    pub user: UserKey,
}
