//! The proximity graph update alone, for 10,000 avatars wandering an open campus
//! (10,240 px square, about 15 neighbours within the disconnect radius each): rebuilding the
//! spatial grid, then planning the links (hysteresis, cap of 6, nearest first). Prints p50
//! and p99 per update and writes `target/bench/proximity_graph.json`.
//!
//! `cargo bench -p quad-server --bench proximity_graph` (or `cargo xtask bench`); under
//! `cargo test` it is a quick smoke run that checks links form.

/// The allocator the server runs with (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use glam::Vec2;
use quad_server::space::resources::ProximityGraph;
use quad_server::space::spatial_grid::{GridEntry, SpatialGrid};
use quad_server::space::systems::proximity::{Scratch, plan_links};
use quad_server::space::world::GRID_CELL;
use quad_shared::AvatarId;
use quad_shared::proximity::ProximityRules;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

/// Pixels an avatar walks in one 20 Hz tick at full speed.
const STEP: f32 = 8.0;

struct Crowd {
    positions: Vec<Vec2>,
    headings: Vec<Vec2>,
    size: Vec2,
    grid: SpatialGrid,
    graph: ProximityGraph,
    scratch: Scratch,
    rules: ProximityRules,
    rng: SmallRng,
}

impl Crowd {
    fn new(n: usize, side: f32) -> Crowd {
        let mut rng = SmallRng::seed_from_u64(11);
        let size = Vec2::splat(side);
        let positions = (0..n)
            .map(|_| Vec2::new(rng.random_range(0.0..side), rng.random_range(0.0..side)))
            .collect();
        let headings = (0..n).map(|_| heading(&mut rng)).collect();
        Crowd {
            positions,
            headings,
            size,
            grid: SpatialGrid::new(size, GRID_CELL),
            graph: (0..n).fold(ProximityGraph::default(), |mut graph, i| {
                graph.place(AvatarId(i as u32 + 1), i as u32);
                graph
            }),
            scratch: Scratch::default(),
            rules: ProximityRules::default(),
            rng,
        }
    }

    /// Everyone takes a step (bouncing off the edges).
    fn walk(&mut self) {
        for (p, h) in self.positions.iter_mut().zip(&mut self.headings) {
            if self.rng.random_ratio(1, 40) {
                *h = heading(&mut self.rng);
            }
            let next = *p + *h * STEP;
            if next.cmplt(Vec2::ZERO).any() || next.cmpge(self.size).any() {
                *h = -*h;
            } else {
                *p = next;
            }
        }
    }

    fn rebuild_grid(&mut self) {
        self.grid
            .rebuild(self.positions.iter().enumerate().map(|(i, pos)| GridEntry {
                id: AvatarId(i as u32 + 1),
                slot: i as u32,
                pos: *pos,
                proximity: true,
                keeps_links: true,
            }));
    }

    fn plan(&mut self) {
        plan_links(&self.grid, &self.rules, &mut self.graph, &mut self.scratch);
    }

    /// What the media planner does, without telling anyone.
    fn commit(&mut self) {
        self.graph.commit(|_, _, _| {});
    }
}

fn heading(rng: &mut SmallRng) -> Vec2 {
    Vec2::from_angle(rng.random_range(0.0..std::f32::consts::TAU))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is a smoke run.
    let bench = std::env::args().any(|a| a == "--bench");
    let mut rows = Vec::new();
    // The target's case (about 15 neighbours each in reach), and a crowd as dense as the
    // campus stress case (about 380 each).
    // `QUAD_BENCH_ONLY=open` runs only the scenarios whose names contain `open`.
    let only = std::env::var("QUAD_BENCH_ONLY").unwrap_or_default();
    for (scenario, side) in [("open_10240px", 10_240.0), ("crowded_2048px", 2_048.0)] {
        if !scenario.contains(only.as_str()) {
            continue;
        }
        run(scenario, side, bench, &mut rows);
    }
    if !bench {
        return;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&out).is_ok()
        && std::fs::write(
            out.join("proximity_graph.json"),
            format!("[{}]\n", rows.join(",")),
        )
        .is_ok()
    {
        println!("written to target/bench/proximity_graph.json");
    }
}

/// Walks a crowd on a square of `side` pixels (scaled down for the smoke run) and times
/// each part of the update.
fn run(scenario: &str, side: f32, bench: bool, rows: &mut Vec<String>) {
    let (n, updates) = if bench { (10_000, 400) } else { (500, 10) };
    let mut crowd = Crowd::new(n, side * (n as f32 / 10_000.0).sqrt());
    for _ in 0..20 {
        crowd.walk();
        crowd.rebuild_grid();
        crowd.plan();
        crowd.commit();
    }
    let (mut grid_times, mut plan_times, mut commit_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut links = 0;
    for _ in 0..updates {
        crowd.walk();
        let t = Instant::now();
        crowd.rebuild_grid();
        grid_times.push(t.elapsed());
        let t = Instant::now();
        crowd.plan();
        plan_times.push(t.elapsed());
        let t = Instant::now();
        crowd.commit();
        commit_times.push(t.elapsed());
        links += crowd.graph.link_count();
    }
    let mean_links = links as f64 / updates as f64;
    let max_degree = crowd
        .graph
        .links()
        .flat_map(|(a, b)| [a, b])
        .fold(
            std::collections::HashMap::<AvatarId, u8>::new(),
            |mut m, id| {
                *m.entry(id).or_default() += 1;
                m
            },
        )
        .into_values()
        .max()
        .unwrap_or(0);
    assert!(mean_links > 0.0, "no links formed in a crowd");
    assert!(
        max_degree <= crowd.rules.max_peers,
        "an avatar has {max_degree} links"
    );
    if !bench {
        println!(
            "proximity_graph smoke ({scenario}): {n} avatars, {mean_links:.0} links, max degree {max_degree}"
        );
        return;
    }
    let mut total: Vec<Duration> = (0..updates)
        .map(|i| grid_times[i] + plan_times[i] + commit_times[i])
        .collect();
    for times in [
        &mut grid_times,
        &mut plan_times,
        &mut commit_times,
        &mut total,
    ] {
        times.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\nproximity graph, {scenario}: {n} avatars, {mean_links:.0} links on average, {updates} updates"
    );
    println!("{:<26} {:>10} {:>10}", "step", "p50 ms", "p99 ms");
    for (name, times) in [
        ("grid rebuild", &grid_times),
        ("link planning", &plan_times),
        ("diff and commit", &commit_times),
        ("whole update", &total),
    ] {
        let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
        println!("{name:<26} {:>10.3} {:>10.3}", ms(p50), ms(p99));
        rows.push(format!(
            "{{\"scenario\":\"{scenario}\",\"step\":\"{name}\",\"avatars\":{n},\"updates\":{updates},\"mean_links\":{mean_links:.0},\"p50_ms\":{:.4},\"p99_ms\":{:.4}}}",
            ms(p50),
            ms(p99)
        ));
    }
}
