//! Who may see which class records, and the list a person gets ([`list`]): a recording is
//! seen by whoever started it and by the teachers of its class session; its students see
//! it once a teacher shares it. A register (attendance and engagement) is seen only by the
//! teachers of its session. Authority follows the person's identity (`UserKey`), never a
//! connection: the same teacher on another device sees the same list.

use super::links::{LINK_LIFETIME_MS, Links};
use crate::store::{RecordingRecord, Store};
use quad_shared::protocol::{ClassEntry, ErrorCode, ErrorMsg, RecordingEntry, RecordsList, Role};

/// Recordings and registers looked at per list, newest first (a list of this many fits a
/// frame with room to spare).
const LIST_LIMIT: usize = 100;

/// The path of a recording's file, as the HTTP handler serves it.
pub fn recording_path(id: &str) -> String {
    format!("/records/recording/{id}.webm")
}

/// The path of a register's CSV.
pub fn register_path(session: &str) -> String {
    format!("/records/class/{session}.csv")
}

/// What `user` may do with `recording`, given the sessions they attended (`taught`).
fn access(user: &str, r: &RecordingRecord, sessions: &[(String, bool)]) -> (bool, bool) {
    let session = sessions.iter().find(|(s, _)| *s == r.session);
    let teaches = r.by_user == user || session.is_some_and(|(_, taught)| *taught);
    let sees = teaches || (r.shared && session.is_some());
    (sees, teaches)
}

/// `user`'s (with `role`) class records as of `now_ms`, with links signed by `links`.
pub fn list(
    store: &dyn Store,
    links: &Links,
    user: &str,
    role: Role,
    now_ms: u64,
) -> anyhow::Result<RecordsList> {
    let sessions = store.sessions_of(user, LIST_LIMIT)?;
    let expires = now_ms + LINK_LIFETIME_MS;
    let recordings = store
        .recordings(LIST_LIMIT)?
        .into_iter()
        .filter_map(|r| {
            let (sees, teaches) = access(user, &r, &sessions);
            if !sees {
                return None;
            }
            let ready = r.state == "ready";
            let path = recording_path(&r.id);
            Some(RecordingEntry {
                play_url: ready.then(|| links.sign(&path, expires, false)),
                download_url: ready.then(|| links.sign(&path, expires, true)),
                id: r.id,
                room: r.room,
                started_ms: r.started_ms,
                duration_ms: r.duration_ms,
                bytes: r.bytes,
                state: r.state,
                message: if teaches { r.message } else { String::new() },
                shared: r.shared,
                may_share: teaches,
            })
        })
        .collect();
    let classes = if role.is_teacher() {
        store
            .registers(Some(user), LIST_LIMIT)?
            .into_iter()
            .map(|reg| ClassEntry {
                csv_url: links.sign(&register_path(&reg.id), expires, true),
                people: reg.people.len() as u32,
                session: reg.id,
                room: reg.room,
                started_ms: reg.started_ms,
                ended_ms: reg.ended_ms,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(RecordsList {
        recordings,
        classes,
    })
}

/// `user` shares recording `id` with its students (or stops): only a teacher of its class
/// may.
pub fn share(store: &dyn Store, user: &str, id: &str, shared: bool) -> Result<(), ErrorMsg> {
    let internal = |e: anyhow::Error| {
        tracing::error!("sharing a recording: {e:#}");
        ErrorMsg::new(ErrorCode::Unavailable, "the records cannot be read now")
    };
    let sessions = store.sessions_of(user, LIST_LIMIT).map_err(internal)?;
    let recording = store.recording(id).map_err(internal)?;
    match recording {
        Some(r) if access(user, &r, &sessions).1 => {
            store.set_recording_shared(id, shared).map_err(internal)
        }
        _ => Err(ErrorMsg::new(
            ErrorCode::Forbidden,
            "only a teacher of the class can share its recording",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(by: &str, session: &str, shared: bool) -> RecordingRecord {
        RecordingRecord {
            id: "r".into(),
            room: "Classroom A".into(),
            by_user: by.into(),
            by_name: "x".into(),
            started_ms: 0,
            duration_ms: 0,
            bytes: 0,
            state: "ready".into(),
            message: String::new(),
            shared,
            session: session.into(),
            location: "local".into(),
        }
    }

    #[test]
    fn teachers_of_the_class_see_and_share_students_see_only_what_is_shared() {
        let taught = vec![("s1".to_owned(), true)];
        let attended = vec![("s1".to_owned(), false)];
        let elsewhere = vec![("s2".to_owned(), false)];
        assert_eq!(access("t", &rec("t", "s1", false), &[]), (true, true));
        assert_eq!(access("t2", &rec("t", "s1", false), &taught), (true, true));
        assert_eq!(
            access("s", &rec("t", "s1", false), &attended),
            (false, false)
        );
        assert_eq!(access("s", &rec("t", "s1", true), &attended), (true, false));
        assert_eq!(
            access("s", &rec("t", "s1", true), &elsewhere),
            (false, false)
        );
        assert_eq!(access("s", &rec("t", "s1", true), &[]), (false, false));
    }
}
