//! Who owns the space's world: a lease in Redis (`quad:space`, the owner's node name, a few
//! seconds long) that its owner renews every second. This is the decision part, a plain
//! state machine: it is told who holds the lease after each claim and says what the node
//! must do; `super` does the Redis I/O.
//!
//! The owner re-asserts the lease at every beat, so it keeps it across a Redis restart
//! that lost the key. Another node takes a vacant lease only after seeing it vacant at
//! [`VACANT_BEATS`] beats in a row, which leaves the owner a beat to re-assert first.

/// Beats a lease must be seen vacant before a node that does not own it takes it.
pub const VACANT_BEATS: u32 = 2;

/// What the node must do after a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed.
    Stay,
    /// This node has just become the owner: it takes the space over.
    TookOver,
    /// Another node owns the space (newly, or a different one than before): route to it.
    Follow(String),
    /// This node owned the space and another took it (this node was cut off for longer
    /// than the lease): it must stop serving the space at once.
    Lost(String),
}

/// A node's view of the lease.
#[derive(Clone, Debug, Default)]
pub struct Lease {
    owns: bool,
    /// Who this node last saw owning it, if another node.
    follows: Option<String>,
    /// Consecutive beats the lease was seen vacant.
    vacant: u32,
}

impl Lease {
    /// Whether this node owns the space.
    pub fn owns(&self) -> bool {
        self.owns
    }

    /// Whether this beat's claim should take the lease if it is vacant. `first`: the node's
    /// first claim, at start-up, when nobody can have been cut off from it.
    pub fn should_take(&self, first: bool) -> bool {
        self.owns || first || self.vacant + 1 >= VACANT_BEATS
    }

    /// Who holds the lease after this beat's claim (`None`: vacant); `me` is this node.
    pub fn observe(&mut self, me: &str, holder: Option<&str>) -> Step {
        match holder {
            None => {
                // (An owner's claim re-takes a vacant lease, so only followers see this.)
                self.vacant = self.vacant.saturating_add(1);
                Step::Stay
            }
            Some(h) if h == me => {
                self.vacant = 0;
                self.follows = None;
                if self.owns {
                    Step::Stay
                } else {
                    self.owns = true;
                    Step::TookOver
                }
            }
            Some(other) => {
                self.vacant = 0;
                if self.owns {
                    self.owns = false;
                    self.follows = Some(other.to_owned());
                    return Step::Lost(other.to_owned());
                }
                if self.follows.as_deref() == Some(other) {
                    Step::Stay
                } else {
                    self.follows = Some(other.to_owned());
                    Step::Follow(other.to_owned())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_node_takes_the_lease_at_once_and_keeps_it() {
        let mut lease = Lease::default();
        assert!(lease.should_take(true));
        assert_eq!(lease.observe("a", Some("a")), Step::TookOver);
        assert!(lease.owns());
        assert_eq!(lease.observe("a", Some("a")), Step::Stay);
        assert!(lease.should_take(false), "the owner re-asserts every beat");
    }

    #[test]
    fn a_follower_takes_a_vacant_lease_only_after_two_beats() {
        let mut lease = Lease::default();
        assert_eq!(lease.observe("b", Some("a")), Step::Follow("a".into()));
        assert_eq!(lease.observe("b", Some("a")), Step::Stay);
        assert!(
            !lease.should_take(false),
            "a live owner's lease is not taken"
        );
        // The owner died: its lease ran out.
        assert_eq!(lease.observe("b", None), Step::Stay);
        assert!(
            lease.should_take(false),
            "seen vacant once: the next claim takes it"
        );
        assert_eq!(lease.observe("b", Some("b")), Step::TookOver);
        assert!(lease.owns());
    }

    #[test]
    fn a_vacant_lease_seen_once_is_not_taken_if_the_owner_came_back() {
        let mut lease = Lease::default();
        lease.observe("b", Some("a"));
        lease.observe("b", None);
        // The owner re-asserted it (e.g. after a Redis restart) before this node's claim.
        assert_eq!(lease.observe("b", Some("a")), Step::Stay);
        assert!(!lease.should_take(false));
        assert!(!lease.owns());
    }

    #[test]
    fn an_owner_whose_lease_another_node_holds_has_lost_the_space() {
        let mut lease = Lease::default();
        lease.observe("a", Some("a"));
        assert_eq!(lease.observe("a", Some("b")), Step::Lost("b".into()));
        assert!(!lease.owns());
        assert!(!lease.should_take(false));
    }

    #[test]
    fn a_new_owner_is_followed_again() {
        let mut lease = Lease::default();
        lease.observe("c", Some("a"));
        assert_eq!(lease.observe("c", Some("b")), Step::Follow("b".into()));
    }
}
