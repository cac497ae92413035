//! `quad-client`: the browser client, in Rust compiled to WebAssembly.
//!
//! - [`game`]: plain Rust state that compiles and tests natively: own-avatar prediction and
//!   reconciliation, interpolation of the others, the roster, the camera. No web-sys here.
//! - [`room`]: classroom media state, also plain Rust: stream names, members, speakers.
//! - [`chat`]: the chat lines held, in order, and the page's names for scopes and
//!   recipients; plain Rust.
//! - [`class`]: what the teacher's buttons do, what focus mode shows, when a student
//!   counts as watching; plain Rust.
//! - [`announce`]: what the page says to screen readers when the person's situation
//!   changes; plain Rust.
//! - [`records`]: class records as the page shows them (lengths, sizes, the live
//!   register's order); plain Rust.
//! - [`reconnect`]: what the page keeps to get its session back after a dropped
//!   connection, and when it tries again; plain Rust.
//! - `web` (wasm32 only): the thin facade: WebSocket, Canvas 2D rendering, keyboard, the
//!   lobby, HUD and people list (real DOM), the chat panel, proximity peers and the
//!   classroom's SFU connection, the class's tools, class records, screen sharing, and the `window.quad`
//!   test surface.

pub mod announce;
pub mod chat;
pub mod class;
pub mod game;
pub mod reconnect;
pub mod records;
pub mod room;

#[cfg(target_arch = "wasm32")]
mod web;
