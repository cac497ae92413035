//! The client's game state, free of any browser API.
//!
//! The own avatar is predicted with `quad_shared::movement::step` in fixed steps; inputs are
//! batched (up to 3 steps, 50 ms) and kept until the server acknowledges them. When a
//! snapshot arrives, the prediction is reset to the server's position and the unacknowledged
//! inputs are replayed on top (reconciliation). Other avatars are drawn slightly in the past,
//! interpolated between the positions the server sent.
//!
//! It also keeps what the server says about chat ([`ChatLog`]), this person's role and the
//! class of the room it is in, for the page to show.

use crate::chat::ChatLog;
use glam::Vec2;
use quad_shared::AvatarId;
use quad_shared::map::Map;
use quad_shared::movement::{self, STEP_SECONDS};
use quad_shared::protocol::{
    ClassState, Input, MediaFlags, Person, Role, ServerMsg, Snapshot, Welcome,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// How far in the past other avatars are drawn, ms: the server sends a snapshot every
/// 100 ms, and a neighbour's position at most that often, plus margin for a late frame.
pub const INTERPOLATION_DELAY_MS: f64 = 150.0;
/// Steps per input message.
const STEPS_PER_INPUT: u8 = 3;
/// Longest frame time simulated at once (a backgrounded tab must not replay seconds).
const MAX_FRAME_SECONDS: f32 = 0.25;
/// Samples kept per remote avatar.
const MAX_SAMPLES: usize = 16;
/// Attention reports kept for a class's teacher.
pub const MAX_ATTENTION_EVENTS: usize = 50;

/// The own avatar.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: AvatarId,
    pub name: String,
    /// Where the client shows it: the server's position plus unacknowledged input.
    pub predicted: Vec2,
    /// The last authoritative position.
    pub server: Vec2,
    pending: VecDeque<Input>,
    batch: Option<(u8, u8)>,
    seq: u32,
    step_time: f32,
}

/// Another avatar: timestamped positions as received.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    samples: VecDeque<(f64, Vec2)>,
}

impl Remote {
    /// The most recent position the server sent.
    pub fn latest(&self) -> Option<Vec2> {
        self.samples.back().map(|s| s.1)
    }

    fn push(&mut self, now_ms: f64, pos: Vec2, tick_ms: f64) {
        if let Some(&(t, last)) = self.samples.back() {
            // Updates come only when an avatar moves; after a pause, it was standing still
            // until just before this update, not gliding since the last one.
            if now_ms - t > 2.0 * tick_ms {
                self.samples.push_back((now_ms - tick_ms, last));
            }
        }
        self.samples.push_back((now_ms, pos));
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The position to draw at `render_ms` (already shifted into the past).
    pub fn at(&self, render_ms: f64) -> Option<Vec2> {
        let first = self.samples.front()?;
        if render_ms <= first.0 {
            return Some(first.1);
        }
        for (a, b) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            if render_ms <= b.0 {
                let span = (b.0 - a.0).max(1e-3);
                let t = ((render_ms - a.0) / span) as f32;
                return Some(a.1.lerp(b.1, t.clamp(0.0, 1.0)));
            }
        }
        self.latest()
    }
}

/// Everything the client knows.
#[derive(Debug, Default)]
pub struct Game {
    pub me: Option<Me>,
    pub others: HashMap<AvatarId, Remote>,
    pub people: BTreeMap<AvatarId, String>,
    /// Everyone's role, by id (shown in the people list).
    pub roles: BTreeMap<AvatarId, Role>,
    pub map: Option<Arc<Map>>,
    pub tick_hz: u16,
    /// Where the server serves the map (from `Welcome`).
    pub map_url: String,
    /// Who gets linked with whom, and how audio fades (from `Welcome`).
    pub proximity: quad_shared::proximity::ProximityRules,
    /// Set when the roster changed and the people list needs redrawing.
    pub roster_dirty: bool,
    /// The last error the server sent, for the HUD.
    pub last_error: Option<String>,
    /// What this person is (from `Welcome`).
    pub role: Role,
    /// The chat lines received.
    pub chat: ChatLog,
    /// The class of the room this avatar is in; `None` outside rooms.
    pub class: Option<ClassState>,
    /// Set when the class or its attention reports changed and the page needs redrawing.
    pub class_dirty: bool,
    /// For a teacher: students who stopped or started watching, oldest first.
    pub attention: VecDeque<AttentionEvent>,
    /// Something to tell the user once (an error after joining, a notice); the page takes it.
    pub notice: Option<String>,
    /// People whose connection dropped and who the server keeps for their return.
    pub reconnecting: std::collections::BTreeSet<AvatarId>,
    /// For a teacher in a class: its register so far, and whether it changed since drawn.
    pub class_report: Option<quad_shared::protocol::ClassReport>,
    pub report_dirty: bool,
    /// This person's class records, as last sent, and whether they changed since drawn.
    pub records: Option<quad_shared::protocol::RecordsList>,
    pub records_dirty: bool,
}

/// A student stopped or started watching (see `ClientMsg::Attention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionEvent {
    pub student: AvatarId,
    pub name: String,
    pub watching: bool,
    /// Whether the class was in focus mode then.
    pub focus: bool,
}

impl Game {
    /// Applies one message from the server; `now_ms` is the client's clock.
    pub fn on_message(&mut self, msg: ServerMsg, now_ms: f64) {
        match msg {
            ServerMsg::Welcome(w) => self.welcome(w),
            ServerMsg::Snapshot(s) => self.snapshot(s, now_ms),
            ServerMsg::PeopleJoined { people } => {
                for Person { id, name, role } in people {
                    self.people.insert(id, name);
                    self.roles.insert(id, role);
                }
                self.roster_dirty = true;
            }
            ServerMsg::PeopleLeft { ids } => {
                for id in ids {
                    self.people.remove(&id);
                    self.roles.remove(&id);
                    self.others.remove(&id);
                    self.reconnecting.remove(&id);
                }
                self.roster_dirty = true;
            }
            ServerMsg::Error(e) => {
                if self.me.is_some() {
                    self.notice = Some(e.message.clone());
                }
                self.last_error = Some(e.message);
            }
            ServerMsg::Chat(line) => self.chat.add(line),
            ServerMsg::ChatHistory { lines } => self.chat.merge(lines),
            ServerMsg::ChatNotSaved { id } => {
                self.chat.mark_unsaved(id);
                self.notice = Some(crate::chat::NOT_SAVED_NOTICE.to_owned());
            }
            ServerMsg::Class(class) => {
                if class.as_ref().map(|c| c.room) != self.class.as_ref().map(|c| c.room) {
                    self.attention.clear();
                    self.class_report = None;
                    self.report_dirty = true;
                }
                self.class = class;
                self.class_dirty = true;
            }
            ServerMsg::Attention {
                student,
                name,
                watching,
            } => {
                let focus = self.class.as_ref().is_some_and(|c| c.focus);
                self.attention.push_back(AttentionEvent {
                    student,
                    name,
                    watching,
                    focus,
                });
                while self.attention.len() > MAX_ATTENTION_EVENTS {
                    self.attention.pop_front();
                }
                self.class_dirty = true;
            }
            ServerMsg::Notice { text } => self.notice = Some(text),
            ServerMsg::Recording { room, news, .. } => {
                self.notice = Some(crate::class::recording_notice(&room, &news));
            }
            ServerMsg::ClassReport(report) => {
                self.class_report = Some(report);
                self.report_dirty = true;
            }
            ServerMsg::Records(list) => {
                self.records = Some(list);
                self.records_dirty = true;
            }
            ServerMsg::Reconnecting { id, reconnecting } => {
                if reconnecting {
                    self.reconnecting.insert(id);
                } else {
                    self.reconnecting.remove(&id);
                }
                self.roster_dirty = true;
            }
            _ => {}
        }
    }

    /// The connection to the server dropped: what the server said about the space goes
    /// (a new `Welcome` brings it again); the chat, the map and this person's role stay.
    pub fn connection_lost(&mut self) {
        self.me = None;
        self.others.clear();
        self.people.clear();
        self.roles.clear();
        self.reconnecting.clear();
        self.roster_dirty = true;
        self.class = None;
        self.attention.clear();
        self.class_dirty = true;
    }

    /// The devices the teacher turned off for this client (none outside a class).
    pub fn my_blocks(&self) -> MediaFlags {
        match (&self.class, &self.me) {
            (Some(class), Some(me)) => class.blocked_of(me.id),
            _ => MediaFlags::default(),
        }
    }

    /// Whether this client teaches the class it is in: the teacher's tools show.
    pub fn teaches(&self) -> bool {
        self.role.is_teacher() && self.class.is_some()
    }

    /// Whether the class is in focus mode for this client: a student watches the teacher's
    /// stage and cannot walk.
    pub fn in_focus(&self) -> bool {
        let (Some(class), Some(me)) = (&self.class, &self.me) else {
            return false;
        };
        class.focus && !self.role.is_teacher() && !class.teachers.contains(&me.id)
    }

    /// Whether this client's hand is raised in its class.
    pub fn hand_raised(&self) -> bool {
        match (&self.class, &self.me) {
            (Some(class), Some(me)) => class.hands.contains(&me.id),
            _ => false,
        }
    }

    fn welcome(&mut self, w: Welcome) {
        let spawn = Vec2::from_array(w.spawn);
        self.tick_hz = w.tick_hz.max(1);
        self.map_url = w.map_url;
        self.proximity = w.proximity;
        self.role = w.role;
        self.me = Some(Me {
            id: w.you,
            name: w.name,
            predicted: spawn,
            server: spawn,
            pending: VecDeque::new(),
            batch: None,
            seq: 0,
            step_time: 0.0,
        });
        self.others.clear();
    }

    fn tick_ms(&self) -> f64 {
        1000.0 / f64::from(self.tick_hz.max(1))
    }

    fn snapshot(&mut self, s: Snapshot, now_ms: f64) {
        let tick_ms = self.tick_ms();
        for u in &s.avatars {
            let pos = Vec2::from_array(u.position());
            self.others
                .entry(u.0)
                .or_default()
                .push(now_ms, pos, tick_ms);
        }
        for id in &s.gone {
            self.others.remove(id);
        }
        let (Some(me), Some(you)) = (self.me.as_mut(), s.you) else {
            return;
        };
        me.server = Vec2::from_array(you);
        while me.pending.front().is_some_and(|i| i.seq <= s.ack) {
            me.pending.pop_front();
        }
        // Reconcile: the server's word, then what it has not seen yet.
        let mut p = me.server;
        if let Some(map) = &self.map {
            for input in &me.pending {
                p = movement::apply(&map.collision, p, input.dir, input.steps);
            }
            if let Some((dir, steps)) = me.batch {
                p = movement::apply(&map.collision, p, dir, steps);
            }
        }
        me.predicted = p;
    }

    /// Advances prediction by `dt` seconds with the keys in `dir` held; returns the inputs to
    /// send to the server now. In focus mode the keys do nothing (the server refuses them).
    pub fn update(&mut self, dt: f32, dir: u8) -> Vec<Input> {
        let dir = if self.in_focus() { 0 } else { dir };
        let mut out = Vec::new();
        let (Some(me), Some(map)) = (self.me.as_mut(), self.map.as_ref()) else {
            return out;
        };
        me.step_time = (me.step_time + dt.clamp(0.0, MAX_FRAME_SECONDS)).min(MAX_FRAME_SECONDS);
        while me.step_time >= STEP_SECONDS {
            me.step_time -= STEP_SECONDS;
            if me.batch.is_some_and(|(d, _)| d != dir) {
                flush(me, &mut out);
            }
            if dir == 0 {
                continue;
            }
            me.predicted = movement::step(&map.collision, me.predicted, dir);
            let steps = me.batch.map_or(0, |(_, s)| s) + 1;
            me.batch = Some((dir, steps));
            if steps >= STEPS_PER_INPUT {
                flush(me, &mut out);
            }
        }
        out
    }

    /// Where to draw another avatar now.
    pub fn render_position(&self, id: AvatarId, now_ms: f64) -> Option<Vec2> {
        self.others.get(&id)?.at(now_ms - INTERPOLATION_DELAY_MS)
    }

    /// The zone name at a position.
    pub fn zone_name(&self, p: Vec2) -> Option<&str> {
        let map = self.map.as_ref()?;
        map.zone_at(p)
            .and_then(|z| map.zone(z))
            .map(|z| z.name.as_str())
    }

    /// Where another avatar is drawn now, relative to the own avatar: (distance, x offset).
    pub fn offset_to(&self, id: AvatarId, now_ms: f64) -> Option<(f32, f32)> {
        let me = self.me.as_ref()?.predicted;
        let them = self.render_position(id, now_ms)?;
        Some((me.distance(them), them.x - me.x))
    }

    /// A display name for an avatar id.
    pub fn name_of(&self, id: AvatarId) -> &str {
        self.people.get(&id).map_or("?", String::as_str)
    }
}

fn flush(me: &mut Me, out: &mut Vec<Input>) {
    if let Some((dir, steps)) = me.batch.take() {
        me.seq += 1;
        let input = Input {
            seq: me.seq,
            dir,
            steps,
        };
        me.pending.push_back(input);
        out.push(input);
    }
}

/// The top-left corner of a `view`-sized camera centred on `focus`, kept inside the map
/// (or centring the map when it is smaller than the view).
pub fn camera_origin(focus: Vec2, view: Vec2, map_size: Vec2) -> Vec2 {
    let axis = |f: f32, v: f32, m: f32| {
        if m <= v {
            (m - v) / 2.0
        } else {
            (f - v / 2.0).clamp(0.0, m - v)
        }
    };
    Vec2::new(
        axis(focus.x, view.x, map_size.x),
        axis(focus.y, view.y, map_size.y),
    )
}

/// How near the avatar (screen pixels) a held finger or pointer is taken as "here": it
/// walks nowhere, rather than jittering around the spot.
pub const POINTER_DEADZONE: f32 = 12.0;

/// The direction bits (as the arrow keys set them) that walk toward a held finger or
/// pointer `offset` away from the avatar on screen: one of eight headings, the nearest to
/// the offset's angle; none inside [`POINTER_DEADZONE`].
pub fn heading_toward(offset: Vec2) -> u8 {
    use quad_shared::movement::dir;
    if !offset.is_finite() || offset.length() < POINTER_DEADZONE {
        return 0;
    }
    // tan(22.5°): an axis counts when the offset is within 67.5° of it.
    const SLOPE: f32 = 0.414_213_56;
    let (ax, ay) = (offset.x.abs(), offset.y.abs());
    let mut bits = 0;
    if ax > ay * SLOPE {
        bits |= if offset.x > 0.0 {
            dir::RIGHT
        } else {
            dir::LEFT
        };
    }
    if ay > ax * SLOPE {
        bits |= if offset.y > 0.0 { dir::DOWN } else { dir::UP };
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_finger_walks_toward_itself_in_eight_headings() {
        use quad_shared::movement::dir;
        let cases = [
            ((100.0, 0.0), dir::RIGHT),
            ((-100.0, 5.0), dir::LEFT),
            ((0.0, -80.0), dir::UP),
            ((3.0, 80.0), dir::DOWN),
            ((60.0, 60.0), dir::RIGHT | dir::DOWN),
            ((-60.0, -50.0), dir::LEFT | dir::UP),
            // 20° below the horizontal is still a plain heading; 30° is a diagonal.
            ((94.0, 34.2), dir::RIGHT),
            ((86.6, 50.0), dir::RIGHT | dir::DOWN),
            ((5.0, 5.0), 0),
            ((f32::NAN, 40.0), 0),
        ];
        for ((x, y), bits) in cases {
            assert_eq!(heading_toward(Vec2::new(x, y)), bits, "({x}, {y})");
        }
    }
    use quad_shared::movement::dir;
    use quad_shared::protocol::{AvatarUpdate, PROTOCOL_VERSION};
    use quad_shared::protocol::{ClassState, MediaFlags, Role};

    fn game() -> Game {
        let map = Map {
            spawn: Vec2::new(300.0, 300.0),
            ..Map::open_square(40, 32)
        };
        let mut g = Game {
            map: Some(Arc::new(map)),
            ..Game::default()
        };
        g.on_message(
            ServerMsg::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                you: AvatarId(1),
                name: "Me".into(),
                map_url: String::new(),
                spawn: [300.0, 300.0],
                tick_hz: 20,
                proximity: Default::default(),
                ice_servers: Vec::new(),
                dev: false,
                role: Default::default(),
                resume: None,
                resume_grace_secs: 0,
                resumed: false,
            }),
            0.0,
        );
        g
    }

    #[test]
    fn inputs_are_batched_in_threes_and_predicted() {
        let mut g = game();
        let sent = g.update(STEP_SECONDS * 6.5, dir::RIGHT);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|i| i.steps == 3 && i.dir == dir::RIGHT));
        assert_eq!((sent[0].seq, sent[1].seq), (1, 2));
        let me = g.me.as_ref().unwrap();
        assert!((me.predicted.x - (300.0 + 6.0 * movement::SPEED * STEP_SECONDS)).abs() < 1e-3);
    }

    #[test]
    fn releasing_the_keys_flushes_a_partial_batch() {
        let mut g = game();
        assert!(g.update(STEP_SECONDS * 1.5, dir::UP).is_empty());
        let sent = g.update(STEP_SECONDS, 0);
        assert_eq!(
            sent,
            vec![Input {
                seq: 1,
                dir: dir::UP,
                steps: 1
            }]
        );
        assert!(g.update(1.0, 0).is_empty(), "standing still sends nothing");
    }

    #[test]
    fn reconciliation_replays_unacknowledged_input() {
        let mut g = game();
        let sent = g.update(STEP_SECONDS * 6.5, dir::RIGHT);
        let after_first = movement::apply(
            &g.map.as_ref().unwrap().collision,
            Vec2::new(300.0, 300.0),
            dir::RIGHT,
            3,
        );
        let predicted = g.me.as_ref().unwrap().predicted;
        // The server applied the first input exactly as predicted.
        g.on_message(
            ServerMsg::Snapshot(Snapshot {
                ack: sent[0].seq,
                you: Some(after_first.to_array()),
                ..Snapshot::default()
            }),
            50.0,
        );
        assert_eq!(
            g.me.as_ref().unwrap().predicted,
            predicted,
            "no correction needed"
        );
        // The server then refused to move at all (say, a teacher froze movement).
        g.on_message(
            ServerMsg::Snapshot(Snapshot {
                ack: sent[1].seq,
                you: Some(after_first.to_array()),
                ..Snapshot::default()
            }),
            100.0,
        );
        assert_eq!(
            g.me.as_ref().unwrap().predicted,
            after_first,
            "snapped back"
        );
    }

    #[test]
    fn others_are_interpolated_in_the_past() {
        let mut g = game();
        let id = AvatarId(7);
        let snap = |x: f32| {
            ServerMsg::Snapshot(Snapshot {
                avatars: vec![AvatarUpdate::new(id, [x, 100.0])],
                ..Snapshot::default()
            })
        };
        g.on_message(snap(100.0), 1000.0);
        g.on_message(snap(110.0), 1050.0);
        let halfway = g
            .render_position(id, 1025.0 + INTERPOLATION_DELAY_MS)
            .unwrap();
        assert!((halfway.x - 105.0).abs() < 0.01, "{halfway}");
        let held = g.render_position(id, 5000.0).unwrap();
        assert_eq!(held.x, 110.0);
        // After a long pause, movement starts from where it stood, not a slow glide.
        g.on_message(snap(120.0), 9000.0);
        let before = g
            .render_position(id, 8940.0 + INTERPOLATION_DELAY_MS)
            .unwrap();
        assert_eq!(before.x, 110.0);
    }

    #[test]
    fn gone_avatars_are_forgotten() {
        let mut g = game();
        g.on_message(
            ServerMsg::Snapshot(Snapshot {
                avatars: vec![AvatarUpdate::new(AvatarId(5), [1.0, 1.0])],
                ..Snapshot::default()
            }),
            0.0,
        );
        assert!(g.others.contains_key(&AvatarId(5)));
        g.on_message(
            ServerMsg::Snapshot(Snapshot {
                gone: vec![AvatarId(5)],
                ..Snapshot::default()
            }),
            10.0,
        );
        assert!(g.others.is_empty());
    }

    fn class(focus: bool) -> ClassState {
        ClassState {
            room: quad_shared::ids::ZoneId(2),
            teachers: vec![AvatarId(9)],
            locked: false,
            focus,
            spotlight: None,
            hands: vec![AvatarId(1)],
            blocked: vec![(
                AvatarId(1),
                MediaFlags {
                    mic: true,
                    camera: false,
                    screen: false,
                },
            )],
            blocked_for_newcomers: MediaFlags::default(),
            away: vec![],
            recording: false,
        }
    }

    #[test]
    fn focus_mode_holds_a_student_still() {
        let mut g = game();
        g.on_message(ServerMsg::Class(Some(class(true))), 0.0);
        assert!(g.in_focus());
        assert!(g.update(STEP_SECONDS * 6.5, dir::RIGHT).is_empty());
        assert_eq!(g.me.as_ref().unwrap().predicted, Vec2::new(300.0, 300.0));
        assert!(g.my_blocks().mic && !g.my_blocks().camera);
        assert!(g.hand_raised());
        assert!(!g.teaches());
        // A teacher walks on.
        g.role = Role::Teacher;
        assert!(!g.in_focus() && g.teaches());
        assert_eq!(g.update(STEP_SECONDS * 3.5, dir::RIGHT).len(), 1);
        // Walking out ends the class: nothing is blocked any more.
        g.role = Role::Student;
        g.on_message(ServerMsg::Class(None), 0.0);
        assert!(!g.in_focus() && !g.my_blocks().mic && !g.hand_raised());
    }

    #[test]
    fn attention_reports_belong_to_their_class() {
        let mut g = game();
        g.on_message(ServerMsg::Class(Some(class(true))), 0.0);
        g.class_dirty = false;
        g.on_message(
            ServerMsg::Attention {
                student: AvatarId(3),
                name: "Ada".into(),
                watching: false,
            },
            0.0,
        );
        assert!(g.class_dirty);
        assert_eq!(g.attention.len(), 1);
        assert!(g.attention[0].focus);
        // The same class changing keeps them; another room's class does not.
        g.on_message(ServerMsg::Class(Some(class(false))), 0.0);
        assert_eq!(g.attention.len(), 1);
        let mut other = class(false);
        other.room = quad_shared::ids::ZoneId(3);
        g.on_message(ServerMsg::Class(Some(other)), 0.0);
        assert!(g.attention.is_empty());
    }

    #[test]
    fn errors_after_joining_and_notices_are_told_once() {
        let mut g = Game::default();
        let error = |m: &str| {
            ServerMsg::Error(quad_shared::protocol::ErrorMsg::new(
                quad_shared::protocol::ErrorCode::BadName,
                m,
            ))
        };
        g.on_message(error("bad name"), 0.0);
        assert_eq!(g.notice, None, "the lobby shows errors before joining");
        let mut g = game();
        g.on_message(error("too fast"), 0.0);
        assert_eq!(g.notice.take().as_deref(), Some("too fast"));
        g.on_message(
            ServerMsg::Notice {
                text: "removed".into(),
            },
            0.0,
        );
        assert_eq!(g.notice.as_deref(), Some("removed"));
    }

    #[test]
    fn a_line_not_saved_is_marked_and_told() {
        let mut g = game();
        g.on_message(ServerMsg::ChatNotSaved { id: 9 }, 0.0);
        assert!(g.chat.is_unsaved(9));
        assert_eq!(g.notice.as_deref(), Some(crate::chat::NOT_SAVED_NOTICE));
    }

    #[test]
    fn a_lost_connection_forgets_the_space_but_keeps_the_chat() {
        let mut g = game();
        g.on_message(
            ServerMsg::PeopleJoined {
                people: vec![Person {
                    id: AvatarId(2),
                    name: "Bo".into(),
                    role: Role::Guest,
                }],
            },
            0.0,
        );
        g.on_message(
            ServerMsg::Reconnecting {
                id: AvatarId(2),
                reconnecting: true,
            },
            0.0,
        );
        assert!(g.reconnecting.contains(&AvatarId(2)));
        g.on_message(
            ServerMsg::Chat(quad_shared::protocol::ChatLine {
                id: 5,
                at_ms: 0,
                scope: quad_shared::protocol::ChatScope::Space,
                from: Some(AvatarId(2)),
                from_name: "Bo".into(),
                from_role: Role::Guest,
                to_name: None,
                text: "hi".into(),
            }),
            0.0,
        );
        g.connection_lost();
        assert!(g.me.is_none() && g.people.is_empty() && g.reconnecting.is_empty());
        assert_eq!(g.chat.len(), 1, "the chat stays");
        assert!(g.map.is_some(), "the map stays");
        // Back: history repeats the line; it is not shown twice.
        g.on_message(
            ServerMsg::ChatHistory {
                lines: g.chat.lines().cloned().collect(),
            },
            0.0,
        );
        assert_eq!(g.chat.len(), 1);
    }

    #[test]
    fn the_camera_stays_inside_the_map() {
        let map = Vec2::new(1000.0, 800.0);
        let view = Vec2::new(400.0, 300.0);
        assert_eq!(
            camera_origin(Vec2::new(500.0, 400.0), view, map),
            Vec2::new(300.0, 250.0)
        );
        assert_eq!(camera_origin(Vec2::new(10.0, 10.0), view, map), Vec2::ZERO);
        assert_eq!(
            camera_origin(Vec2::new(990.0, 790.0), view, map),
            Vec2::new(600.0, 500.0)
        );
        let big = Vec2::new(2000.0, 2000.0);
        assert_eq!(
            camera_origin(Vec2::ZERO, big, map),
            Vec2::new(-500.0, -600.0)
        );
    }
}
