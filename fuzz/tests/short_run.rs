//! A short bounded run of every fuzz harness, part of `cargo xtask test`: 10,000 inputs
//! each (or 20 s), no panic. `cargo xtask fuzz --minutes N` runs them longer.

use quad_fuzz::{HARNESSES, fuzz, load_corpus, seeds};
use std::time::Duration;

#[test]
fn every_harness_survives_a_short_run() {
    for h in &HARNESSES {
        match fuzz(h, 10_000, Duration::from_secs(20)) {
            Ok(ran) => {
                println!("{}: {} inputs in {:?}", h.name, ran.executions, ran.elapsed);
                assert!(ran.executions > 0, "{} ran nothing", h.name);
            }
            Err(e) => panic!("{e:#}"),
        }
    }
}

#[test]
fn the_corpus_in_the_repository_holds_the_built_in_seeds() {
    for h in &HARNESSES {
        let kept = load_corpus(h.name).unwrap_or_else(|e| panic!("{e:#}"));
        let built = seeds(h.name);
        assert!(!built.is_empty(), "{} has no built-in seeds", h.name);
        if h.name == "map" {
            for seed in &built {
                let text = String::from_utf8_lossy(seed);
                quad_shared::map::Map::from_tmj(&text)
                    .unwrap_or_else(|e| panic!("a map seed does not load: {e}"));
            }
        }
        // Join links and STUN transactions are made afresh each time (random ids): only
        // their number must match.
        assert_eq!(
            kept.len(),
            built.len(),
            "{}: run quad-fuzz --write-seeds",
            h.name
        );
    }
}

#[test]
fn the_harnesses_catch_a_panic() {
    let panicky = quad_fuzz::Harness {
        name: "codec",
        run: |data| assert!(data.len() < 3, "a long input"),
    };
    let err = fuzz(&panicky, 1_000, Duration::from_secs(20)).expect_err("it panics");
    assert!(format!("{err:#}").contains("a long input"), "{err:#}");
}
