//! Fitting a viewer's video into its bandwidth estimate: which simulcast layer of each video
//! stream it gets, or whether the stream is paused. A pure function over numbers (the
//! estimate, what each layer measures, priorities and tile layers); it owns no state and
//! does no I/O. The room calls it for every viewer at each allocation tick and hands the
//! result to the forwarders, which still switch only at keyframes.
//!
//! The order of sacrifice: audio is reserved first and never paused for video; then every
//! video stream gets its lowest layer, in priority order (screen share, the loudest
//! speaker's camera, the other cameras), as far as the budget goes, and what does not fit
//! is paused; what budget is left raises streams, again in priority order, up to the layer
//! their tile wants.

use super::forward::LAYERS;

/// How much a viewer's video matters to it, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Screen,
    /// The camera of the loudest speaker.
    Speaker,
    Camera,
}

/// One video stream a viewer is sent, as the allocation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoStream {
    pub priority: Priority,
    /// The highest layer its tile wants.
    pub want: u8,
    /// Each layer's measured bitrate (bit/s); `None` or 0 for a layer that is not arriving.
    /// A single-layer stream has only layer 0.
    pub layers: [Option<u64>; LAYERS],
}

/// What a forwarder may send one viewer of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Allotment {
    /// No estimate for this viewer: its tile and its receiver's loss decide.
    #[default]
    Unbudgeted,
    /// At most this layer.
    UpTo(u8),
    /// Nothing: not even the lowest layer fits.
    Paused,
}

impl Allotment {
    /// Whether it lets more through than `before` did (a higher layer, or resumed).
    pub fn raises(self, before: Allotment) -> bool {
        let rank = |a: Allotment| match a {
            Allotment::Unbudgeted | Allotment::Paused => 0,
            Allotment::UpTo(layer) => 1 + u16::from(layer),
        };
        rank(self) > rank(before)
    }
}

/// What `allotments` of `streams` cost (bit/s): each stream's allotted layer as measured,
/// or the nearest lower one that arrives.
pub fn cost(streams: &[VideoStream], allotments: &[Allotment]) -> u64 {
    streams
        .iter()
        .zip(allotments)
        .map(|(stream, allotment)| match allotment {
            Allotment::UpTo(most) => live(stream)
                .filter(|l| l <= most)
                .max()
                .map_or(0, |l| rate(stream, l)),
            Allotment::Unbudgeted | Allotment::Paused => 0,
        })
        .sum()
}

/// What the next raise of `allotments` would add (bit/s), as the allocation would make it
/// with more budget: the lowest layer of the paused stream that matters most, since lowest
/// layers are given in priority order before anything is raised; with none paused, the
/// cheapest step of a stream to its next layer up within what its tile wants. `None` when
/// every stream has what it wants (or nothing is budgeted). The estimator grows far enough
/// to afford it (see [`super::estimator::DownlinkEstimate::want`]): without that, a paused
/// stream dearer than what the viewer's growth allows (a screen share to a viewer that
/// receives only audio) would never be tried again when its link widens.
pub fn next_raise(streams: &[VideoStream], allotments: &[Allotment]) -> Option<u64> {
    let paused = streams
        .iter()
        .zip(allotments)
        .filter(|(_, allotment)| **allotment == Allotment::Paused)
        .filter_map(|(stream, _)| Some((stream.priority, rate(stream, live(stream).next()?))))
        .min_by_key(|(priority, _)| *priority);
    if let Some((_, lowest)) = paused {
        return Some(lowest);
    }
    streams
        .iter()
        .zip(allotments)
        .filter_map(|(stream, allotment)| {
            let Allotment::UpTo(most) = *allotment else {
                return None;
            };
            let current = live(stream).filter(|&l| l <= most).max()?;
            let next = live(stream)
                .filter(|&l| l > current && l <= stream.want)
                .min()?;
            Some(rate(stream, next) - rate(stream, current))
        })
        .min()
}

/// The allotment of each of `streams` (in the order given) for a viewer whose estimate is
/// `estimate` bit/s and whose audio takes `audio` bit/s of it. With no estimate (`None`),
/// every stream is [`Allotment::Unbudgeted`]. A stream none of whose layers has been
/// measured yet gets the layer its tile wants (there is nothing to weigh it by).
pub fn allocate(estimate: Option<u64>, audio: u64, streams: &[VideoStream]) -> Vec<Allotment> {
    let Some(estimate) = estimate else {
        return vec![Allotment::Unbudgeted; streams.len()];
    };
    let mut budget = estimate.saturating_sub(audio);
    // Stable: streams of one priority keep the order given (the caller keeps it stable).
    let mut order: Vec<usize> = (0..streams.len()).collect();
    order.sort_by_key(|&i| streams[i].priority);
    let mut chosen: Vec<Option<u8>> = vec![None; streams.len()];
    let mut unmeasured = vec![false; streams.len()];

    // Each stream's lowest layer, in priority order.
    for &i in &order {
        let stream = &streams[i];
        let Some(lowest) = live(stream).next() else {
            unmeasured[i] = true;
            continue;
        };
        let cost = rate(stream, lowest);
        if cost <= budget {
            budget -= cost;
            chosen[i] = Some(lowest);
        }
    }
    // Then up, in priority order: the highest layer it wants that the budget affords.
    for &i in &order {
        let stream = &streams[i];
        let Some(current) = chosen[i] else {
            continue;
        };
        let paid = rate(stream, current);
        let better = live(stream)
            .filter(|&l| l > current && l <= stream.want)
            .filter(|&l| rate(stream, l) <= budget + paid)
            .max();
        if let Some(layer) = better {
            budget = budget + paid - rate(stream, layer);
            chosen[i] = Some(layer);
        }
    }
    chosen
        .iter()
        .zip(&unmeasured)
        .zip(streams)
        .map(|((choice, unmeasured), stream)| match choice {
            Some(layer) => Allotment::UpTo(*layer),
            None if *unmeasured => Allotment::UpTo(stream.want.min(LAYERS as u8 - 1)),
            None => Allotment::Paused,
        })
        .collect()
}

/// The layers of `stream` that arrive (measured above zero), lowest first.
fn live(stream: &VideoStream) -> impl Iterator<Item = u8> + '_ {
    (0..LAYERS as u8).filter(|&l| rate(stream, l) > 0)
}

fn rate(stream: &VideoStream, layer: u8) -> u64 {
    stream.layers[usize::from(layer)].unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Allotment::{Paused, Unbudgeted, UpTo};

    const K: u64 = 1000;

    fn camera(priority: Priority, want: u8) -> VideoStream {
        VideoStream {
            priority,
            want,
            layers: [Some(150 * K), Some(450 * K), Some(1200 * K)],
        }
    }

    fn screen() -> VideoStream {
        VideoStream {
            priority: Priority::Screen,
            want: 2,
            layers: [Some(800 * K), None, None],
        }
    }

    #[test]
    fn an_allocation_costs_its_allotted_layers_and_a_raise_is_a_higher_one() {
        let streams = [
            camera(Priority::Camera, 2),
            screen(),
            camera(Priority::Camera, 2),
        ];
        let allotments = [UpTo(1), UpTo(2), Paused];
        // The screen has only its one layer: allotted up to 2, it costs that one.
        assert_eq!(cost(&streams, &allotments), 450 * K + 800 * K);
        assert_eq!(cost(&streams, &[Unbudgeted; 3]), 0);
        assert!(UpTo(0).raises(Paused));
        assert!(UpTo(2).raises(UpTo(1)));
        assert!(!UpTo(1).raises(UpTo(1)));
        assert!(!Paused.raises(UpTo(0)));
        assert!(!Unbudgeted.raises(Paused));
    }

    #[test]
    fn the_next_raise_resumes_what_matters_most_then_takes_the_cheapest_step_up() {
        let streams = [camera(Priority::Camera, 2), screen()];
        // The screen paused: resuming it (800) comes before the camera's half (300 more),
        // as the allocation gives lowest layers before it raises anything.
        assert_eq!(next_raise(&streams, &[UpTo(0), Paused]), Some(800 * K));
        // Two paused: the one that matters most.
        assert_eq!(next_raise(&streams, &[Paused, Paused]), Some(800 * K));
        // None paused: the cheapest step up.
        let two = [camera(Priority::Speaker, 2), camera(Priority::Camera, 1)];
        assert_eq!(next_raise(&two, &[UpTo(1), UpTo(0)]), Some(300 * K));
        assert_eq!(next_raise(&two, &[UpTo(1), UpTo(1)]), Some(750 * K));
        // Everything as wanted, or nothing budgeted: no raise.
        assert_eq!(next_raise(&two, &[UpTo(2), UpTo(1)]), None);
        assert_eq!(next_raise(&streams, &[Unbudgeted; 2]), None);
        // A small tile (wants the quarter) that is paused still resumes at the quarter.
        let small = camera(Priority::Camera, 0);
        assert_eq!(next_raise(&[small], &[Paused]), Some(150 * K));
        assert_eq!(next_raise(&[small], &[UpTo(0)]), None);
        // A layer that does not arrive is stepped over.
        let gap = VideoStream {
            layers: [Some(150 * K), Some(0), Some(900 * K)],
            ..camera(Priority::Camera, 2)
        };
        assert_eq!(next_raise(&[gap], &[UpTo(0)]), Some(750 * K));
    }

    #[test]
    fn without_an_estimate_nothing_is_budgeted() {
        let streams = [camera(Priority::Camera, 2), screen()];
        assert_eq!(allocate(None, 50 * K, &streams), vec![Unbudgeted; 2]);
    }

    #[test]
    fn plenty_gives_every_tile_what_it_wants() {
        let streams = [camera(Priority::Camera, 2), camera(Priority::Camera, 1)];
        assert_eq!(
            allocate(Some(10_000 * K), 50 * K, &streams),
            vec![UpTo(2), UpTo(1)]
        );
    }

    #[test]
    fn a_tight_estimate_lowers_a_camera_to_the_layer_that_fits() {
        let streams = [camera(Priority::Camera, 2)];
        // 400 kbit/s less 50 for audio: the quarter layer (150) fits, the half (450) not.
        assert_eq!(allocate(Some(400 * K), 50 * K, &streams), vec![UpTo(0)]);
        assert_eq!(allocate(Some(600 * K), 50 * K, &streams), vec![UpTo(1)]);
        assert_eq!(allocate(Some(1300 * K), 50 * K, &streams), vec![UpTo(2)]);
    }

    #[test]
    fn audio_comes_first_and_a_camera_is_paused_before_it_suffers() {
        let streams = [camera(Priority::Camera, 2)];
        // 180 kbit/s: audio takes 50, the quarter layer (150) would take the rest and more.
        assert_eq!(allocate(Some(180 * K), 50 * K, &streams), vec![Paused]);
        // Audio alone exceeds the estimate: still no video, and no arithmetic underflow.
        assert_eq!(allocate(Some(30 * K), 50 * K, &streams), vec![Paused]);
    }

    #[test]
    fn the_screen_then_the_speaker_then_the_other_cameras() {
        let streams = [
            camera(Priority::Camera, 2),
            camera(Priority::Speaker, 2),
            screen(),
        ];
        // Screen 800 + speaker's quarter 150 + audio 50 = 1000: the other camera is paused.
        assert_eq!(
            allocate(Some(1050 * K), 50 * K, &streams),
            vec![Paused, UpTo(0), UpTo(0)]
        );
        // 1500: everyone's lowest (1100 with audio), then the speaker goes up to half
        // (1400); the other camera stays low.
        assert_eq!(
            allocate(Some(1500 * K), 50 * K, &streams),
            vec![UpTo(0), UpTo(1), UpTo(0)]
        );
        // Not even the screen fits: the cameras still get what does.
        assert_eq!(
            allocate(Some(400 * K), 50 * K, &streams),
            vec![UpTo(0), UpTo(0), Paused]
        );
    }

    #[test]
    fn everyone_gets_a_picture_before_anyone_gets_a_sharp_one() {
        let streams = [camera(Priority::Speaker, 2), camera(Priority::Camera, 2)];
        // 1400 less 50: the speaker's full layer (1200) plus the other's quarter (150) fits
        // exactly; without the other camera's quarter first, the speaker would take it all.
        assert_eq!(
            allocate(Some(1400 * K), 50 * K, &streams),
            vec![UpTo(2), UpTo(0)]
        );
        // 1300: no full layer for the speaker, so both get the half (900 of 1250).
        assert_eq!(
            allocate(Some(1300 * K), 50 * K, &streams),
            vec![UpTo(1), UpTo(1)]
        );
    }

    #[test]
    fn a_small_tile_is_not_raised_past_what_it_wants() {
        let streams = [camera(Priority::Speaker, 0), camera(Priority::Camera, 1)];
        assert_eq!(
            allocate(Some(5000 * K), 50 * K, &streams),
            vec![UpTo(0), UpTo(1)]
        );
    }

    #[test]
    fn layers_that_do_not_arrive_are_skipped() {
        // The browser stopped sending the half layer (it could not afford it).
        let stream = VideoStream {
            priority: Priority::Camera,
            want: 2,
            layers: [Some(150 * K), Some(0), Some(900 * K)],
        };
        assert_eq!(allocate(Some(600 * K), 0, &[stream]), vec![UpTo(0)]);
        assert_eq!(allocate(Some(1000 * K), 0, &[stream]), vec![UpTo(2)]);
        // Only the full layer arrives, and it does not fit: paused.
        let only_full = VideoStream {
            layers: [None, None, Some(900 * K)],
            ..stream
        };
        assert_eq!(allocate(Some(600 * K), 0, &[only_full]), vec![Paused]);
    }

    #[test]
    fn a_stream_not_yet_measured_gets_its_tile_layer() {
        let stream = VideoStream {
            priority: Priority::Camera,
            want: 1,
            layers: [None; LAYERS],
        };
        assert_eq!(
            allocate(
                Some(100 * K),
                50 * K,
                &[stream, camera(Priority::Camera, 2)]
            ),
            vec![UpTo(1), Paused]
        );
    }
}
