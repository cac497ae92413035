//! `quad-client`: the browser client, in Rust compiled to WebAssembly.
//!
//! - [`game`]: plain Rust state that compiles and tests natively: own-avatar prediction and
//!   reconciliation, interpolation of the others, the roster, the camera. No web-sys here.
//! - [`room`]: classroom media state, also plain Rust: stream names, members, speakers.
//! - `web` (wasm32 only): the thin facade: WebSocket, Canvas 2D rendering, keyboard, the
//!   lobby, HUD and people list (real DOM), proximity peers and the classroom's SFU
//!   connection, screen sharing, and the `window.quad` test surface.

pub mod game;
pub mod room;

#[cfg(target_arch = "wasm32")]
mod web;
