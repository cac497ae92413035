//! Cadence: on which ticks the work that need not run every tick runs, spread so that every
//! tick carries about the same load.
//!
//! Each client is sent a snapshot about 10 times a second ([`SNAPSHOTS_PER_SEC`]): at 20 Hz
//! every other tick, so each tick serves a part of the clients. Its interest list's far
//! tier is looked at every [`FAR_TIER_SNAPSHOTS`]th snapshot and the list re-selected every
//! [`REFRESH_SNAPSHOTS`]th, staggered across clients. The proximity links are planned 10
//! times a second too, on one tick of each snapshot period; that tick serves fewer clients
//! ([`LINK_TICK_WEIGHT`] against [`OTHER_TICK_WEIGHT`]), so planning and replication add up
//! to about the same on every tick. Below 10 Hz all of it happens every tick.

use crate::space::components::ClientView;

/// Snapshots a client is sent per second, at most: as often as its neighbours' positions
/// are looked at (the byte budget sends about 14 updates a snapshot, and a snapshot every
/// tick would only split them in two frames, each with its own header). The proximity
/// links are planned as often.
const SNAPSHOTS_PER_SEC: u16 = 10;
/// The interest list is re-selected every this many snapshots (0.8 s; the area of interest
/// reaches past the screen, so newcomers appear before they are in view).
const REFRESH_SNAPSHOTS: u32 = 8;
/// The nearest entries of an interest list are checked at every snapshot...
pub const NEAR_TIER: usize = 12;
/// ...the rest every this many snapshots (staggered across clients), with weight to match.
const FAR_TIER_SNAPSHOTS: u32 = 4;
/// The share of clients whose snapshots fall on the tick that plans the links, against
/// that of each other tick. At 20 Hz, 3 to 5: 37.5% of the clients get theirs on that tick
/// and 62.5% on the other. With 10,000 wandering avatars this gave the two ticks about the
/// same time (`world_tick`'s crowd, timed in pairs: 2 to 3 and 3 to 4 left the planning
/// tick 0.4-0.8 ms the longer).
const LINK_TICK_WEIGHT: u32 = 3;
const OTHER_TICK_WEIGHT: u32 = 5;

/// When a client is sent a snapshot, what it is sent then, and when links are planned.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// Ticks between a client's snapshots, and between two link plans.
    pub every: u32,
}

impl Cadence {
    pub fn new(tick_hz: u16) -> Cadence {
        Cadence {
            every: u32::from((tick_hz / SNAPSHOTS_PER_SEC).max(1)),
        }
    }

    /// Whether the proximity links are planned on `tick`.
    pub fn plans_links(self, tick: u32) -> bool {
        tick.is_multiple_of(self.every)
    }

    /// Which tick of each period (`0..every`, 0 being the one that plans the links) gives
    /// the client with `id` its snapshots: fixed per client, spread by a hash of the id with
    /// the weights above.
    fn phase(self, id: u32) -> u32 {
        if self.every == 1 {
            return 0;
        }
        let total = LINK_TICK_WEIGHT + OTHER_TICK_WEIGHT * (self.every - 1);
        // Fibonacci hashing: consecutive ids spread evenly over the high bits.
        let at = (id.wrapping_mul(0x9E37_79B9) >> 16) % total;
        match at.checked_sub(LINK_TICK_WEIGHT) {
            None => 0,
            Some(rest) => 1 + rest / OTHER_TICK_WEIGHT,
        }
    }

    /// What is added to the tick to give the client with `id` its turn (kept in its
    /// [`ClientView::turn_offset`], so that hashing and dividing happen once per client).
    /// The turn is a multiple of `every` on the client's snapshot ticks, and `every * id`
    /// staggers its refreshes and far tier against other clients'.
    pub fn offset(self, id: u32) -> u32 {
        // `phase` ticks after the planning tick, `tick + (every - phase)` is a multiple of
        // `every`.
        let to_next = (self.every - self.phase(id)) % self.every;
        to_next.wrapping_add(self.every.wrapping_mul(id))
    }

    /// A client's turn on `tick` (see [`Cadence::offset`]).
    pub fn turn(view: &ClientView, tick: u32) -> u32 {
        tick.wrapping_add(view.turn_offset)
    }

    /// Whether a client is sent a snapshot this tick (a new one at once).
    pub fn visits(self, view: &ClientView, tick: u32) -> bool {
        !view.selected || Self::turn(view, tick).is_multiple_of(self.every)
    }

    /// Whether a visited client's interest list is re-selected this tick.
    pub fn due(self, view: &ClientView, tick: u32) -> bool {
        !view.selected || Self::turn(view, tick).is_multiple_of(self.every * REFRESH_SNAPSHOTS)
    }

    /// Whether the far tier is checked on `turn`.
    fn far_turn(self, turn: u32) -> bool {
        turn.is_multiple_of(self.every * FAR_TIER_SNAPSHOTS)
    }

    /// The entries of an interest list of `len` that a snapshot on `turn` checks: the near
    /// tier, and the far tier when it is its turn.
    pub fn checked(self, len: usize, turn: u32) -> std::ops::Range<usize> {
        let end = if self.far_turn(turn) {
            len
        } else {
            NEAR_TIER.min(len)
        };
        0..end
    }

    /// How many ticks pass between two looks at entry `i` of an interest list.
    pub fn interval(self, i: usize) -> u32 {
        if i < NEAR_TIER {
            self.every
        } else {
            self.every * FAR_TIER_SNAPSHOTS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view of a client with `id` after its first snapshot.
    fn view(cadence: Cadence, id: u32) -> ClientView {
        ClientView {
            selected: true,
            turn_offset: cadence.offset(id),
            ..ClientView::default()
        }
    }

    #[test]
    fn links_are_planned_ten_times_a_second_or_every_tick_below_that() {
        for (tick_hz, per_sec) in [(5, 5), (10, 10), (20, 10), (30, 10), (60, 10)] {
            let cadence = Cadence::new(tick_hz);
            // Ten seconds' ticks, from an arbitrary tick.
            let planned = (1_000..1_000 + u32::from(tick_hz) * 10)
                .filter(|&t| cadence.plans_links(t))
                .count();
            assert_eq!(planned, per_sec * 10, "{tick_hz} Hz");
        }
    }

    #[test]
    fn the_tick_that_plans_links_sends_fewer_snapshots() {
        for tick_hz in [20u16, 30, 60] {
            let cadence = Cadence::new(tick_hz);
            let every = cadence.every as usize;
            let clients = 10_000u32;
            // How many clients each tick of a period serves.
            let mut served = vec![0usize; every];
            for id in 1..=clients {
                let view = view(cadence, id);
                let ticks: Vec<usize> = (0..every)
                    .filter(|&t| cadence.visits(&view, 3_600 + t as u32))
                    .collect();
                assert_eq!(ticks.len(), 1, "client {id} at {tick_hz} Hz: once a period");
                served[ticks[0]] += 1;
            }
            // 3,600 is a multiple of every period here: its first tick plans the links.
            assert!(cadence.plans_links(3_600));
            let total = (LINK_TICK_WEIGHT + OTHER_TICK_WEIGHT * (cadence.every - 1)) as f64;
            let share = |n: usize| n as f64 / f64::from(clients);
            let expect_link = f64::from(LINK_TICK_WEIGHT) / total;
            let expect_other = f64::from(OTHER_TICK_WEIGHT) / total;
            assert!(
                (share(served[0]) - expect_link).abs() < 0.02,
                "{tick_hz} Hz: {served:?}"
            );
            for &n in &served[1..] {
                assert!(
                    (share(n) - expect_other).abs() < 0.02,
                    "{tick_hz} Hz: {served:?}"
                );
            }
            assert!(served[1..].iter().all(|&n| n > served[0]), "{served:?}");
        }
    }

    #[test]
    fn below_ten_hertz_everyone_is_served_every_tick() {
        let cadence = Cadence::new(5);
        for id in [1, 2, 3, 1_000] {
            let view = view(cadence, id);
            assert!((0..20).all(|t| cadence.visits(&view, t)));
        }
    }
}
