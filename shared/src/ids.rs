//! Identifiers shared by the server and the client.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One avatar in a space. Assigned by the server, never reused while the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AvatarId(pub u32);

/// One zone of a map: its index in [`crate::map::Map::zones`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ZoneId(pub u16);

impl fmt::Display for AvatarId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "avatar#{}", self.0)
    }
}
