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
}

/// Avatars bucketed by square cells of `cell_size` pixels covering the map.
#[derive(Resource, Debug)]
pub struct SpatialGrid {
    cell_size: f32,
    cols: usize,
    rows: usize,
    cells: Vec<Vec<GridEntry>>,
}

impl SpatialGrid {
    pub fn new(map_size: Vec2, cell_size: f32) -> Self {
        let cols = (map_size.x / cell_size).ceil().max(1.0) as usize;
        let rows = (map_size.y / cell_size).ceil().max(1.0) as usize;
        SpatialGrid {
            cell_size,
            cols,
            rows,
            cells: vec![Vec::new(); cols * rows],
        }
    }

    /// Empties every cell, keeping their allocations.
    pub fn clear(&mut self) {
        self.cells.iter_mut().for_each(Vec::clear);
    }

    fn cell_of(&self, p: Vec2) -> (usize, usize) {
        let cx = (p.x / self.cell_size)
            .floor()
            .clamp(0.0, (self.cols - 1) as f32) as usize;
        let cy = (p.y / self.cell_size)
            .floor()
            .clamp(0.0, (self.rows - 1) as f32) as usize;
        (cx, cy)
    }

    pub fn insert(&mut self, entry: GridEntry) {
        let (cx, cy) = self.cell_of(entry.pos);
        self.cells[cy * self.cols + cx].push(entry);
    }

    /// Every avatar in the grid.
    pub fn iter(&self) -> impl Iterator<Item = &GridEntry> {
        self.cells.iter().flatten()
    }

    /// Calls `f` for every avatar within `radius` of `center` (squared distance given).
    pub fn for_each_within(&self, center: Vec2, radius: f32, mut f: impl FnMut(&GridEntry, f32)) {
        let (x0, y0) = self.cell_of(center - Vec2::splat(radius));
        let (x1, y1) = self.cell_of(center + Vec2::splat(radius));
        let r2 = radius * radius;
        for cy in y0..=y1 {
            for entry in self.cells[cy * self.cols + x0..=cy * self.cols + x1]
                .iter()
                .flatten()
            {
                let d2 = entry.pos.distance_squared(center);
                if d2 <= r2 {
                    f(entry, d2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for (i, (x, y)) in points.into_iter().enumerate() {
            grid.insert(GridEntry {
                id: AvatarId(i as u32),
                slot: i as u32,
                pos: Vec2::new(x, y),
                proximity: true,
            });
        }
        let mut found = Vec::new();
        grid.for_each_within(Vec2::new(50.0, 50.0), 111.0, |e, _| found.push(e.id.0));
        found.sort();
        assert_eq!(found, vec![0, 1, 4]);
        let mut far = Vec::new();
        grid.for_each_within(Vec2::new(990.0, 990.0), 20.0, |e, _| far.push(e.id.0));
        assert_eq!(far, vec![3]);
        grid.clear();
        let mut none = 0;
        grid.for_each_within(Vec2::new(50.0, 50.0), 500.0, |_, _| none += 1);
        assert_eq!(none, 0);
    }
}
