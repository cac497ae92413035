//! `quad-shared`: what the Quad server and the browser client must agree on.
//!
//! - [`protocol`]: the messages (`ClientMsg`, `ServerMsg`), the protocol version and which
//!   messages are legal in which session state.
//! - [`codec`]: the MessagePack frame codec and its size limit.
//! - [`map`]: the campus map, loaded from Tiled JSON (`.tmj`): tiles, collision, zones, spawn.
//! - [`movement`]: the one movement function, used by the server to validate input and by the
//!   client to predict.
//! - [`proximity`]: the rules for who is linked with whom outside rooms (radii with
//!   hysteresis, a cap per avatar) and the audio fall-off that goes with them.
//! - [`media`]: what media streams and simulcast layers are called on the wire.
//! - [`ids`]: the identifiers of avatars and zones.
//!
//! No tokio, no web-sys: this crate compiles for native targets and `wasm32-unknown-unknown`,
//! and it never panics on input (frames, map files).

pub mod codec;
pub mod ids;
pub mod map;
pub mod media;
pub mod movement;
pub mod protocol;
pub mod proximity;

pub use ids::{AvatarId, ZoneId};
