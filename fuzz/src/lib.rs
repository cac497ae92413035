//! `quad-fuzz`: fuzz harnesses for what Quad reads from the network and from files, run
//! on stable Rust with `proptest` as the input generator.
//!
//! Each [`Harness`] takes bytes and must not panic, whatever they are:
//! - `codec`: a frame decoded as a client's and as a server's message; a decoded message
//!   encodes to the same bytes again;
//! - `map`: a Tiled JSON map loaded as the server loads a map file;
//! - `session`: frames a client sends, checked and handled as the session and the space
//!   handle them (in the wrong state, illegal moves, signaling to anyone, SDP included),
//!   against a live [`SpaceWorld`] with two avatars in it, ticked between frames;
//! - `room_sdp`: a room offer and candidate through the SFU's admission, then the offer
//!   parsed by the WebRTC stack as the SFU parses it;
//! - `turn_tcp`: a TURN-over-TCP byte stream cut into frames as the server cuts it, each
//!   STUN frame decoded;
//! - `join_link`: a join link's token verified.
//!
//! Inputs are drawn by proptest: half raw bytes, half seeds from `fuzz/corpus/<harness>/`
//! (kept in the repository; `quad-fuzz --write-seeds` makes them again) with a few random
//! mutations each (bit flips, byte changes, inserts, deletions, truncation, splices). It
//! is not coverage-guided: the seeds carry it past the first checks of each format. A
//! failing input is shrunk by proptest and saved under `target/fuzz/<harness>/`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod harnesses;
pub use harnesses::seeds;

/// One fuzz target.
pub struct Harness {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every harness, in the README's order.
pub const HARNESSES: [Harness; 6] = [
    Harness {
        name: "codec",
        run: harnesses::codec,
    },
    Harness {
        name: "map",
        run: harnesses::map,
    },
    Harness {
        name: "session",
        run: harnesses::session,
    },
    Harness {
        name: "room_sdp",
        run: harnesses::room_sdp,
    },
    Harness {
        name: "turn_tcp",
        run: harnesses::turn_tcp,
    },
    Harness {
        name: "join_link",
        run: harnesses::join_link,
    },
];

/// The repository's root (the fuzz crate is one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where a harness's seeds are kept.
pub fn corpus_dir(name: &str) -> PathBuf {
    repo_root().join("fuzz/corpus").join(name)
}

/// The seeds of harness `name`, from its corpus directory (sorted by file name).
pub fn load_corpus(name: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e} (quad-fuzz --write-seeds makes it)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut seeds = Vec::with_capacity(files.len());
    for f in files {
        seeds.push(std::fs::read(&f)?);
    }
    if seeds.is_empty() {
        anyhow::bail!("{} holds no seeds", dir.display());
    }
    Ok(seeds)
}

/// Writes the built-in seeds of every harness into its corpus directory.
pub fn write_seeds() -> anyhow::Result<()> {
    for h in &HARNESSES {
        let dir = corpus_dir(h.name);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds(h.name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed)?;
        }
    }
    Ok(())
}

/// One random change to an input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Copies a piece of another seed (index, start, length) in at a position.
    Splice(usize, usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Values that often sit on a format's edges.
    let edge = prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(0x7f),
        Just(0x80),
        Just(0xc0),
        Just(0xdc),
        Just(0xdd),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), edge).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>(), 1usize..64)
            .prop_map(|(s, a, p, n)| Mutation::Splice(s, a, p, n)),
    ]
}

fn apply(mut input: Vec<u8>, mutations: &[Mutation], seeds: &[Vec<u8>]) -> Vec<u8> {
    for m in mutations {
        let len = input.len();
        match m {
            Mutation::FlipBit(p, b) if len > 0 => input[p % len] ^= 1 << b,
            Mutation::SetByte(p, v) if len > 0 => input[p % len] = *v,
            Mutation::Insert(p, bytes) => {
                let at = p % (len + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(p, n) if len > 0 => {
                let at = p % len;
                let end = (at + n).min(len);
                input.drain(at..end);
            }
            Mutation::Truncate(n) if len > 0 => input.truncate(n % len),
            Mutation::Splice(s, a, p, n) if !seeds.is_empty() => {
                let other = &seeds[s % seeds.len()];
                if !other.is_empty() {
                    let from = a % other.len();
                    let piece = &other[from..(from + n).min(other.len())];
                    let at = p % (len + 1);
                    input.splice(at..at, piece.iter().copied());
                }
            }
            _ => {}
        }
    }
    input
}

/// Inputs for a harness with `seeds`: raw bytes, or a seed with up to 8 mutations.
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let raw = proptest::collection::vec(any::<u8>(), 0..1024);
    let pool = seeds.clone();
    let mutated = (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..8),
    )
        .prop_map(move |(seed, ms)| apply(seed, &ms, &pool));
    prop_oneof![1 => raw, 3 => mutated]
}

/// What one run of a harness did.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    pub executions: u64,
    pub elapsed: Duration,
}

/// Runs `harness` on generated inputs until `executions` are done or `time` is up
/// (whichever first). A panic fails the run: the input is shrunk, saved under
/// `target/fuzz/<harness>/` and named in the error.
pub fn fuzz(harness: &Harness, executions: u64, time: Duration) -> anyhow::Result<Ran> {
    let seeds = load_corpus(harness.name)?;
    let strategy = inputs(seeds);
    let started = Instant::now();
    let mut done = 0u64;
    // Chunks, so that the time limit is looked at now and then.
    const CHUNK: u64 = 20_000;
    while done < executions && started.elapsed() < time {
        let cases = CHUNK.min(executions - done);
        let mut runner = TestRunner::new(Config {
            cases: u32::try_from(cases).unwrap_or(u32::MAX),
            failure_persistence: None,
            max_shrink_iters: 2_000,
            ..Config::default()
        });
        let run = harness.run;
        let result = runner.run(&strategy, |input| {
            run(&input);
            Ok::<(), TestCaseError>(())
        });
        match result {
            Ok(()) => done += cases,
            Err(TestError::Fail(why, input)) => {
                let dir = repo_root().join("target/fuzz").join(harness.name);
                std::fs::create_dir_all(&dir)?;
                let file = dir.join(format!("crash-{}", started.elapsed().as_micros()));
                std::fs::write(&file, &input)?;
                anyhow::bail!(
                    "{}: {why} after {done} executions; the input ({} bytes) is in {}",
                    harness.name,
                    input.len(),
                    file.display()
                );
            }
            Err(TestError::Abort(why)) => anyhow::bail!("{}: aborted: {why}", harness.name),
        }
    }
    Ok(Ran {
        executions: done,
        elapsed: started.elapsed(),
    })
}
