//! Movement: the one function that moves an avatar, used by the server to apply input and by
//! the client to predict it.
//!
//! Input is a direction held for a whole number of fixed steps of [`STEP_SECONDS`]. An avatar
//! is a square of half-size [`AVATAR_HALF_SIZE`] that may not overlap a blocked tile; each
//! step moves at most `SPEED * STEP_SECONDS` (under a tile), so nothing can tunnel through a
//! wall. Both sides run the same `f32` operations in the same order, so prediction matches
//! the server exactly unless the server refused or clamped something.

use crate::map::CollisionGrid;
use glam::Vec2;

/// Walking speed, world pixels per second.
pub const SPEED: f32 = 160.0;
/// One movement step, in seconds.
pub const STEP_SECONDS: f32 = 1.0 / 60.0;
/// The most steps one input may cover; more is a teleport attempt and is refused.
pub const MAX_STEPS_PER_INPUT: u8 = 12;
/// Half the side of an avatar's collision square, pixels.
pub const AVATAR_HALF_SIZE: f32 = 10.0;

/// Direction bits of [`crate::protocol::Input::dir`].
pub mod dir {
    pub const UP: u8 = 1;
    pub const DOWN: u8 = 2;
    pub const LEFT: u8 = 4;
    pub const RIGHT: u8 = 8;
    /// Every valid bit; other bits make the input illegal.
    pub const ALL: u8 = UP | DOWN | LEFT | RIGHT;
    /// The eight headings a walker can hold (bots, benchmarks).
    pub const HEADINGS: [u8; 8] = [
        UP,
        DOWN,
        LEFT,
        RIGHT,
        UP | LEFT,
        UP | RIGHT,
        DOWN | LEFT,
        DOWN | RIGHT,
    ];
}

/// The unit velocity for direction bits (opposite keys cancel; diagonals are normalized).
pub fn heading(dir_bits: u8) -> Vec2 {
    let axis = |neg: u8, pos: u8| -> f32 {
        (dir_bits & pos != 0) as i8 as f32 - (dir_bits & neg != 0) as i8 as f32
    };
    let v = Vec2::new(axis(dir::LEFT, dir::RIGHT), axis(dir::UP, dir::DOWN));
    if v.x != 0.0 && v.y != 0.0 {
        v * std::f32::consts::FRAC_1_SQRT_2
    } else {
        v
    }
}

/// Moves one step from `pos` in direction `dir_bits`, sliding along walls.
pub fn step(grid: &CollisionGrid, pos: Vec2, dir_bits: u8) -> Vec2 {
    let delta = heading(dir_bits) * (SPEED * STEP_SECONDS);
    let mut p = pos;
    if delta.x != 0.0 {
        let moved = Vec2::new(p.x + delta.x, p.y);
        if !grid.box_blocked(moved, AVATAR_HALF_SIZE) {
            p = moved;
        }
    }
    if delta.y != 0.0 {
        let moved = Vec2::new(p.x, p.y + delta.y);
        if !grid.box_blocked(moved, AVATAR_HALF_SIZE) {
            p = moved;
        }
    }
    p
}

/// Applies `steps` steps of `dir_bits`.
pub fn apply(grid: &CollisionGrid, mut pos: Vec2, dir_bits: u8, steps: u8) -> Vec2 {
    // Where the steps end if nothing is in the way, by the same additions `step` makes.
    let delta = heading(dir_bits) * (SPEED * STEP_SECONDS);
    let mut end = pos;
    for _ in 0..steps {
        if delta.x != 0.0 {
            end.x += delta.x;
        }
        if delta.y != 0.0 {
            end.y += delta.y;
        }
    }
    // Every box a step tests lies inside the box swept from `pos` to `end` (the positions
    // move one way, so the extremes are the ends): if that one is clear, no step is stopped,
    // and one test does for them all. Away from walls, that is nearly always.
    if !grid.area_blocked(
        pos.min(end) - AVATAR_HALF_SIZE,
        pos.max(end) + AVATAR_HALF_SIZE,
    ) {
        return end;
    }
    for _ in 0..steps {
        pos = step(grid, pos, dir_bits);
    }
    pos
}

/// Whether an input is one an honest client could send.
pub fn input_is_legal(dir_bits: u8, steps: u8) -> Result<(), String> {
    if dir_bits & !dir::ALL != 0 {
        return Err(format!("unknown direction bits {dir_bits:#04x}"));
    }
    if steps > MAX_STEPS_PER_INPUT {
        return Err(format!(
            "one input may cover at most {MAX_STEPS_PER_INPUT} steps ({} ms); this one covers {steps}",
            (MAX_STEPS_PER_INPUT as f32 * STEP_SECONDS * 1000.0) as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10x10 room with walls all around and one pillar at tile (5, 5).
    fn room() -> CollisionGrid {
        let mut blocked = vec![false; 100];
        for i in 0..10 {
            blocked[i] = true;
            blocked[90 + i] = true;
            blocked[i * 10] = true;
            blocked[i * 10 + 9] = true;
        }
        blocked[55] = true;
        CollisionGrid::new(10, 10, 32, blocked)
    }

    #[test]
    fn walks_at_speed_in_open_floor() {
        let g = room();
        let p = apply(&g, Vec2::new(64.0, 64.0), dir::RIGHT, 6);
        assert!(
            (p.x - (64.0 + SPEED * STEP_SECONDS * 6.0)).abs() < 1e-3,
            "{p}"
        );
        assert_eq!(p.y, 64.0);
    }

    #[test]
    fn diagonal_is_not_faster() {
        let g = room();
        let start = Vec2::new(64.0, 64.0);
        let p = apply(&g, start, dir::RIGHT | dir::DOWN, 6);
        let straight = SPEED * STEP_SECONDS * 6.0;
        assert!(((p - start).length() - straight).abs() < 1e-3);
    }

    #[test]
    fn opposite_keys_cancel() {
        assert_eq!(heading(dir::LEFT | dir::RIGHT), Vec2::ZERO);
        assert_eq!(
            heading(dir::UP | dir::DOWN | dir::LEFT),
            Vec2::new(-1.0, 0.0)
        );
    }

    #[test]
    fn walls_stop_the_avatar() {
        let g = room();
        // Walk left for three seconds from inside the room: the wall at tile x=0 stops it.
        let p = apply(&g, Vec2::new(64.0, 64.0), dir::LEFT, 180);
        assert!(p.x >= 32.0 + AVATAR_HALF_SIZE, "went into the wall: {p}");
        assert!(p.x < 32.0 + AVATAR_HALF_SIZE + SPEED * STEP_SECONDS);
    }

    #[test]
    fn slides_along_a_wall_when_moving_diagonally() {
        let g = room();
        let p = apply(&g, Vec2::new(64.0, 48.0), dir::UP | dir::RIGHT, 60);
        assert!(p.y >= 32.0 + AVATAR_HALF_SIZE);
        assert!(p.x > 100.0, "did not slide: {p}");
    }

    #[test]
    fn pillar_blocks() {
        let g = room();
        // Pillar occupies x 160..192, y 160..192; walk right along y = 176.
        let p = apply(&g, Vec2::new(100.0, 176.0), dir::RIGHT, 120);
        assert!(
            p.x <= 160.0 - AVATAR_HALF_SIZE,
            "walked through the pillar: {p}"
        );
    }

    #[test]
    fn illegal_inputs_are_named() {
        assert!(input_is_legal(dir::UP, MAX_STEPS_PER_INPUT).is_ok());
        assert!(
            input_is_legal(dir::UP, 255)
                .unwrap_err()
                .contains("at most")
        );
        assert!(input_is_legal(0x30, 1).unwrap_err().contains("direction"));
    }

    /// The swept-box shortcut in `apply` gives exactly what stepping one by one gives, by
    /// walls, in corners and in the open, for every heading and step count.
    #[test]
    fn apply_matches_stepping_one_by_one() {
        let g = room();
        let mut checked_near_walls = 0;
        for xi in 0..64 {
            for yi in 0..64 {
                // From just inside the walls to the pillar and past it, off the pixel grid.
                let pos = Vec2::new(40.0 + xi as f32 * 3.7, 40.0 + yi as f32 * 3.9);
                if g.box_blocked(pos, AVATAR_HALF_SIZE) {
                    continue;
                }
                for &d in dir::HEADINGS.iter().chain(&[0, dir::UP | dir::DOWN]) {
                    for steps in [0, 1, 3, MAX_STEPS_PER_INPUT] {
                        let mut one_by_one = pos;
                        for _ in 0..steps {
                            one_by_one = step(&g, one_by_one, d);
                        }
                        let moved = apply(&g, pos, d, steps);
                        assert_eq!(
                            moved.to_array().map(f32::to_bits),
                            one_by_one.to_array().map(f32::to_bits),
                            "from {pos} heading {d} for {steps} steps"
                        );
                        let free = pos + heading(d) * (SPEED * STEP_SECONDS) * f32::from(steps);
                        if moved.distance(free) > 0.01 {
                            checked_near_walls += 1;
                        }
                    }
                }
            }
        }
        assert!(
            checked_near_walls > 1000,
            "too few walks were stopped by a wall"
        );
    }
}
