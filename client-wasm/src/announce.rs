//! What the page says through its live region (`#announcer`, read by screen readers) when
//! the person's situation changes: joining the campus, entering or leaving a room, the
//! teacher turning their devices off or allowing them again, the connection dropping and
//! coming back. Plain Rust: the page builds a [`Situation`] each frame and speaks
//! [`changes`] from the last one.

use quad_shared::protocol::MediaFlags;

/// What about the person is worth saying when it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Situation {
    /// In the space (joined, and not between connections).
    pub joined: bool,
    /// The room whose media the person is in, by name.
    pub room: Option<String>,
    /// What the teacher turned off.
    pub blocked: MediaFlags,
    /// The connection dropped and the page is getting it back.
    pub reconnecting: bool,
    /// In a class: whether it is being recorded.
    pub recorded: Option<bool>,
}

/// The sentences that say what changed from `before` to `now`, in order.
pub fn changes(before: &Situation, now: &Situation) -> Vec<String> {
    let mut said = Vec::new();
    if now.reconnecting && !before.reconnecting {
        said.push("Connection lost, reconnecting".to_owned());
    }
    if !now.reconnecting && before.reconnecting && now.joined {
        said.push("Reconnected".to_owned());
    }
    if now.joined && !before.joined && !before.reconnecting {
        said.push("You joined the campus".to_owned());
    }
    match (&before.room, &now.room) {
        (None, Some(room)) => said.push(format!("You joined {room}")),
        (Some(old), None) => said.push(format!("You left {old}")),
        (Some(old), Some(room)) if old != room => said.push(format!("You moved to {room}")),
        _ => {}
    }
    let device = |was: bool, is: bool, off: &str, on: &str| match (was, is) {
        (false, true) => Some(off.to_owned()),
        (true, false) => Some(on.to_owned()),
        _ => None,
    };
    match (before.recorded, now.recorded) {
        (None | Some(false), Some(true)) => said
            .push("This class is being recorded, your microphone and camera included".to_owned()),
        // Walking out of a recorded class is not the recording ending.
        (Some(true), Some(false)) => said.push("The recording stopped".to_owned()),
        _ => {}
    }
    let (b, n) = (&before.blocked, &now.blocked);
    said.extend(device(
        b.mic,
        n.mic,
        "The teacher muted your microphone",
        "The teacher allowed your microphone again",
    ));
    said.extend(device(
        b.camera,
        n.camera,
        "The teacher turned your camera off",
        "The teacher allowed your camera again",
    ));
    said.extend(device(
        b.screen,
        n.screen,
        "The teacher stopped your screen sharing",
        "The teacher allowed screen sharing again",
    ));
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined() -> Situation {
        Situation {
            joined: true,
            ..Situation::default()
        }
    }

    #[test]
    fn a_recording_is_said_when_it_starts_when_walking_in_and_when_it_stops() {
        let in_class = |recorded| Situation {
            room: Some("Classroom A".into()),
            recorded: Some(recorded),
            ..joined()
        };
        let told = "This class is being recorded, your microphone and camera included";
        assert_eq!(changes(&in_class(false), &in_class(true)), [told]);
        assert_eq!(
            changes(&joined(), &in_class(true)),
            ["You joined Classroom A", told]
        );
        assert_eq!(
            changes(&in_class(true), &in_class(false)),
            ["The recording stopped"]
        );
        assert_eq!(
            changes(&in_class(true), &joined()),
            ["You left Classroom A"]
        );
    }

    #[test]
    fn joining_and_rooms_are_said() {
        let start = Situation::default();
        assert_eq!(changes(&start, &joined()), ["You joined the campus"]);
        let in_room = Situation {
            room: Some("Classroom A".into()),
            ..joined()
        };
        assert_eq!(changes(&joined(), &in_room), ["You joined Classroom A"]);
        assert_eq!(changes(&in_room, &joined()), ["You left Classroom A"]);
        assert!(changes(&in_room, &in_room).is_empty());
    }

    #[test]
    fn the_teachers_blocks_are_said_both_ways() {
        let muted = Situation {
            blocked: MediaFlags {
                mic: true,
                camera: true,
                screen: false,
            },
            ..joined()
        };
        assert_eq!(
            changes(&joined(), &muted),
            [
                "The teacher muted your microphone",
                "The teacher turned your camera off"
            ]
        );
        assert_eq!(
            changes(&muted, &joined()),
            [
                "The teacher allowed your microphone again",
                "The teacher allowed your camera again"
            ]
        );
    }

    #[test]
    fn a_dropped_connection_is_said_and_its_return_is_not_a_new_join() {
        let dropped = Situation {
            reconnecting: true,
            joined: false,
            ..Situation::default()
        };
        assert_eq!(
            changes(&joined(), &dropped),
            ["Connection lost, reconnecting"]
        );
        assert_eq!(changes(&dropped, &joined()), ["Reconnected"]);
    }
}
