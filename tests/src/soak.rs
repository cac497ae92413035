//! The soak run (`cargo xtask soak --minutes N`, the `quad-soak` binary): a release
//! `quad-server` under a campus's everyday churn for a bounded time, sampled once a minute
//! for what would show a leak.
//!
//! - Walkers (300 by default) walk the open campus, turning every few seconds, and say
//!   something to everyone about once a minute each.
//! - Rooms (4 of 10 media bots by default, each publishing a microphone): every 3 s one
//!   member of each room does one of: leave and be replaced by a newcomer, lose its
//!   connection and resume it, toggle its microphone, or say something to the room.
//! - Each sample reads the server's resident memory (and how much of it is mapped files:
//!   the binary's code), open file descriptors and UDP sockets from `/proc`; and from
//!   `/metrics` the live heap, async tasks, sessions (and those parked for a resume),
//!   avatars, proximity links, SFU rooms, room members and front-door entries, and TURN
//!   relays.
//!
//! The result is a table (`soak.md`, with the verdict against the targets), the samples
//! (`soak.csv`) and a plot of each series against time (`soak.svg`).

use crate::load::{ReleaseServer, rss_file_kib, rss_kib};
use crate::room_bot::{RoomBot, RoomBotOptions, room_spot};
use crate::{Bot, http_get, metric};
use anyhow::{Context, Result, bail};
use quad_shared::protocol::{ChatTo, ClientMsg, MediaFlags};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to run, and for how long.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub minutes: f64,
    pub walkers: usize,
    pub rooms: usize,
    pub room_size: usize,
    /// Time between samples.
    pub every: Duration,
    /// Where the table, the samples and the plot go.
    pub out: PathBuf,
}

/// The series a sample holds, in the table's order: (name, unit, from `/metrics`).
pub const SERIES: [(&str, &str); 17] = [
    ("rss", "MiB"),
    ("heap_live", "MiB"),
    ("heap_active", "MiB"),
    ("heap_resident", "MiB"),
    ("rss_file", "MiB"),
    ("fds", "open files"),
    ("udp_sockets", "sockets"),
    ("tokio_tasks", "tasks"),
    ("sessions", "sessions"),
    ("parked", "sessions"),
    ("avatars", "avatars"),
    ("peer_edges", "links"),
    ("rooms", "rooms"),
    ("room_members", "members"),
    ("sfu_doors", "entries"),
    ("forward_slots", "m-lines"),
    ("turn_relays", "relays"),
];

/// The index of the series `name` in [`SERIES`] (and in [`Sample::values`]).
pub fn series(name: &str) -> usize {
    SERIES
        .iter()
        .position(|(n, _)| *n == name)
        // Only called with the names above; a typo is a bug found by the unit tests.
        .unwrap_or_else(|| panic!("no series {name}"))
}

/// One sample: minutes since the start, then each of [`SERIES`].
#[derive(Debug, Clone)]
pub struct Sample {
    pub minute: f64,
    pub values: [f64; SERIES.len()],
}

/// What the bots did, for the report.
#[derive(Debug, Default)]
pub struct Activity {
    pub chat_lines: AtomicU64,
    pub leaves: AtomicU64,
    pub resumes: AtomicU64,
    pub toggles: AtomicU64,
    pub errors: AtomicU64,
}

/// Runs the soak; returns the samples and what the bots did.
pub async fn run(options: &SoakOptions) -> Result<(Vec<Sample>, Arc<Activity>)> {
    let capacity = options.walkers + options.rooms * options.room_size * 2 + 64;
    let server = ReleaseServer::start(&format!(
        "max_sessions = {capacity}\nroom_max_speakers = {}\n",
        options.room_size
    ))?;
    let addr = server.addr;
    let pid = server.pid();
    let map = crate::campus();
    let stop = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity::default());
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(options.minutes * 60.0);

    let mut tasks: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    for i in 0..options.walkers {
        let at = open_spot(&map, i);
        let bot = Bot::join(addr, &format!("walker{i}"), Some(at))
            .await
            .with_context(|| format!("walker {i} joining"))?;
        let (stop, activity) = (stop.clone(), activity.clone());
        tasks.push(tokio::spawn(async move {
            walk(bot, i, stop, activity).await;
            Ok(())
        }));
    }
    for r in 0..options.rooms {
        let at = room_spot(&map, r)?;
        tasks.push(tokio::spawn(churn_room(
            addr,
            at,
            r,
            options.room_size,
            stop.clone(),
            activity.clone(),
        )));
    }

    let mut samples = Vec::new();
    let mut next = started;
    loop {
        let now = Instant::now();
        if now >= next {
            let s = sample(addr, pid, started.elapsed().as_secs_f64() / 60.0).await?;
            println!("{}", row(&s));
            samples.push(s);
            next += options.every;
        }
        if now >= end {
            break;
        }
        let wake = next.min(end);
        tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
        if let Some(done) = tasks.iter().position(|t| t.is_finished()) {
            stop.store(true, Ordering::Relaxed);
            let why = match tasks.swap_remove(done).await {
                Ok(Ok(())) => "it stopped (the server closed on it?)".to_owned(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("it panicked: {e}"),
            };
            bail!("a bot task ended early: {why}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    drop(server);
    Ok((samples, activity))
}

/// A walkable point of the open campus for walker `i`, spread around the spawn point.
fn open_spot(map: &quad_shared::map::Map, i: usize) -> [f32; 2] {
    for k in 0..64 {
        let p = map.spawn
            + glam::Vec2::new(
                ((i * 37 + k * 13) % 41) as f32 * 24.0 - 480.0,
                ((i * 53 + k * 7) % 23) as f32 * 24.0 - 120.0,
            );
        if map.collision.walkable(p) && map.zone_at(p).is_none() {
            return p.to_array();
        }
    }
    map.spawn.to_array()
}

/// A walker: a heading for 2-6 s, then another; a line to everyone about once a minute.
/// Reads everything the server sends, as a client must, and keeps only counts of it.
async fn walk(mut bot: Bot, i: usize, stop: Arc<AtomicBool>, activity: Arc<Activity>) {
    let mut heading = i;
    let mut turn_at = Instant::now();
    let mut say_at = Instant::now() + Duration::from_secs(5 + (i % 60) as u64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= turn_at {
            heading = heading.wrapping_mul(31).wrapping_add(7);
            turn_at = now + Duration::from_millis(2000 + (heading % 4000) as u64);
        }
        let dir = quad_shared::movement::dir::HEADINGS[heading % 8];
        if bot.input(dir, 1).await.is_err() {
            activity.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if now >= say_at {
            say_at = now + Duration::from_secs(60);
            let _ = bot
                .send(&ClientMsg::Chat {
                    to: ChatTo::Space,
                    text: format!("walker {i} at minute {}", now.elapsed().as_secs() / 60),
                })
                .await;
            activity.chat_lines.fetch_add(1, Ordering::Relaxed);
        }
        let until = Instant::now() + Duration::from_millis(50);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match bot.pump(left).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    activity.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        forget(&mut bot);
    }
    bot.close().await;
}

/// Drops what a bot keeps of what it received (a soak's bots would otherwise grow).
fn forget(bot: &mut Bot) {
    bot.chat.clear();
    bot.signals.clear();
    bot.peer_events.clear();
    bot.media_updates.clear();
    bot.room_msgs.clear();
    bot.notices.clear();
    bot.errors.clear();
    bot.reconnecting_events.clear();
}

/// One room of `size` media bots with churn: every 3 s one member leaves and a newcomer
/// takes its seat, or one loses its connection and resumes, or toggles its microphone,
/// or says something to the room.
async fn churn_room(
    addr: SocketAddr,
    at: [f32; 2],
    room: usize,
    size: usize,
    stop: Arc<AtomicBool>,
    activity: Arc<Activity>,
) -> Result<()> {
    let mut members = Vec::with_capacity(size);
    let mut joined = 0usize;
    for _ in 0..size {
        members.push(
            RoomBot::join(addr, RoomBotOptions::mic(&format!("r{room}m{joined}"), at)).await?,
        );
        joined += 1;
    }
    let mut mic_on = vec![true; size];
    let mut step = room;
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    tick.tick().await;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        step = step.wrapping_mul(7).wrapping_add(3);
        let seat = step % size;
        match step % 4 {
            0 => {
                let newcomer =
                    RoomBot::join(addr, RoomBotOptions::mic(&format!("r{room}m{joined}"), at))
                        .await?;
                joined += 1;
                let old = std::mem::replace(&mut members[seat], newcomer);
                old.leave().await;
                mic_on[seat] = true;
                activity.leaves.fetch_add(1, Ordering::Relaxed);
            }
            1 => {
                members[seat].reconnect(addr, None);
                activity.resumes.fetch_add(1, Ordering::Relaxed);
            }
            2 => {
                mic_on[seat] = !mic_on[seat];
                members[seat].send(ClientMsg::Media(MediaFlags {
                    mic: mic_on[seat],
                    camera: false,
                    screen: false,
                }));
                activity.toggles.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                members[seat].send(ClientMsg::Chat {
                    to: ChatTo::Room,
                    text: format!("room {room}, step {step}"),
                });
                activity.chat_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
        for m in &members {
            if let Some(failed) = &m.state().failed {
                activity.errors.fetch_add(1, Ordering::Relaxed);
                bail!("a room bot failed: {failed}");
            }
            m.forget();
        }
    }
    for m in members {
        m.leave().await;
    }
    Ok(())
}

/// Reads one sample of the server `pid` serving at `addr`.
async fn sample(addr: SocketAddr, pid: u32, minute: f64) -> Result<Sample> {
    let (status, page) = http_get(addr, "/metrics").await?;
    if status != 200 {
        bail!("GET /metrics: HTTP {status}");
    }
    let m = |name: &str| metric(&page, name).unwrap_or(f64::NAN);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as f64)
        .unwrap_or(f64::NAN);
    Ok(Sample {
        minute,
        values: [
            rss_kib(pid) as f64 / 1024.0,
            m("quad_heap_live_bytes") / (1024.0 * 1024.0),
            m("quad_heap_active_bytes") / (1024.0 * 1024.0),
            m("quad_heap_resident_bytes") / (1024.0 * 1024.0),
            rss_file_kib(pid).map_or(f64::NAN, |k| k as f64 / 1024.0),
            fds,
            udp_sockets(pid).map_or(f64::NAN, |n| n as f64),
            m("quad_tokio_tasks"),
            m("quad_sessions"),
            m("quad_sessions_parked"),
            m("quad_avatars"),
            m("quad_peer_edges"),
            m("quad_rooms"),
            m("quad_room_members"),
            m("quad_sfu_doors"),
            m("quad_sfu_forward_slots"),
            m("quad_turn_relays"),
        ],
    })
}

/// UDP sockets process `pid` holds (its socket descriptors that are in `/proc/net/udp*`).
pub fn udp_sockets(pid: u32) -> Result<usize> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut count = 0;
    for table in ["udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        count += text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(9))
            .filter(|inode| inodes.contains(*inode))
            .count();
    }
    Ok(count)
}

fn row(s: &Sample) -> String {
    let mut out = format!("| {:5.1} |", s.minute);
    for v in s.values {
        let _ = write!(out, " {v:.1} |");
    }
    out
}

/// How a series moved between the first sample at or after `from` minutes and the last:
/// the two samples themselves, and the least-squares line through every sample between
/// them (its value at the first and at the last minute).
///
/// Single samples of memory swing with who happens to be connected at that instant (a
/// parked session or a room member more or less is about 1 MiB), so growth is judged on
/// the line, which a leak moves and a swing barely does.
#[derive(Debug, Clone, Copy)]
pub struct Drift {
    pub start: f64,
    pub end: f64,
    pub min: f64,
    pub max: f64,
    pub trend_start: f64,
    pub trend_end: f64,
}

impl Drift {
    /// Growth between the two end samples.
    pub fn growth(&self) -> f64 {
        relative(self.start, self.end)
    }

    /// Growth along the least-squares line, from its value at the first minute to its value
    /// at the last.
    pub fn trend_growth(&self) -> f64 {
        relative(self.trend_start, self.trend_end)
    }
}

fn relative(start: f64, end: f64) -> f64 {
    if start > 0.0 {
        (end - start) / start
    } else {
        0.0
    }
}

/// The least-squares line through `points` (minute, value): its values at the first and
/// the last minute. One point, or all at one minute, gives that point's value twice.
fn trend(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return (f64::NAN, f64::NAN);
    };
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let at = |x: f64| mean_y + slope * (x - mean_x);
    (at(first.0), at(last.0))
}

/// The drift of series `index` over the samples from minute `from` on (from the first
/// sample when the run is shorter).
pub fn drift(samples: &[Sample], index: usize, from: f64) -> Option<Drift> {
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.minute >= from).collect();
    let steady = if steady.len() >= 2 {
        steady
    } else {
        samples.iter().collect()
    };
    let (first, last) = (steady.first()?, steady.last()?);
    let values = steady.iter().map(|s| s.values[index]);
    let points: Vec<(f64, f64)> = steady.iter().map(|s| (s.minute, s.values[index])).collect();
    let (trend_start, trend_end) = trend(&points);
    Some(Drift {
        start: first.values[index],
        end: last.values[index],
        min: values.clone().fold(f64::INFINITY, f64::min),
        max: values.fold(f64::NEG_INFINITY, f64::max),
        trend_start,
        trend_end,
    })
}

/// Writes `soak.csv`, `soak.md` (the table and the verdict) and `soak.svg` into `out`;
/// returns the verdict's lines.
pub fn report(
    options: &SoakOptions,
    samples: &[Sample],
    activity: &Activity,
    machine: &str,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(&options.out)?;
    let mut csv = String::from("minute");
    for (name, _) in SERIES {
        let _ = write!(csv, ",{name}");
    }
    csv.push('\n');
    for s in samples {
        let _ = write!(csv, "{:.2}", s.minute);
        for v in s.values {
            let _ = write!(csv, ",{v}");
        }
        csv.push('\n');
    }
    std::fs::write(options.out.join("soak.csv"), csv)?;

    // From minute 5 (start-up and the first joins are over), or half-way in a short run.
    let from = (options.minutes / 2.0).min(5.0);
    let mut verdict = Vec::new();
    let rss = drift(samples, 0, from).context("no samples")?;
    verdict.push(format!(
        "RSS {:.1} → {:.1} MiB from minute {from} to the end along the least-squares line \
         through every sample: {:+.1}% (target under +5%): {}; the two samples themselves \
         {:.1} → {:.1} MiB ({:+.1}%)",
        rss.trend_start,
        rss.trend_end,
        rss.trend_growth() * 100.0,
        if rss.trend_growth() < 0.05 {
            "met"
        } else {
            "NOT met"
        },
        rss.start,
        rss.end,
        rss.growth() * 100.0,
    ));
    let heap = drift(samples, series("heap_live"), from).context("no samples")?;
    if heap.start.is_finite() && heap.end.is_finite() {
        // RSS beyond the live heap holds the mapped files (code), free space among live
        // objects (the allocator's active pages beyond the live heap), freed pages the
        // allocator has not given back and its metadata (its resident beyond its active
        // pages: an upper bound, as jemalloc counts pages it has not touched yet), and
        // the rest: memory of C code's `malloc` (glibc's: SQLite, for one) and thread
        // stacks.
        let files = drift(samples, series("rss_file"), from).context("no samples")?;
        let active = drift(samples, series("heap_active"), from).context("no samples")?;
        let resident = drift(samples, series("heap_resident"), from).context("no samples")?;
        let part = |name: &str, a: f64, b: f64| format!("{name} {a:.1} → {b:.1}");
        verdict.push(format!(
            "live heap {:.1} → {:.1} MiB along the line: {:+.1}%; RSS beyond it {:.1} → {:.1} MiB: {}, {}, {}, {} MiB",
            heap.trend_start,
            heap.trend_end,
            heap.trend_growth() * 100.0,
            rss.trend_start - heap.trend_start,
            rss.trend_end - heap.trend_end,
            part("mapped files", files.trend_start, files.trend_end),
            part(
                "free space among live objects",
                active.trend_start - heap.trend_start,
                active.trend_end - heap.trend_end
            ),
            part(
                "at most, freed pages and metadata the allocator holds",
                resident.trend_start - active.trend_start,
                resident.trend_end - active.trend_end
            ),
            part(
                "the rest (C code's malloc, such as SQLite's, and thread stacks; below \
                 zero by what the allocator counts but has not touched)",
                rss.trend_start - resident.trend_start - files.trend_start,
                rss.trend_end - resident.trend_end - files.trend_end
            ),
        ));
    }
    for name in ["fds", "udp_sockets", "tokio_tasks", "forward_slots"] {
        let d = drift(samples, series(name), from).context("no samples")?;
        // Churn moves these a little from sample to sample; a leak climbs with time.
        let flat = d.end <= d.start * 1.05 + 8.0;
        verdict.push(format!(
            "{name}: {} → {} (range {}-{}): {}",
            d.start,
            d.end,
            d.min,
            d.max,
            if flat { "flat" } else { "GROWING" }
        ));
    }
    let mut md = format!(
        "# Soak run\n\n{} walkers, {} rooms of {} media bots with churn, {:.0} minutes, samples every {:.0} s; {machine}.\n\n\
         Bots did: {} chat lines, {} leaves and rejoins, {} connections lost and resumed, {} microphone toggles; {} bot errors.\n\n",
        options.walkers,
        options.rooms,
        options.room_size,
        options.minutes,
        options.every.as_secs_f64(),
        activity.chat_lines.load(Ordering::Relaxed),
        activity.leaves.load(Ordering::Relaxed),
        activity.resumes.load(Ordering::Relaxed),
        activity.toggles.load(Ordering::Relaxed),
        activity.errors.load(Ordering::Relaxed),
    );
    for line in &verdict {
        let _ = writeln!(md, "- {line}");
    }
    md.push_str("\n| minute |");
    for (name, unit) in SERIES {
        let _ = write!(md, " {name} ({unit}) |");
    }
    md.push_str("\n|---|");
    for _ in SERIES {
        md.push_str("---|");
    }
    md.push('\n');
    for s in samples {
        md.push_str(&row(s));
        md.push('\n');
    }
    std::fs::write(options.out.join("soak.md"), md)?;
    std::fs::write(options.out.join("soak.svg"), plot(samples))?;
    Ok(verdict)
}

/// One small line chart per series, against minutes, in a grid: an SVG file.
pub fn plot(samples: &[Sample]) -> String {
    const W: f64 = 300.0;
    const H: f64 = 150.0;
    const PAD: f64 = 36.0;
    const COLS: usize = 3;
    let rows = SERIES.len().div_ceil(COLS);
    let (width, height) = (COLS as f64 * W, rows as f64 * H);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let t_max = samples.last().map_or(1.0, |s| s.minute.max(1e-9));
    for (i, (name, unit)) in SERIES.iter().enumerate() {
        let (ox, oy) = ((i % COLS) as f64 * W, (i / COLS) as f64 * H);
        let values: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.values[i].is_finite())
            .map(|s| (s.minute, s.values[i]))
            .collect();
        let lo = values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        let hi = values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        // From zero, so that a flat series looks flat.
        let (lo, hi) = if values.is_empty() {
            (0.0, 1.0)
        } else {
            (lo.min(0.0), hi.max(lo + 1.0) * 1.1)
        };
        let x = |t: f64| ox + PAD + t / t_max * (W - PAD - 10.0);
        let y = |v: f64| oy + H - 22.0 - (v - lo) / (hi - lo) * (H - 44.0);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}">{name} ({unit})</text>"#,
            ox + PAD,
            oy + 14.0
        );
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{yb}" x2="{x1}" y2="{yb}" stroke="#999"/><line x1="{x0}" y1="{yt}" x2="{x0}" y2="{yb}" stroke="#999"/>"##,
            x0 = x(0.0),
            x1 = x(t_max),
            yb = y(lo),
            yt = y(hi),
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{hi:.0}</text><text x="{}" y="{}" text-anchor="end">{lo:.0}</text><text x="{}" y="{}" text-anchor="end">{t_max:.0} min</text>"#,
            x(0.0) - 3.0,
            y(hi) + 4.0,
            x(0.0) - 3.0,
            y(lo),
            x(t_max),
            y(lo) + 14.0
        );
        let points: Vec<String> = values
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{}"/>"##,
            points.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The machine, for the report: the CPU model and the number of CPUs.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs")
}

/// The default place for the report: `target/soak` under the repository.
pub fn default_out() -> PathBuf {
    crate::repo_root().join("target/soak")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[f64]) -> Vec<Sample> {
        rss.iter()
            .enumerate()
            .map(|(i, r)| {
                let mut values = [0.0; SERIES.len()];
                values[0] = *r;
                values[series("fds")] = 100.0;
                Sample {
                    minute: i as f64,
                    values,
                }
            })
            .collect()
    }

    #[test]
    fn drift_counts_from_the_steady_minute() {
        let s = samples(&[10.0, 50.0, 90.0, 95.0, 99.0, 100.0, 101.0, 102.0]);
        let d = drift(&s, 0, 5.0).expect("samples");
        assert_eq!((d.start, d.end), (100.0, 102.0));
        assert!((d.growth() - 0.02).abs() < 1e-9);
        // The line through 99 … 102 (minute 4 is before the steady minute) runs 100 → 102.
        assert!((d.trend_start - 100.0).abs() < 1e-9 && (d.trend_end - 102.0).abs() < 1e-9);
        // A run shorter than that is judged over all of it.
        let short = samples(&[10.0, 20.0]);
        assert_eq!(drift(&short, 0, 5.0).map(|d| d.start), Some(10.0));
    }

    #[test]
    fn growth_is_judged_on_the_line_and_not_on_a_swinging_last_sample() {
        // Flat at 60 with swings of ±2 (who is in a room at that instant), ending on a high
        // swing: the last sample says +5%, the line says flat.
        let rss: Vec<f64> = (0..=30)
            .map(|m| match m % 3 {
                0 => 60.0,
                1 => 62.0,
                _ => 58.0,
            })
            .chain([63.0])
            .collect();
        let d = drift(&samples(&rss), 0, 5.0).expect("samples");
        assert!(d.growth() >= 0.05, "{d:?}");
        assert!(d.trend_growth().abs() < 0.02, "{d:?}");
        // A series that really climbs 10% is seen climbing on the line too.
        let leak: Vec<f64> = (0..=30).map(|m| 60.0 + 0.25 * f64::from(m)).collect();
        let d = drift(&samples(&leak), 0, 5.0).expect("samples");
        assert!((d.trend_growth() - 6.25 / 61.25).abs() < 1e-9, "{d:?}");
        // One sample has no slope: its value at both ends.
        assert_eq!(trend(&[(5.0, 7.0)]), (7.0, 7.0));
    }

    #[test]
    fn the_checked_series_are_sampled() {
        for name in [
            "rss",
            "heap_live",
            "heap_active",
            "heap_resident",
            "rss_file",
            "fds",
            "udp_sockets",
            "tokio_tasks",
            "forward_slots",
        ] {
            assert_eq!(SERIES[series(name)].0, name);
        }
    }

    #[test]
    fn the_plot_has_a_line_per_series() {
        let svg = plot(&samples(&[1.0, 2.0, 3.0]));
        assert_eq!(svg.matches("<polyline").count(), SERIES.len());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
