//! One viewer's leg of one published stream, as a plain state machine: which simulcast
//! layer the viewer gets, when it may switch (only at a keyframe of the new layer), which
//! keyframes that needs, and how sequence numbers and timestamps are rewritten so that the
//! viewer sees one continuous stream across switches, pauses and reused m-lines. No I/O,
//! no clock and no channels: the forwarder (`forward.rs`) feeds it every arriving packet
//! with the instant it arrived and does what the returned [`Step`] says.
//!
//! The layer a viewer should get ([`Leg::target`]) is the one its tile wants, within what
//! the room's bandwidth allocation allots it ([`Allotment`]), or, for a viewer without a
//! bandwidth estimate, within the cap its receiver's reported loss allows
//! ([`Leg::on_loss`]); and of those, the nearest layer the publisher is sending (lower
//! first).

use super::allocation::Allotment;

/// Simulcast layers: quarter, half and full resolution.
pub const LAYERS: usize = 3;
/// The highest layer.
pub const TOP: u8 = (LAYERS - 1) as u8;
/// A viewer whose layer was lowered for loss gets the next one up after this long without.
pub const LAYER_RECOVERY: std::time::Duration = std::time::Duration::from_secs(8);
/// Receiver-reported loss (of 256) above which a viewer's layer is lowered: about 8%.
const LOSS_HIGH: u8 = 20;
/// ... and below which it counts as clean: about 2%.
const LOSS_LOW: u8 = 5;
/// A layer switch continues the timestamps one 30 fps frame at 90 kHz after the last sent.
const SWITCH_TS_STEP: u32 = 3000;

use std::time::Instant;

/// What the forwarder knows of the stream a packet arrived on, the same for every leg.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    /// A camera or a screen (not a microphone): switched at keyframes.
    pub video: bool,
    /// It arrives in more than one layer.
    pub simulcast: bool,
    /// Which layers arrived lately (a browser drops layers it cannot afford).
    pub live: [bool; LAYERS],
}

/// One arriving packet, as the leg sees it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub layer: u8,
    /// Its sequence number (already shifted past packets the stream held back) and timestamp.
    pub seq: u16,
    pub ts: u32,
    /// It starts a keyframe.
    pub keyframe: bool,
}

/// What to do with one arriving packet for one viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Step {
    /// Send it, numbered so.
    pub send: Option<(u16, u32)>,
    /// Ask the publisher for a keyframe of this layer (the forwarder rate-limits requests).
    pub keyframe: Option<u8>,
    /// What changed for this viewer, for the log.
    pub change: Option<Change>,
}

/// A change in what a viewer receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It takes this layer from this packet on.
    Took(u8),
    /// Its allotment went below the layer it had: that layer stops at once.
    OverAllotment { had: u8, most: u8 },
    /// It is paused.
    Paused,
}

/// One viewer's leg of a stream (see the module's documentation).
#[derive(Clone, Debug)]
pub struct Leg {
    /// The layer its tile wants.
    want: u8,
    /// The highest layer its loss allows (while it has no bandwidth estimate).
    cap: u8,
    cap_changed: Instant,
    /// What the bandwidth allocation allows it.
    allotment: Allotment,
    /// The layer it receives now (none until the first keyframe of one, and while paused).
    current: Option<u8>,
    /// Added to arriving sequence numbers and timestamps of the current layer.
    seq_offset: u16,
    ts_offset: u32,
    /// The last sequence number and timestamp it was sent.
    last: Option<(u16, u32)>,
}

impl Leg {
    /// A new leg for a viewer whose tile wants `want`, continuing the numbering `last` of
    /// the m-line it is sent on (a reused m-line numbers on from its previous stream).
    pub fn new(want: u8, last: Option<(u16, u32)>, now: Instant) -> Leg {
        Leg {
            want: want.min(TOP),
            cap: TOP,
            cap_changed: now,
            allotment: Allotment::Unbudgeted,
            current: None,
            seq_offset: 0,
            ts_offset: 0,
            last,
        }
    }

    pub fn set_want(&mut self, layer: u8) {
        self.want = layer.min(TOP);
    }

    /// A new allotment; whether it differs from the last.
    pub fn allot(&mut self, allotment: Allotment) -> bool {
        std::mem::replace(&mut self.allotment, allotment) != allotment
    }

    /// The layer it receives now.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// The highest layer its reported loss allows now.
    #[cfg(test)]
    fn cap(&self) -> u8 {
        self.cap
    }

    /// The stream stopped (a teacher turned the device off): the viewer picks it up again at
    /// a keyframe, numbered on without a gap.
    pub fn interrupt(&mut self) {
        self.current = None;
    }

    /// Its receiver reported losing `lost` of 256 packets. Counts only while it has no
    /// bandwidth estimate (the allocation decides otherwise): heavy loss lowers the cap a
    /// layer, [`LAYER_RECOVERY`] without loss raises it one again.
    pub fn on_loss(&mut self, lost: u8, now: Instant) {
        if self.allotment != Allotment::Unbudgeted {
            return;
        }
        if lost > LOSS_HIGH && self.cap > 0 {
            self.cap -= 1;
            self.cap_changed = now;
        } else if lost > LOSS_LOW {
            // Not clean: the recovery clock starts again.
            self.cap_changed = now;
        } else if self.cap < TOP && now.duration_since(self.cap_changed) >= LAYER_RECOVERY {
            self.cap += 1;
            self.cap_changed = now;
        }
    }

    /// The layer it should get now, or `None` while paused: the one it wants within its
    /// allotment (or loss cap), else the nearest one arriving, lower first. With no layer
    /// arriving at all, the one it wants.
    pub fn target(&self, live: &[bool; LAYERS]) -> Option<u8> {
        let wanted = match self.allotment {
            Allotment::Unbudgeted => self.want.min(self.cap),
            Allotment::UpTo(layer) => self.want.min(layer),
            Allotment::Paused => return None,
        };
        let wanted = usize::from(wanted);
        (0..=wanted)
            .rev()
            .chain(wanted + 1..LAYERS)
            .find(|&l| live[l])
            .map_or(Some(wanted as u8), |l| Some(l as u8))
    }

    /// What to do with `packet` for this viewer.
    pub fn on_packet(&mut self, stream: &Stream, packet: Arrival) -> Step {
        let mut step = Step::default();
        let Some(target) = self.target(&stream.live) else {
            // Paused: it resumes at a keyframe, numbered on from what it was sent last.
            if self.current.take().is_some() {
                step.change = Some(Change::Paused);
            }
            return step;
        };
        if let (Some(had), Allotment::UpTo(most)) = (self.current, self.allotment)
            && had > most
            && had != target
        {
            // Over its allotment: the layer it has stops at once and the picture holds until
            // the allotted layer's keyframe; sending on until then would overfill its link,
            // and its audio would be lost with the video.
            self.current = None;
            step.change = Some(Change::OverAllotment { had, most });
        }
        let layer = packet.layer;
        if self.current != Some(layer) {
            // A viewer joins a layer at its keyframe; a new viewer of a single-layer stream at
            // once (one that was paused waits for a keyframe too).
            let at_keyframe = stream.video && (stream.simulcast || self.last.is_some());
            if layer != target || (at_keyframe && !packet.keyframe) {
                if at_keyframe && (layer == target || self.current.is_none()) {
                    step.keyframe = Some(target);
                }
                return step;
            }
            self.switch_to(layer, packet.seq, packet.ts);
            step.change = Some(Change::Took(layer));
        } else if target != layer {
            // Stays on this layer until the target's keyframe comes.
            step.keyframe = Some(target);
        }
        let out = (
            packet.seq.wrapping_add(self.seq_offset),
            packet.ts.wrapping_add(self.ts_offset),
        );
        self.last = Some(out);
        step.send = Some(out);
        step
    }

    /// Takes `layer` from the packet `(seq, ts)` on, continuing its own numbering.
    fn switch_to(&mut self, layer: u8, seq: u16, ts: u32) {
        match self.last {
            Some((last_seq, last_ts)) => {
                self.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
                self.ts_offset = last_ts.wrapping_add(SWITCH_TS_STEP).wrapping_sub(ts);
            }
            None => (self.seq_offset, self.ts_offset) = (0, 0),
        }
        self.current = Some(layer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ALL: [bool; LAYERS] = [true; LAYERS];

    fn camera() -> Stream {
        Stream {
            video: true,
            simulcast: true,
            live: ALL,
        }
    }

    fn mic() -> Stream {
        Stream {
            video: false,
            simulcast: false,
            live: [true, false, false],
        }
    }

    fn packet(layer: u8, seq: u16, ts: u32, keyframe: bool) -> Arrival {
        Arrival {
            layer,
            seq,
            ts,
            keyframe,
        }
    }

    #[test]
    fn a_microphone_is_sent_at_once_with_its_own_numbers() {
        let mut leg = Leg::new(0, None, Instant::now());
        let step = leg.on_packet(&mic(), packet(0, 500, 9_000, false));
        assert_eq!(step.send, Some((500, 9_000)));
        assert_eq!(step.change, Some(Change::Took(0)));
        assert_eq!(step.keyframe, None, "audio has no keyframes");
        assert_eq!(
            leg.on_packet(&mic(), packet(0, 501, 9_960, false)).send,
            Some((501, 9_960))
        );
    }

    #[test]
    fn a_reused_m_line_numbers_on_from_its_last_packet() {
        // The m-line last sent seq 70 at ts 1_000; the new microphone starts at 9 / 50.
        let mut leg = Leg::new(0, Some((70, 1_000)), Instant::now());
        assert_eq!(
            leg.on_packet(&mic(), packet(0, 9, 50, false)).send,
            Some((71, 1_000 + SWITCH_TS_STEP))
        );
        assert_eq!(
            leg.on_packet(&mic(), packet(0, 10, 1_010, false)).send,
            Some((72, 1_000 + SWITCH_TS_STEP + 960))
        );
    }

    #[test]
    fn a_viewer_waits_for_a_keyframe_of_its_layer_and_asks_for_one() {
        let mut leg = Leg::new(1, None, Instant::now());
        // The layer it wants, but not a keyframe: held, and a keyframe of it wanted.
        let step = leg.on_packet(&camera(), packet(1, 10, 0, false));
        assert_eq!((step.send, step.keyframe), (None, Some(1)));
        // Another layer: nothing for it, and it still wants its own.
        let step = leg.on_packet(&camera(), packet(2, 99, 0, true));
        assert_eq!((step.send, step.keyframe), (None, Some(1)));
        // Its keyframe: it takes the layer.
        let step = leg.on_packet(&camera(), packet(1, 11, 3_000, true));
        assert_eq!(step.send, Some((11, 3_000)));
        assert_eq!(step.change, Some(Change::Took(1)));
        assert_eq!(leg.current(), Some(1));
        // Other layers' packets pass it by.
        assert_eq!(
            leg.on_packet(&camera(), packet(0, 40, 3_000, false)),
            Step::default()
        );
    }

    #[test]
    fn a_switch_happens_at_the_new_layers_keyframe_and_numbering_runs_on() {
        let mut leg = Leg::new(0, None, Instant::now());
        leg.on_packet(&camera(), packet(0, 100, 90_000, true));
        leg.on_packet(&camera(), packet(0, 101, 93_000, false));
        // The tile grew: it wants the full layer, keeps the quarter until a keyframe of it.
        leg.set_want(2);
        let step = leg.on_packet(&camera(), packet(0, 102, 96_000, false));
        assert_eq!(step.send, Some((102, 96_000)));
        assert_eq!(step.keyframe, Some(2));
        // The full layer, between keyframes: not yet, and its keyframe is still wanted.
        let step = leg.on_packet(&camera(), packet(2, 7_000, 500, false));
        assert_eq!((step.send, step.keyframe), (None, Some(2)));
        // The full layer's keyframe: taken, numbered straight after the last one sent.
        let step = leg.on_packet(&camera(), packet(2, 7_001, 3_500, true));
        assert_eq!(step.send, Some((103, 99_000)));
        assert_eq!(step.change, Some(Change::Took(2)));
        let step = leg.on_packet(&camera(), packet(2, 7_002, 6_500, false));
        assert_eq!(step.send, Some((104, 102_000)));
        // The old layer no longer reaches it.
        assert_eq!(
            leg.on_packet(&camera(), packet(0, 103, 99_000, false)).send,
            None
        );
    }

    #[test]
    fn numbering_wraps_around() {
        let mut leg = Leg::new(0, Some((u16::MAX, u32::MAX - 100)), Instant::now());
        let step = leg.on_packet(&mic(), packet(0, 3, 0, false));
        assert_eq!(step.send, Some((0, SWITCH_TS_STEP - 101)));
    }

    #[test]
    fn an_allotment_below_the_current_layer_stops_it_at_once() {
        let mut leg = Leg::new(2, None, Instant::now());
        leg.on_packet(&camera(), packet(2, 1, 0, true));
        assert!(leg.allot(Allotment::UpTo(0)));
        assert!(
            !leg.allot(Allotment::UpTo(0)),
            "the same allotment is no change"
        );
        // The next full-layer packet is not sent: the link cannot take it.
        let step = leg.on_packet(&camera(), packet(2, 2, 3_000, false));
        assert_eq!(step.send, None);
        assert_eq!(step.change, Some(Change::OverAllotment { had: 2, most: 0 }));
        assert_eq!(leg.current(), None);
        // The quarter layer is taken at its keyframe, numbered on from the last sent.
        let step = leg.on_packet(&camera(), packet(0, 50, 6_000, false));
        assert_eq!((step.send, step.keyframe), (None, Some(0)));
        let step = leg.on_packet(&camera(), packet(0, 51, 6_000, true));
        assert_eq!(step.send, Some((2, SWITCH_TS_STEP)));
    }

    #[test]
    fn a_paused_viewer_gets_nothing_and_resumes_at_a_keyframe() {
        let mut leg = Leg::new(0, None, Instant::now());
        leg.on_packet(&camera(), packet(0, 1, 0, true));
        leg.allot(Allotment::Paused);
        let step = leg.on_packet(&camera(), packet(0, 2, 3_000, false));
        assert_eq!(step.change, Some(Change::Paused));
        assert_eq!((step.send, step.keyframe), (None, None));
        assert_eq!(
            leg.on_packet(&camera(), packet(0, 3, 6_000, true)),
            Step::default()
        );
        leg.allot(Allotment::UpTo(0));
        let step = leg.on_packet(&camera(), packet(0, 4, 9_000, false));
        assert_eq!((step.send, step.keyframe), (None, Some(0)));
        let step = leg.on_packet(&camera(), packet(0, 5, 12_000, true));
        assert_eq!(step.send, Some((2, SWITCH_TS_STEP)));
    }

    #[test]
    fn a_single_layer_video_is_taken_at_once_by_a_new_viewer_but_at_a_keyframe_after_a_pause() {
        let screen = Stream {
            video: true,
            simulcast: false,
            live: [true, false, false],
        };
        let mut leg = Leg::new(2, None, Instant::now());
        assert_eq!(
            leg.on_packet(&screen, packet(0, 30, 0, false)).send,
            Some((30, 0))
        );
        leg.interrupt();
        let step = leg.on_packet(&screen, packet(0, 31, 3_000, false));
        assert_eq!((step.send, step.keyframe), (None, Some(0)));
        assert_eq!(
            leg.on_packet(&screen, packet(0, 32, 6_000, true)).send,
            Some((31, SWITCH_TS_STEP))
        );
    }

    #[test]
    fn a_layer_that_stopped_arriving_is_replaced_by_the_nearest_lower_first() {
        let leg = Leg::new(1, None, Instant::now());
        assert_eq!(leg.target(&ALL), Some(1));
        assert_eq!(leg.target(&[true, false, true]), Some(0));
        assert_eq!(leg.target(&[false, false, true]), Some(2));
        assert_eq!(leg.target(&[false; LAYERS]), Some(1));
    }

    #[test]
    fn without_an_estimate_loss_lowers_the_cap_and_a_clean_spell_raises_it() {
        let start = Instant::now();
        let mut leg = Leg::new(2, None, start);
        leg.on_loss(40, start);
        assert_eq!((leg.cap(), leg.target(&ALL)), (1, Some(1)));
        leg.on_loss(40, start + Duration::from_secs(1));
        leg.on_loss(40, start + Duration::from_secs(2));
        assert_eq!(leg.cap(), 0, "never below the lowest layer");
        // Moderate loss holds the cap and restarts the recovery clock.
        leg.on_loss(10, start + Duration::from_secs(9));
        leg.on_loss(0, start + Duration::from_secs(16));
        assert_eq!(leg.cap(), 0);
        leg.on_loss(0, start + Duration::from_secs(17));
        assert_eq!(leg.cap(), 1);
        // With an estimate, the allocation decides and loss reports are not counted.
        leg.allot(Allotment::UpTo(2));
        leg.on_loss(200, start + Duration::from_secs(18));
        assert_eq!((leg.cap(), leg.target(&ALL)), (1, Some(2)));
    }
}
