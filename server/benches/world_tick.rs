//! World tick benchmark: `cargo xtask bench`.
//!
//! Drives a `SpaceWorld` directly (no sockets) with wandering avatars, each sending a real
//! client's input stream (3 steps per tick, changing direction now and then), and measures
//! one tick: input, movement, zones, spatial index, replication with encoding.
//!
//! - criterion: mean time per tick for 1,000 avatars on the campus and 10,000 on a large
//!   open campus (the same density of people per area as 1,000 on the campus map would be
//!   far denser than any real campus: one avatar every 20 px).
//! - then, per scenario, 400 timed ticks for p50 / p99, in wall-clock time and in the
//!   thread's CPU time (the machine is shared: wall time also counts moments another
//!   process had the core), and the bytes per second one client in the crowd receives:
//!   its position updates (snapshots; target: 2 kB/s), and all its frames (with the
//!   peer-link messages of a crowd that keeps moving).

/// The allocator the server runs with (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group};
use glam::Vec2;
use quad_server::space::SpaceWorld;
use quad_server::space::resources::{Recipient, SpaceSettings};
use quad_shared::AvatarId;
use quad_shared::map::Map;
use quad_shared::movement::dir;
use quad_shared::protocol::{Input, ServerMsg};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK_HZ: u16 = 20;

fn campus() -> Map {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/maps/campus.tmj");
    Map::load(&path).expect("campus map")
}

struct Crowd {
    world: SpaceWorld,
    rng: SmallRng,
    heading: Vec<u8>,
    seq: u32,
    watched: AvatarId,
    /// The frames the last tick addressed to the watched client.
    watched_frames: Vec<Bytes>,
}

/// Bytes sent to the watched client: its position updates (snapshots) and everything
/// else (in a wandering crowd, mostly peer links forming and breaking).
#[derive(Default, Clone, Copy)]
struct Sent {
    updates: usize,
    other: usize,
}

impl Crowd {
    fn new(map: Map, n: u32) -> Crowd {
        let mut rng = SmallRng::seed_from_u64(7);
        let size = map.pixel_size();
        let walkable: Vec<Vec2> = (0..)
            .map(|_| Vec2::new(rng.random_range(0.0..size.x), rng.random_range(0.0..size.y)))
            .filter(|p| map.collision.walkable(*p))
            .take(n as usize)
            .collect();
        let centre = size / 2.0;
        let settings = SpaceSettings {
            tick_hz: TICK_HZ,
            area_of_interest: 800.0,
            replication_bytes_per_sec: 2_000,
            max_interest: std::env::var("QUAD_BENCH_INTEREST")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(48),
            proximity: Default::default(),
            dev: true,
        };
        let mut world = SpaceWorld::new(Arc::new(map), settings, "/map.tmj");
        let mut watched = (AvatarId(1), f32::MAX);
        for (i, p) in walkable.iter().enumerate() {
            let id = AvatarId(i as u32 + 1);
            world.join(quad_server::space::Joiner {
                spawn: Some(*p),
                ..quad_server::space::Joiner::guest(id, format!("bot{i}"))
            });
            // As the space's driver does after every call. (Kept, ten thousand welcomes
            // listing everyone are most of a gigabyte, which the allocator then gave back
            // to the system during the timed ticks.)
            world.drain_outbox().for_each(drop);
            let d = p.distance(centre);
            if d < watched.1 {
                watched = (id, d);
            }
        }
        let heading = (0..n)
            .map(|_| dir::HEADINGS[rng.random_range(0..8)])
            .collect();
        let mut crowd = Crowd {
            world,
            rng,
            heading,
            seq: 0,
            watched: watched.0,
            watched_frames: Vec::new(),
        };
        // Settle: everyone has been sent their surroundings once.
        for _ in 0..40 {
            crowd.tick();
        }
        crowd
    }

    /// One tick of a real server: every avatar's input arrives, the world ticks, frames go
    /// out (the watched client's are kept for [`Crowd::sent`]).
    fn tick(&mut self) {
        self.seq += 1;
        for (i, heading) in self.heading.iter_mut().enumerate() {
            if self.rng.random_ratio(1, 40) {
                *heading = dir::HEADINGS[self.rng.random_range(0..8)];
            }
            let input = Input {
                seq: self.seq,
                dir: *heading,
                steps: 3,
            };
            self.world.input(AvatarId(i as u32 + 1), input);
        }
        self.world.tick(1.0 / TICK_HZ as f32);
        let watched = Recipient::One(self.watched);
        self.watched_frames.clear();
        for (to, frame) in self.world.drain_outbox() {
            if to == watched {
                self.watched_frames.push(frame);
            }
        }
    }

    /// What the last tick sent the watched client (decoded here, outside the timed tick).
    fn sent(&self) -> Sent {
        let mut sent = Sent::default();
        for frame in &self.watched_frames {
            match quad_shared::codec::decode::<ServerMsg>(frame) {
                Ok(ServerMsg::Snapshot(_)) => sent.updates += frame.len(),
                _ => sent.other += frame.len(),
            }
        }
        sent
    }
}

/// A named way to build a crowd.
type Scenario = (&'static str, Box<dyn Fn() -> Crowd>);

/// Every scenario, or only those whose name contains `QUAD_BENCH_ONLY`.
fn scenarios() -> Vec<Scenario> {
    let only = std::env::var("QUAD_BENCH_ONLY").unwrap_or_default();
    let all: Vec<Scenario> = vec![
        ("campus_1000", Box::new(|| Crowd::new(campus(), 1_000))),
        (
            "open_campus_10000",
            Box::new(|| Crowd::new(Map::open_square(320, 32), 10_000)),
        ),
        (
            "campus_10000_stress",
            Box::new(|| Crowd::new(campus(), 10_000)),
        ),
    ];
    all.into_iter()
        .filter(|(name, _)| name.contains(only.as_str()))
        .collect()
}

fn bench_ticks(c: &mut Criterion) {
    let mut group = c.benchmark_group("world_tick");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for (name, make) in scenarios() {
        let mut crowd = make();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| crowd.tick())
        });
    }
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50 / p99 per tick and the watched client's bytes per second (position updates, and
/// everything), printed as a table and written to `target/bench/world_tick.json`.
fn tick_percentiles() {
    let mut rows = Vec::new();
    println!(
        "\n{:<22} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "scenario",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu p50 ms",
        "cpu p99 ms",
        "updates B/s",
        "all B/s"
    );
    for (name, make) in scenarios() {
        let mut crowd = make();
        let ticks = 400;
        // Wall-clock time, and this thread's CPU time: the machine is shared, and wall time
        // also counts the moments another process had the core.
        let mut times = Vec::with_capacity(ticks);
        let mut cpu_times = Vec::with_capacity(ticks);
        let mut bytes = Sent::default();
        for _ in 0..ticks {
            let (t, cpu) = (Instant::now(), cpu_time::ThreadTime::now());
            crowd.tick();
            cpu_times.push(cpu.elapsed());
            times.push(t.elapsed());
            let sent = crowd.sent();
            bytes.updates += sent.updates;
            bytes.other += sent.other;
        }
        times.sort();
        cpu_times.sort();
        let (p50, p99, max) = (
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[ticks - 1],
        );
        let (cpu50, cpu99) = (percentile(&cpu_times, 0.5), percentile(&cpu_times, 0.99));
        let per_sec = |b: usize| b as f64 / (ticks as f64 / TICK_HZ as f64);
        let (updates_per_sec, bytes_per_sec) =
            (per_sec(bytes.updates), per_sec(bytes.updates + bytes.other));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<22} {:>10.3} {:>10.3} {:>10.3} {:>12.3} {:>12.3} {:>12.0} {:>12.0}",
            ms(p50),
            ms(p99),
            ms(max),
            ms(cpu50),
            ms(cpu99),
            updates_per_sec,
            bytes_per_sec
        );
        rows.push(format!(
            "{{\"scenario\":\"{name}\",\"avatars\":{},\"ticks\":{ticks},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"max_ms\":{:.4},\"cpu_p50_ms\":{:.4},\"cpu_p99_ms\":{:.4},\"client_update_bytes_per_sec\":{:.1},\"client_bytes_per_sec\":{:.1}}}",
            crowd.world.population(), ms(p50), ms(p99), ms(max), ms(cpu50), ms(cpu99), updates_per_sec, bytes_per_sec
        ));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let json = format!("[{}]\n", rows.join(","));
        if std::fs::write(out.join("world_tick.json"), json).is_ok() {
            println!("written to target/bench/world_tick.json");
        }
    }
}

criterion_group!(benches, bench_ticks);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then this is
    // a quick smoke run: a small crowd, a few ticks, no timing.
    if !std::env::args().any(|a| a == "--bench") {
        let mut crowd = Crowd::new(campus(), 200);
        let updates: usize = (0..20)
            .map(|_| {
                crowd.tick();
                crowd.sent().updates
            })
            .sum();
        assert!(
            updates > 0,
            "the watched client was sent no position updates in a moving crowd"
        );
        println!(
            "world_tick smoke: 200 avatars, 20 ticks, {updates} bytes of position updates to the watched client"
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    tick_percentiles();
}
