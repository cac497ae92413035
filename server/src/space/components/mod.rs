//! Components of the space's ECS world, one per file.

mod avatar;
mod client_view;
mod identity;
mod motion;
mod position;
mod zone;

pub use avatar::Avatar;
pub use client_view::{ClientView, Interest};
pub use identity::Identity;
pub use motion::Motion;
pub use position::Position;
pub use zone::InZone;
