//! The class register: who attended one class session (a class, from the first person
//! walking into its room to the last walking out) and how each took part. Per person (by
//! identity, so a reload continues the same row): when they came and went, how long they
//! spoke (from the audio levels the SFU reads), how often they raised a hand, how many
//! chat lines they sent, and how often and how long they stopped watching (left full
//! screen in focus mode, or hid the tab).
//!
//! Only the class's teachers see it: live, as [`ClassReport`]s, and after class as CSV
//! from the store. It is a plain state machine: every call takes the time.

use crate::auth::UserKey;
use quad_shared::protocol::{ClassReport, ReportRow, Role};

/// People one register keeps at most (a class bigger than any room: the rest are counted
/// in `left_out`).
pub const MAX_PEOPLE: usize = 1_000;
/// Comings and goings kept per person (a person who comes and goes more has the rest
/// folded into their last interval).
pub const MAX_INTERVALS: usize = 100;

/// One person's attendance and engagement in a class session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attendee {
    pub user: UserKey,
    pub name: String,
    pub role: Role,
    /// When they came in and went out (ms since the Unix epoch); `None`: still in.
    pub intervals: Vec<(u64, Option<u64>)>,
    pub talk_ms: u64,
    pub hands: u32,
    pub chat_lines: u32,
    /// Times they stopped watching, and for how long in all.
    pub away_count: u32,
    pub away_ms: u64,
    /// Not watching since then (ms since the Unix epoch).
    pub away_since: Option<u64>,
}

impl Attendee {
    /// Time in the room up to `now`.
    pub fn present_ms(&self, now: u64) -> u64 {
        self.intervals
            .iter()
            .map(|(from, to)| to.unwrap_or(now).saturating_sub(*from))
            .sum()
    }

    pub fn is_present(&self) -> bool {
        self.intervals.last().is_some_and(|(_, to)| to.is_none())
    }

    fn away_ms_at(&self, now: u64) -> u64 {
        self.away_ms + self.away_since.map_or(0, |since| now.saturating_sub(since))
    }
}

/// One class session's register.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Register {
    /// The session's id (the room and when it started, and a random part).
    pub id: String,
    pub room: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub people: Vec<Attendee>,
    /// People not kept for [`MAX_PEOPLE`].
    pub left_out: u32,
    /// Changed since last taken for storage.
    pub dirty: bool,
    /// Someone came or went since last taken for storage (who may see the class's
    /// records follows from it, so it is stored soon).
    pub moved: bool,
}

impl Register {
    pub fn new(room: &str, now: u64) -> Register {
        Register {
            id: crate::media::recording::new_id(now),
            room: room.to_owned(),
            started_ms: now,
            ended_ms: None,
            people: Vec::new(),
            left_out: 0,
            dirty: true,
            moved: true,
        }
    }

    fn person(&mut self, user: &UserKey) -> Option<&mut Attendee> {
        self.people.iter_mut().find(|p| &p.user == user)
    }

    /// `user` walked in.
    pub fn enter(&mut self, user: &UserKey, name: &str, role: Role, now: u64) {
        self.dirty = true;
        self.moved = true;
        if let Some(p) = self.person(user) {
            p.name = name.to_owned();
            if !p.is_present() {
                if p.intervals.len() >= MAX_INTERVALS {
                    // Folded into the last one: the gap counts as present.
                    if let Some(last) = p.intervals.last_mut() {
                        last.1 = None;
                    }
                } else {
                    p.intervals.push((now, None));
                }
            }
            return;
        }
        if self.people.len() >= MAX_PEOPLE {
            self.left_out += 1;
            return;
        }
        self.people.push(Attendee {
            user: user.clone(),
            name: name.to_owned(),
            role,
            intervals: vec![(now, None)],
            talk_ms: 0,
            hands: 0,
            chat_lines: 0,
            away_count: 0,
            away_ms: 0,
            away_since: None,
        });
    }

    /// `user` walked out (or left the space).
    pub fn leave(&mut self, user: &UserKey, now: u64) {
        if let Some(p) = self.person(user) {
            if let Some(last) = p.intervals.last_mut()
                && last.1.is_none()
            {
                last.1 = Some(now);
            }
            if let Some(since) = p.away_since.take() {
                p.away_ms += now.saturating_sub(since);
            }
            self.dirty = true;
            self.moved = true;
        }
    }

    /// `user` spoke for `ms` more.
    pub fn talked(&mut self, user: &UserKey, ms: u64) {
        if let Some(p) = self.person(user) {
            p.talk_ms += ms;
            self.dirty = true;
        }
    }

    pub fn hand_raised(&mut self, user: &UserKey) {
        if let Some(p) = self.person(user) {
            p.hands += 1;
            self.dirty = true;
        }
    }

    pub fn chatted(&mut self, user: &UserKey) {
        if let Some(p) = self.person(user) {
            p.chat_lines += 1;
            self.dirty = true;
        }
    }

    /// `user` stopped (`watching: false`) or started watching again.
    pub fn attention(&mut self, user: &UserKey, watching: bool, now: u64) {
        if let Some(p) = self.person(user) {
            match (watching, p.away_since) {
                (false, None) => {
                    p.away_count += 1;
                    p.away_since = Some(now);
                }
                (true, Some(since)) => {
                    p.away_ms += now.saturating_sub(since);
                    p.away_since = None;
                }
                _ => return,
            }
            self.dirty = true;
        }
    }

    /// The class ended: everyone still in goes out now.
    pub fn end(&mut self, now: u64) {
        let users: Vec<UserKey> = self.people.iter().map(|p| p.user.clone()).collect();
        for user in users {
            self.leave(&user, now);
        }
        self.ended_ms = Some(now);
        self.dirty = true;
    }

    /// The live report, as of `now`.
    pub fn report(&self, now: u64) -> ClassReport {
        ClassReport {
            session: self.id.clone(),
            room: self.room.clone(),
            started_ms: self.started_ms,
            rows: self
                .people
                .iter()
                .map(|p| ReportRow {
                    name: p.name.clone(),
                    role: p.role,
                    present: p.is_present(),
                    intervals: p.intervals.len() as u32,
                    present_ms: p.present_ms(now),
                    talk_ms: p.talk_ms,
                    hands: p.hands,
                    chat_lines: p.chat_lines,
                    away_count: p.away_count,
                    away_ms: p.away_ms_at(now),
                })
                .collect(),
        }
    }

    /// Whether `user` taught in this session (may read its register).
    pub fn taught(&self, user: &UserKey) -> bool {
        self.people
            .iter()
            .any(|p| &p.user == user && p.role.is_teacher())
    }
}

/// The register as CSV: one line per coming and going, with each person's totals, times
/// in UTC (RFC 3339) and durations in seconds.
pub fn csv(register: &Register, now: u64) -> String {
    let mut out =
        String::from("name,role,came,went,present_s,talk_s,hands,chat_lines,away_count,away_s\n");
    for p in &register.people {
        for (from, to) in &p.intervals {
            let fields = [
                field(&p.name),
                p.role.as_str().to_owned(),
                rfc3339(*from),
                to.map(rfc3339).unwrap_or_default(),
                secs(p.present_ms(now)),
                secs(p.talk_ms),
                p.hands.to_string(),
                p.chat_lines.to_string(),
                p.away_count.to_string(),
                secs(p.away_ms_at(now)),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{}.{}", ms / 1000, ms % 1000 / 100)
}

/// A CSV field: quoted when it must be, and never read as a formula by a spreadsheet.
fn field(text: &str) -> String {
    let mut t = text.to_owned();
    if t.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        t.insert(0, '\'');
    }
    if t.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", t.replace('"', "\"\""))
    } else {
        t
    }
}

/// `ms` since the Unix epoch as UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    let id = crate::media::recording::new_id(ms);
    // new_id starts with YYYYMMDD-HHMMSS.
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &id[0..4],
        &id[4..6],
        &id[6..8],
        &id[9..11],
        &id[11..13],
        &id[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(k: &str) -> UserKey {
        UserKey(k.to_owned())
    }

    #[test]
    fn someone_who_leaves_and_comes_back_has_two_intervals() {
        let mut r = Register::new("Classroom A", 1_000);
        r.enter(&user("t"), "Ms Ada", Role::Teacher, 1_000);
        r.enter(&user("s"), "Bo", Role::Guest, 2_000);
        r.leave(&user("s"), 5_000);
        r.enter(&user("s"), "Bo", Role::Guest, 9_000);
        r.talked(&user("s"), 1_500);
        r.hand_raised(&user("s"));
        r.chatted(&user("s"));
        r.attention(&user("s"), false, 10_000);
        r.attention(&user("s"), false, 10_500); // said twice: counted once
        r.attention(&user("s"), true, 12_000);
        let bo = &r.people[1];
        assert_eq!(bo.intervals, [(2_000, Some(5_000)), (9_000, None)]);
        assert_eq!(bo.present_ms(11_000), 3_000 + 2_000);
        assert_eq!((bo.away_count, bo.away_ms), (1, 2_000));
        let report = r.report(13_000);
        let row = &report.rows[1];
        assert_eq!(
            (
                row.present,
                row.intervals,
                row.talk_ms,
                row.hands,
                row.chat_lines
            ),
            (true, 2, 1_500, 1, 1)
        );
        assert!(r.taught(&user("t")) && !r.taught(&user("s")));
        r.end(20_000);
        assert!(r.people.iter().all(|p| !p.is_present()));
        let csv = csv(&r, 20_000);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 1 + 2, "{csv}");
        assert_eq!(
            lines[2],
            "Bo,guest,1970-01-01T00:00:02Z,1970-01-01T00:00:05Z,14.0,1.5,1,1,1,2.0"
        );
    }

    #[test]
    fn names_cannot_break_the_csv_or_become_formulas() {
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("Bo"), "Bo");
    }

    #[test]
    fn a_register_is_bounded() {
        let mut r = Register::new("Classroom A", 0);
        for i in 0..MAX_PEOPLE + 5 {
            r.enter(&user(&i.to_string()), "x", Role::Guest, 0);
        }
        assert_eq!((r.people.len(), r.left_out), (MAX_PEOPLE, 5));
        for i in 0..MAX_INTERVALS as u64 + 10 {
            r.leave(&user("0"), i * 10 + 5);
            r.enter(&user("0"), "x", Role::Guest, i * 10 + 10);
        }
        assert_eq!(r.people[0].intervals.len(), MAX_INTERVALS);
        assert!(r.people[0].is_present());
    }
}
