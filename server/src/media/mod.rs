//! Media through the server. [`sfu`] forwards classroom audio and video between the members
//! of a room without transcoding; it knows rooms only as ids and members as avatar ids, and
//! the space's room planner tells it who is where. [`recording`] writes what a room's SFU
//! forwards to disk while its teacher records the class, and makes one file of it after.

pub mod recording;
pub mod sfu;
