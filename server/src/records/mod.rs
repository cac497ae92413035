//! Class records: what a class leaves behind for its teachers. [`register`] is a class
//! session's attendance and engagement (kept by the space as the class goes on, stored,
//! shown live to the teachers and downloaded as CSV after class). Recordings themselves
//! are made by `media::recording`; their rows are in the store.

pub mod register;
