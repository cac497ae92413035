//! `SpatialGrid`: a uniform hash grid of avatar positions, rebuilt each tick, so that "who
//! is near this point" costs the number of avatars nearby, not the number in the space.

use bevy_ecs::prelude::*;
use glam::Vec2;
use quad_shared::AvatarId;

/// One avatar as the grid stores it.
#[derive(Debug, Clone, Copy)]
pub struct GridEntry {
    pub id: AvatarId,
    pub slot: u32,
    pub pos: Vec2,
    /// Whether it takes part in proximity media (not in a room or silent zone).
    pub proximity: bool,
    /// Whether it keeps the links it has (true with `proximity`; also for a while after
    /// walking into a room, until the room's media plays).
    pub keeps_links: bool,
}

/// Avatars bucketed by square cells of `cell_size` pixels covering the map, stored cell
/// by cell in one array (row-major), so the cells of one row of a query are one slice.
#[derive(Resource, Debug)]
pub struct SpatialGrid {
    cell_size: f32,
    cols: usize,
    rows: usize,
    /// Every entry, sorted by cell.
    entries: Vec<GridEntry>,
    /// `entries[starts[c]..starts[c + 1]]` are the entries of cell `c`.
    starts: Vec<u32>,
    /// The entries' coordinates, apart, for pair walks' tight loops.
    xs: Vec<f32>,
    ys: Vec<f32>,
    /// Rebuild buffers: each entry with its cell, and each cell's next free place.
    staging: Vec<(u32, GridEntry)>,
    fill: Vec<u32>,
}

impl SpatialGrid {
    pub fn new(map_size: Vec2, cell_size: f32) -> Self {
        let cols = (map_size.x / cell_size).ceil().max(1.0) as usize;
        let rows = (map_size.y / cell_size).ceil().max(1.0) as usize;
        SpatialGrid {
            cell_size,
            cols,
            rows,
            entries: Vec::new(),
            starts: vec![0; cols * rows + 1],
            xs: Vec::new(),
            ys: Vec::new(),
            staging: Vec::new(),
            fill: Vec::new(),
        }
    }

    fn cell_of(&self, p: Vec2) -> (usize, usize) {
        // Truncation toward zero differs from the floor only below zero, which the clamp
        // takes to the first cell either way (and NaN casts to 0): no libm call.
        let cx = ((p.x / self.cell_size) as i32).clamp(0, self.cols as i32 - 1) as usize;
        let cy = ((p.y / self.cell_size) as i32).clamp(0, self.rows as i32 - 1) as usize;
        (cx, cy)
    }

    /// Replaces the contents with `avatars` (a counting sort by cell: linear time).
    pub fn rebuild(&mut self, avatars: impl IntoIterator<Item = GridEntry>) {
        self.staging.clear();
        for entry in avatars {
            let (cx, cy) = self.cell_of(entry.pos);
            self.staging.push(((cy * self.cols + cx) as u32, entry));
        }
        self.starts.iter_mut().for_each(|s| *s = 0);
        for &(cell, _) in &self.staging {
            self.starts[cell as usize + 1] += 1;
        }
        for c in 1..self.starts.len() {
            self.starts[c] += self.starts[c - 1];
        }
        self.fill.clear();
        self.fill.extend_from_slice(&self.starts);
        self.entries.clear();
        if let Some(&(_, first)) = self.staging.first() {
            self.entries.resize(self.staging.len(), first);
        }
        for &(cell, entry) in &self.staging {
            let at = &mut self.fill[cell as usize];
            self.entries[*at as usize] = entry;
            *at += 1;
        }
        self.xs.clear();
        self.ys.clear();
        self.xs.extend(self.entries.iter().map(|e| e.pos.x));
        self.ys.extend(self.entries.iter().map(|e| e.pos.y));
    }

    /// Every entry, cell by cell (the indices `for_each_window` gives).
    pub fn entries(&self) -> &[GridEntry] {
        &self.entries
    }

    /// The entries of the cells a circle's bounding box covers, one range of indices into
    /// [`Self::entries`] for each row of cells.
    fn rows_around(
        &self,
        center: Vec2,
        radius: f32,
    ) -> impl Iterator<Item = std::ops::Range<usize>> + Clone + '_ {
        let (x0, y0) = self.cell_of(center - Vec2::splat(radius));
        let (x1, y1) = self.cell_of(center + Vec2::splat(radius));
        (y0..=y1).map(move |cy| {
            self.starts[cy * self.cols + x0] as usize..self.starts[cy * self.cols + x1 + 1] as usize
        })
    }

    /// Calls `f` for every avatar within `radius` of `center` (squared distance given).
    pub fn for_each_within(&self, center: Vec2, radius: f32, mut f: impl FnMut(&GridEntry, f32)) {
        let r2 = radius * radius;
        for row in self.rows_around(center, radius) {
            for entry in &self.entries[row] {
                let d2 = entry.pos.distance_squared(center);
                if d2 <= r2 {
                    f(entry, d2);
                }
            }
        }
    }

    /// Every avatar within `radius` of `center`, as its squared distance's bits (which order
    /// like the distances) above its index in [`Self::entries`], so that the numbers order
    /// by distance, into `found` from the start; returns how many. `found` is a buffer kept
    /// between calls: it is grown to hold every avatar of the cells looked at, and what lies
    /// past the count is left over. Without a branch per avatar (each is written, and
    /// counted if it is in range), so a scan where most are in range does not pay for
    /// guessing which.
    pub fn find_within(&self, center: Vec2, radius: f32, found: &mut Vec<u64>) -> usize {
        let rows = self.rows_around(center, radius);
        let looked_at: usize = rows.clone().map(|row| row.len()).sum();
        if found.len() < looked_at {
            found.resize(looked_at, 0);
        }
        let r2 = radius * radius;
        let mut n = 0;
        for row in rows {
            let first = row.start;
            for (k, (x, y)) in self.xs[row.clone()].iter().zip(&self.ys[row]).enumerate() {
                let (dx, dy) = (x - center.x, y - center.y);
                let d2 = dx * dx + dy * dy;
                found[n] = u64::from(d2.to_bits()) << 32 | (first + k) as u64;
                n += usize::from(d2 <= r2);
            }
        }
        n
    }

    /// The entry a [`Self::find_within`] find names.
    pub fn entry_found(&self, found: u64) -> &GridEntry {
        // The low half is an index into `entries`, which the find was made from.
        &self.entries[found as u32 as usize]
    }

    /// The entries' coordinates, in the order of [`Self::entries`].
    pub fn xs(&self) -> &[f32] {
        &self.xs
    }

    pub fn ys(&self) -> &[f32] {
        &self.ys
    }

    /// Calls `f(i, after, below)` for every entry `i` with the ranges of entry indices that
    /// hold every entry within `radius` of it that comes after it in the walk: `after` in
    /// its own row (its cell after it and the cells to its right within reach) and `below`,
    /// one range for each row below within reach. So every unordered pair within `radius`
    /// is in exactly one call, with pairs out of range that the caller filters by distance
    /// ([`Self::xs`], [`Self::ys`]). `below` is a buffer the caller keeps between calls.
    pub fn for_each_window(
        &self,
        radius: f32,
        below: &mut Vec<(u32, u32)>,
        mut f: impl FnMut(usize, (usize, usize), &[(u32, u32)]),
    ) {
        let reach = (radius / self.cell_size).ceil() as usize;
        for cy in 0..self.rows {
            for cx in 0..self.cols {
                let cell = cy * self.cols + cx;
                let (from, to) = (self.starts[cell] as usize, self.starts[cell + 1] as usize);
                if from == to {
                    continue;
                }
                let (left, right) = (cx.saturating_sub(reach), (cx + reach).min(self.cols - 1));
                let row_end = self.starts[cy * self.cols + right + 1] as usize;
                below.clear();
                for ny in (cy + 1)..=(cy + reach).min(self.rows - 1) {
                    below.push((
                        self.starts[ny * self.cols + left],
                        self.starts[ny * self.cols + right + 1],
                    ));
                }
                for i in from..to {
                    f(i, (i + 1, row_end), below);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unordered pair of entries within `radius`, once each, through the windows.
    fn pairs_within(grid: &SpatialGrid, radius: f32) -> Vec<(u32, u32)> {
        let e = grid.entries();
        let (xs, ys) = (grid.xs(), grid.ys());
        let mut pairs = Vec::new();
        grid.for_each_window(radius, &mut Vec::new(), |i, (lo, hi), below| {
            let ranges = std::iter::once((lo, hi))
                .chain(below.iter().map(|&(lo, hi)| (lo as usize, hi as usize)));
            for (lo, hi) in ranges {
                for j in lo..hi {
                    let (dx, dy) = (xs[j] - xs[i], ys[j] - ys[i]);
                    if dx * dx + dy * dy <= radius * radius {
                        let (a, b) = (e[i].id.0, e[j].id.0);
                        pairs.push((a.min(b), a.max(b)));
                    }
                }
            }
        });
        pairs.sort();
        pairs
    }

    #[test]
    fn finds_exactly_the_avatars_in_range() {
        let mut grid = SpatialGrid::new(Vec2::new(1000.0, 1000.0), 100.0);
        let points = [
            (50.0, 50.0),
            (140.0, 50.0),
            (400.0, 400.0),
            (999.0, 999.0),
            (55.0, 160.0),
        ];
        grid.rebuild(points.into_iter().enumerate().map(|(i, (x, y))| GridEntry {
            id: AvatarId(i as u32),
            slot: i as u32,
            pos: Vec2::new(x, y),
            proximity: true,
            keeps_links: true,
        }));
        assert_eq!(grid.entries().len(), 5);
        let mut found = Vec::new();
        grid.for_each_within(Vec2::new(50.0, 50.0), 111.0, |e, _| found.push(e.id.0));
        found.sort();
        assert_eq!(found, vec![0, 1, 4]);
        let mut far = Vec::new();
        grid.for_each_within(Vec2::new(990.0, 990.0), 20.0, |e, _| far.push(e.id.0));
        assert_eq!(far, vec![3]);
        // The same, as indices with squared distances.
        let mut buf = Vec::new();
        let n = grid.find_within(Vec2::new(50.0, 50.0), 111.0, &mut buf);
        let mut by_index: Vec<(u32, f32)> = buf[..n]
            .iter()
            .map(|&f| (grid.entry_found(f).id.0, f32::from_bits((f >> 32) as u32)))
            .collect();
        by_index.sort_by_key(|f| f.0);
        assert_eq!(by_index, vec![(0, 0.0), (1, 8100.0), (4, 25.0 + 12100.0)]);
        assert_eq!(grid.find_within(Vec2::new(990.0, 990.0), 20.0, &mut buf), 1);
        assert_eq!(grid.entry_found(buf[0]).id.0, 3);
        // Every pair within 150 px, once each, matching a brute-force count.
        assert_eq!(pairs_within(&grid, 150.0), vec![(0, 1), (0, 4), (1, 4)]);
        grid.rebuild(std::iter::empty());
        let mut none = 0;
        grid.for_each_within(Vec2::new(50.0, 50.0), 500.0, |_, _| none += 1);
        assert_eq!(none, 0);
        assert_eq!(grid.find_within(Vec2::new(50.0, 50.0), 500.0, &mut buf), 0);
    }

    #[test]
    fn the_pair_walk_matches_brute_force_on_random_crowds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (n, side, radius) in [
            (300, 1000.0, 224.0),
            (400, 700.0, 160.0),
            (50, 3000.0, 300.0),
        ] {
            let mut grid = SpatialGrid::new(Vec2::splat(side), 128.0);
            // Some points outside the map too: they sit in the edge cells.
            let points: Vec<Vec2> = (0..n)
                .map(|_| {
                    Vec2::new(
                        rng.random_range(-50.0..side + 50.0),
                        rng.random_range(-50.0..side + 50.0),
                    )
                })
                .collect();
            grid.rebuild(points.iter().enumerate().map(|(i, p)| GridEntry {
                id: AvatarId(i as u32),
                slot: i as u32,
                pos: *p,
                proximity: true,
                keeps_links: true,
            }));
            let walked = pairs_within(&grid, radius);
            let mut brute = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    if points[a].distance_squared(points[b]) <= radius * radius {
                        brute.push((a as u32, b as u32));
                    }
                }
            }
            assert_eq!(walked, brute, "{n} points on {side} px, radius {radius}");
            // Around every point, the same finds as a brute-force look (the point included),
            // with the buffer reused from look to look.
            let mut buf = Vec::new();
            for (a, at) in points.iter().enumerate() {
                let found = grid.find_within(*at, radius, &mut buf);
                let mut ids: Vec<u32> = buf[..found]
                    .iter()
                    .map(|&f| grid.entry_found(f).id.0)
                    .collect();
                ids.sort();
                let near: Vec<u32> = (0..n as u32)
                    .filter(|&b| at.distance_squared(points[b as usize]) <= radius * radius)
                    .collect();
                assert_eq!(ids, near, "around point {a}, radius {radius}");
            }
        }
    }
}
