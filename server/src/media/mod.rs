//! Media through the server. [`sfu`] forwards classroom audio and video between the members
//! of a room without transcoding; it knows rooms only as ids and members as avatar ids, and
//! the space's room planner tells it who is where.

pub mod sfu;
