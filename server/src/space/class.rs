//! Classes: what a teacher has set in a room (lock, focus mode, spotlight, devices turned
//! off, who was sent out) and what the room's people do (raised hands, attention).
//!
//! A class exists while anyone stands in its classroom zone; it ends, and forgets its
//! settings, when the last person walks out. Membership follows the zone at once (the room's
//! media may linger a moment for make-before-break; the class does not).
//!
//! Every rule is checked here, on the server: only a teacher in the room may act; a muted
//! student's packets are dropped by the SFU (this module queues the restrictions for it); a
//! student in focus mode cannot walk; a locked room, or one a student was sent out of,
//! cannot be walked into (the movement system asks [`Classes::may_enter`]), nor can a
//! classroom that holds its `capacity` of students.
//!
//! What a teacher did to a student (devices turned off, sent out) follows the person, not
//! the session: it is kept by the student's identity ([`UserKey`]: the join link's subject,
//! or a guest's device key), so reloading the page does not undo it.
//!
//! A class's state goes to everyone in the room after every change, but at most once a
//! tick, with the latest state ([`Classes::announce`] marks a room, [`Classes::send_announced`]
//! sends): a student toggling its hand as fast as it can does not make the whole room
//! receive a frame per toggle.

use super::resources::{Outbox, Recipient};
use crate::auth::UserKey;
use crate::records::register::Register;
use crate::store::AuditRecord;
use crate::store::now_ms;
use bevy_ecs::prelude::*;
use quad_shared::protocol::{
    ClassState, Device, ErrorCode, ErrorMsg, MediaFlags, Role, ServerMsg, TeacherAction, Who,
};
use quad_shared::{AvatarId, ZoneId};
use rustc_hash::{FxHashMap, FxHashSet};

/// One room's class.
#[derive(Debug, Default)]
pub struct Class {
    pub name: String,
    /// Everyone in the room, in the order they walked in.
    pub members: Vec<AvatarId>,
    pub teachers: Vec<AvatarId>,
    /// Who each member is (whom the teacher's settings follow).
    pub people: FxHashMap<AvatarId, UserKey>,
    /// Students the room holds at most (teachers not counted); 0: no limit.
    pub capacity: u32,
    pub locked: bool,
    pub focus: bool,
    pub spotlight: Option<AvatarId>,
    pub hands: Vec<AvatarId>,
    /// Devices off by the teacher, per person; kept when the student steps out and back,
    /// or reloads.
    pub blocked: FxHashMap<UserKey, MediaFlags>,
    pub newcomers: MediaFlags,
    pub away: Vec<AvatarId>,
    /// People the teacher sent out: they cannot walk back in while the class goes on.
    pub barred: FxHashSet<UserKey>,
    /// The class is being recorded (its recording's id, once the SFU started it).
    pub recording: Option<String>,
    /// Who attended this class session and how they took part.
    pub register: Register,
}

impl Class {
    fn is_student(&self, id: AvatarId) -> bool {
        self.members.contains(&id) && !self.teachers.contains(&id)
    }

    fn students(&self) -> usize {
        self.members.len() - self.teachers.len()
    }

    fn is_full(&self) -> bool {
        self.capacity > 0 && self.students() >= self.capacity as usize
    }

    fn state(&self, room: ZoneId) -> ClassState {
        let mut blocked: Vec<(AvatarId, MediaFlags)> = self
            .members
            .iter()
            .map(|id| (*id, self.blocked_of(*id)))
            .filter(|(_, flags)| *flags != MediaFlags::default())
            .collect();
        blocked.sort_by_key(|(id, _)| *id);
        ClassState {
            room,
            teachers: self.teachers.clone(),
            locked: self.locked,
            focus: self.focus,
            spotlight: self.spotlight,
            hands: self.hands.clone(),
            blocked,
            blocked_for_newcomers: self.newcomers,
            away: self.away.clone(),
            recording: self.recording.is_some(),
        }
    }

    fn blocked_of(&self, id: AvatarId) -> MediaFlags {
        self.people
            .get(&id)
            .and_then(|user| self.blocked.get(user))
            .copied()
            .unwrap_or_default()
    }

    /// The identity of member `id` (every member has one).
    fn user_of(&self, id: AvatarId) -> Result<UserKey, ErrorMsg> {
        self.people
            .get(&id)
            .cloned()
            .ok_or_else(|| forbidden(format!("{id} is not in {}", self.name)))
    }
}

/// Someone a teacher action acts on, for the caller to carry out (moving an avatar is the
/// world's business, not this module's).
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Send this student out of the room.
    SendOut {
        student: AvatarId,
        room: ZoneId,
    },
}

/// What the SFU must do about a class's recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordingChange {
    /// A teacher started recording.
    Start {
        room: ZoneId,
        room_name: String,
        by: AvatarId,
        by_user: UserKey,
        by_name: String,
        session: String,
    },
    /// A teacher stopped it, the last teacher walked out, or the class ended.
    Stop { room: ZoneId },
    /// Who is spotlit (the recording's picture follows it).
    Spotlight { room: ZoneId, who: Option<AvatarId> },
}

/// Devices the SFU must drop for a member (all false: none).
pub type Restriction = (AvatarId, MediaFlags);
/// Someone who walked into a class, with the room's name.
pub type Entered = (AvatarId, String);

/// All classes of a space, and the changes other parts must act on.
#[derive(Resource, Debug, Default)]
pub struct Classes {
    pub rooms: FxHashMap<ZoneId, Class>,
    pub class_of: FxHashMap<AvatarId, ZoneId>,
    /// Devices the SFU must drop, per member, as they change (all off: `default`).
    pub restrictions: Vec<Restriction>,
    /// People who walked into a class since last taken (their room chat history is due).
    pub entered: Vec<Entered>,
    /// Recordings to start and stop, as they change.
    pub recording_changes: Vec<RecordingChange>,
    /// When each avatar was last told a move was refused (tick), so it is told once a while.
    pub refusals_told: FxHashMap<AvatarId, u32>,
    /// Rooms whose state changed since it was last sent.
    announced: Vec<ZoneId>,
    /// Registers of classes that ended, for storage.
    pub ended: Vec<Register>,
}

fn forbidden(message: impl Into<String>) -> ErrorMsg {
    ErrorMsg::new(ErrorCode::Forbidden, message)
}

impl Classes {
    /// Whether any class restricts movement now (the movement system's fast path).
    pub fn restricts_movement(&self) -> bool {
        self.rooms
            .values()
            .any(|c| c.locked || c.focus || !c.barred.is_empty() || c.is_full())
    }

    /// Whether someone (`role`, `user`) may walk into `room`: not if it is locked or full
    /// (but for teachers), or the person was sent out of it.
    pub fn may_enter(&self, role: Role, user: &UserKey, room: ZoneId) -> Result<(), ErrorMsg> {
        let Some(class) = self.rooms.get(&room) else {
            return Ok(());
        };
        if role.is_teacher() {
            return Ok(());
        }
        if class.barred.contains(user) {
            return Err(forbidden(format!(
                "the teacher sent you out of {}; you cannot walk back in during this class",
                class.name
            )));
        }
        if class.locked {
            return Err(forbidden(format!(
                "{} is locked by the teacher",
                class.name
            )));
        }
        if class.is_full() {
            return Err(forbidden(format!(
                "{} is full: it holds {} students",
                class.name, class.capacity
            )));
        }
        Ok(())
    }

    /// Whether `id` (with `role`) may walk at all: students in focus mode may not.
    pub fn may_walk(&self, id: AvatarId, role: Role) -> Result<(), ErrorMsg> {
        if role.is_teacher() {
            return Ok(());
        }
        match self.class_of.get(&id).and_then(|r| self.rooms.get(r)) {
            Some(class) if class.focus => Err(forbidden(format!(
                "focus mode is on in {}: you can walk again when the teacher ends it",
                class.name
            ))),
            _ => Ok(()),
        }
    }

    /// The devices the teacher turned off for `id`, if it is in a class.
    pub fn blocked_of(&self, id: AvatarId) -> MediaFlags {
        self.class_of
            .get(&id)
            .and_then(|r| self.rooms.get(r))
            .map_or_else(MediaFlags::default, |c| c.blocked_of(id))
    }

    /// The members of `id`'s class (empty when not in one).
    pub fn classmates(&self, id: AvatarId) -> (&[AvatarId], Option<&str>) {
        match self.class_of.get(&id).and_then(|r| self.rooms.get(r)) {
            Some(class) => (&class.members, Some(class.name.as_str())),
            None => (&[], None),
        }
    }

    /// `id` (with `role`, who is `user`, named `person`) walked into `room` (named `name`,
    /// holding `capacity` students).
    pub fn enter(
        &mut self,
        outbox: &mut Outbox,
        (id, role, user, person): (AvatarId, Role, &UserKey, &str),
        room: ZoneId,
        (name, capacity): (&str, u32),
    ) {
        if self.class_of.get(&id) == Some(&room) {
            return;
        }
        self.leave(outbox, id);
        let now = now_ms();
        let class = self.rooms.entry(room).or_insert_with(|| Class {
            name: name.to_owned(),
            capacity,
            register: Register::new(name, now),
            ..Class::default()
        });
        class.register.enter(user, person, role, now);
        class.members.push(id);
        class.people.insert(id, user.clone());
        if role.is_teacher() {
            class.teachers.push(id);
        } else {
            let newcomers = class.newcomers;
            let flags = *class.blocked.entry(user.clone()).or_insert(newcomers);
            if flags != MediaFlags::default() {
                self.restrictions.push((id, flags));
            }
        }
        self.class_of.insert(id, room);
        self.entered.push((id, name.to_owned()));
        self.announce(room);
    }

    /// `id`'s session was taken over by a new connection: it is sent its class again, and
    /// the room's chat history (its client merges lines it already has).
    pub fn resumed(&mut self, id: AvatarId) {
        let Some(&room) = self.class_of.get(&id) else {
            return;
        };
        if let Some(name) = self.rooms.get(&room).map(|c| c.name.clone()) {
            self.entered.push((id, name));
        }
        self.announce(room);
    }

    /// `id` walked out of its class (or left the space).
    pub fn leave(&mut self, outbox: &mut Outbox, id: AvatarId) {
        // Also for an avatar refused at every door, which leaves the space from no class.
        self.refusals_told.remove(&id);
        let Some(room) = self.class_of.remove(&id) else {
            return;
        };
        let Some(class) = self.rooms.get_mut(&room) else {
            return;
        };
        let blocked = class.blocked_of(id);
        let now = now_ms();
        if let Some(user) = class.people.get(&id) {
            class.register.leave(user, now);
        }
        class.members.retain(|m| *m != id);
        if let Some(user) = class.people.remove(&id)
            && class.blocked.get(&user) == Some(&class.newcomers)
        {
            // Walking back in gives the same devices: nothing to remember. Kept are only
            // those the teacher set apart from everyone's, so a stream of newcomers (new
            // guests every few seconds) grows nothing.
            class.blocked.remove(&user);
        }
        class.teachers.retain(|m| *m != id);
        class.hands.retain(|m| *m != id);
        class.away.retain(|m| *m != id);
        if class.spotlight == Some(id) {
            class.spotlight = None;
            self.recording_changes
                .push(RecordingChange::Spotlight { room, who: None });
        }
        if class.recording.is_some() && (class.teachers.is_empty() || class.members.is_empty()) {
            // No one is left who could stop it.
            class.recording = None;
            self.recording_changes.push(RecordingChange::Stop { room });
        }
        if blocked != MediaFlags::default() {
            // Out of the room its media is not the class's business; back in, it is again.
            self.restrictions.push((id, MediaFlags::default()));
        }
        outbox.push(Recipient::One(id), &ServerMsg::Class(None));
        if class.members.is_empty() {
            if let Some(mut class) = self.rooms.remove(&room) {
                class.register.end(now);
                self.ended.push(class.register);
            }
            return;
        }
        if class.teachers.is_empty() && class.focus {
            // Nobody could end it: students would be stuck.
            class.focus = false;
        }
        self.announce(room);
    }

    /// `id` sent a chat line: counted in its class's register, if it is in one.
    pub fn chatted(&mut self, id: AvatarId) {
        if let Some(class) = self.class_of.get(&id).and_then(|r| self.rooms.get_mut(r))
            && let Some(user) = class.people.get(&id)
        {
            class.register.chatted(user);
        }
    }

    /// Members of `room` spoke for these many more milliseconds (from the SFU).
    pub fn talked(&mut self, room: ZoneId, talk: &[(AvatarId, u32)]) {
        let Some(class) = self.rooms.get_mut(&room) else {
            return;
        };
        for (id, ms) in talk {
            if let Some(user) = class.people.get(id) {
                class.register.talked(user, u64::from(*ms));
            }
        }
    }

    /// Each class's register so far, to its teachers in the room.
    pub fn send_reports(&self, outbox: &mut Outbox, now: u64) {
        for class in self.rooms.values().filter(|c| !c.teachers.is_empty()) {
            let msg = ServerMsg::ClassReport(class.register.report(now));
            for teacher in &class.teachers {
                outbox.push(Recipient::One(*teacher), &msg);
            }
        }
    }

    /// The registers of classes that ended or that someone came into or went out of, and
    /// with `changed`, those that changed at all since last taken: for storage.
    pub fn take_registers(&mut self, changed: bool) -> Vec<Register> {
        let mut out = std::mem::take(&mut self.ended);
        for class in self.rooms.values_mut() {
            let register = &mut class.register;
            if register.moved || (changed && register.dirty) {
                register.dirty = false;
                register.moved = false;
                out.push(register.clone());
            }
        }
        out
    }

    /// Marks `room`'s class state to be sent to everyone in it (by [`Self::send_announced`],
    /// once a tick).
    pub fn announce(&mut self, room: ZoneId) {
        if !self.announced.contains(&room) {
            self.announced.push(room);
        }
    }

    /// Sends each room marked by [`Self::announce`] its current state, once.
    pub fn send_announced(&mut self, outbox: &mut Outbox) {
        for room in std::mem::take(&mut self.announced) {
            let Some(class) = self.rooms.get(&room) else {
                continue;
            };
            let msg = ServerMsg::Class(Some(class.state(room)));
            match quad_shared::codec::encode(&msg) {
                Ok(frame) => {
                    let frame = bytes::Bytes::from(frame);
                    for member in &class.members {
                        outbox.frames.push((Recipient::One(*member), frame.clone()));
                    }
                }
                Err(e) => tracing::error!("cannot encode a class state: {e}"),
            }
        }
    }

    /// A student raised or lowered its hand.
    pub fn hand(&mut self, id: AvatarId, raised: bool) -> Result<(), ErrorMsg> {
        let room = self.student_room(id, "raise a hand")?;
        let class = self.rooms.get_mut(&room).ok_or_else(not_in_room)?;
        let had = class.hands.contains(&id);
        if raised && !had {
            class.hands.push(id);
            if let Some(user) = class.people.get(&id) {
                class.register.hand_raised(user);
            }
        } else if !raised && had {
            class.hands.retain(|m| *m != id);
        } else {
            return Ok(());
        }
        self.announce(room);
        Ok(())
    }

    /// A student started or stopped watching; its teachers are told.
    pub fn attention(
        &mut self,
        outbox: &mut Outbox,
        id: AvatarId,
        name: &str,
        watching: bool,
    ) -> Result<(), ErrorMsg> {
        let room = self.student_room(id, "report attention")?;
        let class = self.rooms.get_mut(&room).ok_or_else(not_in_room)?;
        if class.teachers.contains(&id) {
            // Teachers' own attention is nobody's concern.
            return Ok(());
        }
        let away = class.away.contains(&id);
        if watching != away {
            return Ok(());
        }
        if watching {
            class.away.retain(|m| *m != id);
        } else {
            class.away.push(id);
        }
        if let Some(user) = class.people.get(&id) {
            class.register.attention(user, watching, now_ms());
        }
        let event = ServerMsg::Attention {
            student: id,
            name: name.to_owned(),
            watching,
        };
        for teacher in &class.teachers {
            outbox.push(Recipient::One(*teacher), &event);
        }
        self.announce(room);
        Ok(())
    }

    fn student_room(&self, id: AvatarId, what: &str) -> Result<ZoneId, ErrorMsg> {
        let room = *self.class_of.get(&id).ok_or_else(|| {
            ErrorMsg::new(
                ErrorCode::WrongState,
                format!("you can {what} only in a room"),
            )
        })?;
        Ok(room)
    }

    /// A teacher's action: checked, applied, announced. `names` finds display names and
    /// roles; the audit record is returned for storage, with what the caller must carry out.
    pub fn teacher(
        &mut self,
        actor: (AvatarId, Role, &UserKey, &str),
        action: TeacherAction,
        name_of: impl Fn(AvatarId) -> Option<String>,
        at_ms: u64,
    ) -> Result<(Effect, AuditRecord), ErrorMsg> {
        let (id, role, user, actor_name) = actor;
        if !role.is_teacher() {
            return Err(forbidden(format!(
                "only a teacher can {}; you joined as a {}",
                describe(&action),
                role.as_str()
            )));
        }
        let room = *self.class_of.get(&id).ok_or_else(|| {
            ErrorMsg::new(
                ErrorCode::WrongState,
                "teacher controls work in a room: walk into one first",
            )
        })?;
        let class = self.rooms.get_mut(&room).ok_or_else(not_in_room)?;
        let student = |class: &Class, s: AvatarId| -> Result<AvatarId, ErrorMsg> {
            if class.is_student(s) {
                Ok(s)
            } else {
                Err(forbidden(format!("{s} is not a student in {}", class.name)))
            }
        };
        let mut effect = Effect::None;
        let mut target = None;
        match action {
            TeacherAction::Allow {
                who,
                device,
                allowed,
            } => {
                let targets: Vec<AvatarId> = match who {
                    Who::One(s) => {
                        target = Some(student(class, s)?);
                        vec![s]
                    }
                    Who::Students => {
                        set_device(&mut class.newcomers, device, !allowed);
                        class
                            .members
                            .iter()
                            .copied()
                            .filter(|m| !class.teachers.contains(m))
                            .collect()
                    }
                };
                for s in targets {
                    let flags = class.blocked.entry(class.user_of(s)?).or_default();
                    set_device(flags, device, !allowed);
                    self.restrictions.push((s, *flags));
                }
            }
            TeacherAction::Spotlight(who) => {
                if let Some(s) = who
                    && !class.members.contains(&s)
                {
                    return Err(forbidden(format!("{s} is not in {}", class.name)));
                }
                target = who;
                class.spotlight = who;
                self.recording_changes
                    .push(RecordingChange::Spotlight { room, who });
            }
            TeacherAction::Record(true) => {
                if class.recording.is_some() {
                    return Err(ErrorMsg::new(
                        ErrorCode::WrongState,
                        format!("{} is already being recorded", class.name),
                    ));
                }
                // The SFU names it; until then it is recording with no id yet.
                class.recording = Some(String::new());
                self.recording_changes.push(RecordingChange::Start {
                    room,
                    room_name: class.name.clone(),
                    by: id,
                    by_user: user.clone(),
                    by_name: actor_name.to_owned(),
                    session: class.register.id.clone(),
                });
            }
            TeacherAction::Record(false) => {
                if class.recording.take().is_none() {
                    return Err(ErrorMsg::new(
                        ErrorCode::WrongState,
                        format!("{} is not being recorded", class.name),
                    ));
                }
                self.recording_changes.push(RecordingChange::Stop { room });
            }
            TeacherAction::Remove(s) => {
                target = Some(student(class, s)?);
                class.barred.insert(class.user_of(s)?);
                effect = Effect::SendOut { student: s, room };
            }
            TeacherAction::Lock(locked) => class.locked = locked,
            TeacherAction::Focus(focus) => class.focus = focus,
            TeacherAction::LowerHand(who) => match who {
                Some(s) => {
                    target = Some(s);
                    class.hands.retain(|m| *m != s);
                }
                None => class.hands.clear(),
            },
        }
        let record = AuditRecord {
            at_ms,
            room: class.name.clone(),
            actor_user: user.0.clone(),
            actor_name: actor_name.to_owned(),
            action: action.kind().to_owned(),
            target_name: target.and_then(&name_of),
            detail: format!("{action:?}"),
        };
        self.announce(room);
        Ok((effect, record))
    }
}

fn not_in_room() -> ErrorMsg {
    ErrorMsg::new(ErrorCode::WrongState, "you are not in a room")
}

fn set_device(flags: &mut MediaFlags, device: Device, off: bool) {
    match device {
        Device::Mic => flags.mic = off,
        Device::Camera => flags.camera = off,
        Device::Screen => flags.screen = off,
    }
}

/// What an action does, for refusals.
fn describe(action: &TeacherAction) -> &'static str {
    match action {
        TeacherAction::Allow {
            device: Device::Mic,
            allowed: false,
            ..
        } => "mute people",
        TeacherAction::Allow {
            device: Device::Mic,
            ..
        } => "unmute people",
        TeacherAction::Allow {
            device: Device::Camera,
            ..
        } => "turn cameras off or on",
        TeacherAction::Allow { .. } => "allow or stop screen sharing",
        TeacherAction::Spotlight(_) => "spotlight someone",
        TeacherAction::Remove(_) => "send someone out of a room",
        TeacherAction::Lock(_) => "lock a room",
        TeacherAction::Focus(_) => "turn focus mode on or off",
        TeacherAction::LowerHand(_) => "lower someone's hand",
        TeacherAction::Record(_) => "record a class",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: ZoneId = ZoneId(2);
    const T: AvatarId = AvatarId(1);
    const S: AvatarId = AvatarId(2);
    const S2: AvatarId = AvatarId(3);

    /// Who avatar `id` is: one person per avatar, unless a test says otherwise.
    fn key(id: AvatarId) -> UserKey {
        UserKey(format!("link:person{}", id.0))
    }

    /// `id`, as the person `key(id)`, walks into Room 1.
    fn walk_in(classes: &mut Classes, outbox: &mut Outbox, id: AvatarId, role: Role) {
        classes.enter(outbox, (id, role, &key(id), "someone"), ROOM, ("Room 1", 0));
    }

    fn class_with_teacher_and_students() -> (Classes, Outbox) {
        let mut classes = Classes::default();
        let mut outbox = Outbox::default();
        walk_in(&mut classes, &mut outbox, T, Role::Teacher);
        walk_in(&mut classes, &mut outbox, S, Role::Student);
        walk_in(&mut classes, &mut outbox, S2, Role::Guest);
        (classes, outbox)
    }

    fn act(
        classes: &mut Classes,
        who: AvatarId,
        role: Role,
        action: TeacherAction,
    ) -> Result<Effect, ErrorMsg> {
        let user = UserKey("u".into());
        classes
            .teacher((who, role, &user, "X"), action, |_| None, 0)
            .map(|(e, _)| e)
    }

    /// A stream of people walking in and out, and of avatars refused at the door, leaves
    /// nothing behind; what the teacher set for one person is kept.
    #[test]
    fn people_coming_and_going_leave_nothing_behind() {
        let (mut classes, mut outbox) = class_with_teacher_and_students();
        act(
            &mut classes,
            T,
            Role::Teacher,
            TeacherAction::Allow {
                who: Who::One(S),
                device: Device::Mic,
                allowed: false,
            },
        )
        .expect("allowed");
        for i in 100..1_100 {
            let guest = AvatarId(i);
            walk_in(&mut classes, &mut outbox, guest, Role::Guest);
            classes.leave(&mut outbox, guest);
        }
        for i in 2_000..3_000 {
            // Told its move was refused; it never got in, and leaves the space.
            classes.refusals_told.insert(AvatarId(i), 1);
            classes.leave(&mut outbox, AvatarId(i));
        }
        assert!(classes.refusals_told.is_empty());
        classes.leave(&mut outbox, S);
        classes.leave(&mut outbox, S2);
        let class = &classes.rooms[&ROOM];
        assert_eq!(
            class.blocked.keys().collect::<Vec<_>>(),
            vec![&key(S)],
            "only the muted student is remembered"
        );
        assert_eq!(class.people.len(), 1, "the teacher");
        // Back in, still muted.
        walk_in(&mut classes, &mut outbox, S, Role::Student);
        assert!(classes.blocked_of(S).mic);
    }

    #[test]
    fn students_cannot_act_as_teachers() {
        let (mut classes, _) = class_with_teacher_and_students();
        let err =
            act(&mut classes, S, Role::Student, TeacherAction::Lock(true)).expect_err("refused");
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert!(!classes.rooms[&ROOM].locked);
    }

    #[test]
    fn muting_everyone_restricts_students_and_newcomers_but_not_teachers() {
        let (mut classes, mut outbox) = class_with_teacher_and_students();
        classes.restrictions.clear();
        act(
            &mut classes,
            T,
            Role::Teacher,
            TeacherAction::Allow {
                who: Who::Students,
                device: Device::Mic,
                allowed: false,
            },
        )
        .expect("allowed");
        let muted: Vec<AvatarId> = classes.restrictions.iter().map(|(id, _)| *id).collect();
        assert_eq!(muted, vec![S, S2]);
        assert!(classes.blocked_of(S).mic && !classes.blocked_of(T).mic);
        let late = AvatarId(9);
        walk_in(&mut classes, &mut outbox, late, Role::Guest);
        assert!(classes.blocked_of(late).mic, "newcomers are muted too");
        // Walking out and back in does not unmute.
        classes.leave(&mut outbox, S);
        assert!(
            !classes.blocked_of(S).mic,
            "outside the room the class does not apply"
        );
        walk_in(&mut classes, &mut outbox, S, Role::Student);
        assert!(classes.blocked_of(S).mic);
    }

    #[test]
    fn locks_and_removals_keep_students_out_but_not_teachers() {
        let (mut classes, _) = class_with_teacher_and_students();
        act(&mut classes, T, Role::Teacher, TeacherAction::Lock(true)).expect("allowed");
        let newcomer = AvatarId(7);
        assert!(
            classes
                .may_enter(Role::Student, &key(newcomer), ROOM)
                .is_err()
        );
        assert!(
            classes
                .may_enter(Role::Teacher, &key(AvatarId(8)), ROOM)
                .is_ok()
        );
        act(&mut classes, T, Role::Teacher, TeacherAction::Lock(false)).expect("allowed");
        assert!(
            classes
                .may_enter(Role::Student, &key(newcomer), ROOM)
                .is_ok()
        );
        let effect =
            act(&mut classes, T, Role::Teacher, TeacherAction::Remove(S)).expect("allowed");
        assert_eq!(
            effect,
            Effect::SendOut {
                student: S,
                room: ROOM
            }
        );
        assert!(classes.may_enter(Role::Student, &key(S), ROOM).is_err());
        assert!(
            act(&mut classes, T, Role::Teacher, TeacherAction::Remove(T)).is_err(),
            "teachers cannot be removed"
        );
    }

    #[test]
    fn focus_stops_students_and_ends_with_the_last_teacher() {
        let (mut classes, mut outbox) = class_with_teacher_and_students();
        act(&mut classes, T, Role::Teacher, TeacherAction::Focus(true)).expect("allowed");
        assert!(classes.may_walk(S, Role::Student).is_err());
        assert!(classes.may_walk(T, Role::Teacher).is_ok());
        assert!(classes.restricts_movement());
        classes.leave(&mut outbox, T);
        assert!(classes.may_walk(S, Role::Student).is_ok());
    }

    #[test]
    fn hands_keep_their_order_and_the_teacher_lowers_them() {
        let (mut classes, _) = class_with_teacher_and_students();
        classes.hand(S2, true).expect("in a room");
        classes.hand(S, true).expect("in a room");
        assert_eq!(classes.rooms[&ROOM].hands, vec![S2, S]);
        act(
            &mut classes,
            T,
            Role::Teacher,
            TeacherAction::LowerHand(Some(S2)),
        )
        .expect("allowed");
        assert_eq!(classes.rooms[&ROOM].hands, vec![S]);
        assert!(classes.hand(AvatarId(50), true).is_err());
    }

    #[test]
    fn many_changes_in_a_tick_send_the_room_one_state() {
        let (mut classes, mut outbox) = class_with_teacher_and_students();
        classes.send_announced(&mut outbox);
        outbox.frames.clear();
        for i in 0..50 {
            classes.hand(S, i % 2 == 0).expect("in a room");
        }
        assert!(
            outbox.frames.is_empty(),
            "nothing is sent before the tick ends"
        );
        classes.send_announced(&mut outbox);
        // One frame per member, with the latest state: the 50th toggle lowered the hand.
        assert_eq!(outbox.frames.len(), 3);
        let frame = &outbox.frames[0].1;
        let msg: ServerMsg = quad_shared::codec::decode(frame).expect("a class state");
        let ServerMsg::Class(Some(state)) = msg else {
            panic!("not a class state: {msg:?}");
        };
        assert!(state.hands.is_empty());
        outbox.frames.clear();
        classes.send_announced(&mut outbox);
        assert!(outbox.frames.is_empty(), "sent once");
    }

    #[test]
    fn the_class_ends_with_its_last_member() {
        let (mut classes, mut outbox) = class_with_teacher_and_students();
        act(&mut classes, T, Role::Teacher, TeacherAction::Lock(true)).expect("allowed");
        for id in [T, S, S2] {
            classes.leave(&mut outbox, id);
        }
        assert!(classes.rooms.is_empty());
        assert!(
            classes
                .may_enter(Role::Student, &key(AvatarId(7)), ROOM)
                .is_ok()
        );
    }

    #[test]
    fn a_mute_and_a_removal_follow_the_person_across_a_reload() {
        let (mut classes, mut outbox) = class_with_teacher_and_students();
        let teacher = (T, Role::Teacher, &key(T), "Ms Ada");
        let mute = TeacherAction::Allow {
            who: Who::One(S),
            device: Device::Mic,
            allowed: false,
        };
        classes.teacher(teacher, mute, |_| None, 0).expect("mute");
        // S reloads: its session ends and the same person comes back as a new avatar.
        classes.leave(&mut outbox, S);
        let again = AvatarId(20);
        classes.enter(
            &mut outbox,
            (again, Role::Student, &key(S), "S"),
            ROOM,
            ("Room 1", 0),
        );
        assert!(
            classes.blocked_of(again).mic,
            "the reload unmuted the student"
        );
        // Someone else is not muted by it.
        let other = AvatarId(21);
        walk_in(&mut classes, &mut outbox, other, Role::Student);
        assert!(!classes.blocked_of(other).mic);
        // Sent out, the person cannot come back under a new avatar either.
        classes
            .teacher(teacher, TeacherAction::Remove(again), |_| None, 0)
            .expect("remove");
        classes.leave(&mut outbox, again);
        assert!(classes.may_enter(Role::Student, &key(S), ROOM).is_err());
        assert!(
            classes
                .may_enter(Role::Student, &key(AvatarId(22)), ROOM)
                .is_ok()
        );
    }

    #[test]
    fn a_full_classroom_keeps_students_out_but_not_teachers() {
        let mut classes = Classes::default();
        let mut outbox = Outbox::default();
        classes.enter(
            &mut outbox,
            (T, Role::Teacher, &key(T), "T"),
            ROOM,
            ("Room 1", 2),
        );
        classes.enter(
            &mut outbox,
            (S, Role::Student, &key(S), "someone"),
            ROOM,
            ("Room 1", 2),
        );
        assert!(
            !classes.restricts_movement() || classes.may_enter(Role::Guest, &key(S2), ROOM).is_ok()
        );
        classes.enter(
            &mut outbox,
            (S2, Role::Guest, &key(S2), "someone"),
            ROOM,
            ("Room 1", 2),
        );
        assert!(classes.restricts_movement());
        let err = classes
            .may_enter(Role::Student, &key(AvatarId(9)), ROOM)
            .unwrap_err();
        assert!(err.message.contains("full"), "{}", err.message);
        assert!(
            classes
                .may_enter(Role::Teacher, &key(AvatarId(10)), ROOM)
                .is_ok()
        );
        classes.leave(&mut outbox, S);
        assert!(
            classes
                .may_enter(Role::Student, &key(AvatarId(9)), ROOM)
                .is_ok()
        );
    }
}
