//! Classes as the client sees them, free of any browser API: what the teacher's buttons do
//! and say, what the focus-mode stage shows, and whether this client counts as watching.
//! The class itself is the server's ([`ClassState`], kept in `Game::class`); the browser
//! side (`web::class`) owns the DOM and sends what these functions decide. This module
//! must not touch either.

use quad_shared::AvatarId;
use quad_shared::media::Source;
use quad_shared::protocol::{ClassState, Device, RecordingNews, TeacherAction, Who};

/// What a button of the teacher's toolbar (`#class-controls`) does now; `None` for an id
/// that is not one of them.
pub fn toolbar_action(button_id: &str, class: &ClassState) -> Option<TeacherAction> {
    let everyone = |device, allowed| TeacherAction::Allow {
        who: Who::Students,
        device,
        allowed,
    };
    Some(match button_id {
        "class-mute-all" => everyone(Device::Mic, false),
        "class-unmute-all" => everyone(Device::Mic, true),
        // Flips what students who walk in get: the class-wide setting.
        "class-screen-all" => everyone(Device::Screen, class.blocked_for_newcomers.screen),
        "class-lock" => TeacherAction::Lock(!class.locked),
        "class-focus" => TeacherAction::Focus(!class.focus),
        "class-lower-hands" => TeacherAction::LowerHand(None),
        "class-end-spotlight" => TeacherAction::Spotlight(None),
        "class-record" => TeacherAction::Record(!class.recording),
        _ => return None,
    })
}

/// A teacher's button on a student's tile (`button.tile-mute` and so on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileTool {
    Mute,
    Camera,
    Screen,
    Spotlight,
    Remove,
}

impl TileTool {
    /// In the order they appear on a tile.
    pub const ALL: [TileTool; 5] = [
        TileTool::Mute,
        TileTool::Camera,
        TileTool::Screen,
        TileTool::Spotlight,
        TileTool::Remove,
    ];

    /// Its class on the page.
    pub fn class_name(self) -> &'static str {
        match self {
            TileTool::Mute => "tile-mute",
            TileTool::Camera => "tile-camera",
            TileTool::Screen => "tile-screen",
            TileTool::Spotlight => "tile-spotlight",
            TileTool::Remove => "tile-remove",
        }
    }

    /// The tool a button with class `name` is.
    pub fn from_class_name(name: &str) -> Option<TileTool> {
        TileTool::ALL.into_iter().find(|t| t.class_name() == name)
    }

    /// What clicking it does to `student` now: each device button flips what the teacher
    /// allows; the spotlight button puts the student in the spotlight or takes it out.
    pub fn action(self, student: AvatarId, class: &ClassState) -> TeacherAction {
        let blocked = class.blocked_of(student);
        let allow = |device, allowed| TeacherAction::Allow {
            who: Who::One(student),
            device,
            allowed,
        };
        match self {
            TileTool::Mute => allow(Device::Mic, blocked.mic),
            TileTool::Camera => allow(Device::Camera, blocked.camera),
            TileTool::Screen => allow(Device::Screen, blocked.screen),
            TileTool::Spotlight if class.spotlight == Some(student) => {
                TeacherAction::Spotlight(None)
            }
            TileTool::Spotlight => TeacherAction::Spotlight(Some(student)),
            TileTool::Remove => TeacherAction::Remove(student),
        }
    }

    /// Its label: what clicking it does now.
    pub fn label(self, student: AvatarId, class: &ClassState) -> &'static str {
        let blocked = class.blocked_of(student);
        match self {
            TileTool::Mute if blocked.mic => "Unmute",
            TileTool::Mute => "Mute",
            TileTool::Camera if blocked.camera => "Allow camera",
            TileTool::Camera => "Camera off",
            TileTool::Screen if blocked.screen => "Allow sharing",
            TileTool::Screen => "Stop sharing",
            TileTool::Spotlight if class.spotlight == Some(student) => "End spotlight",
            TileTool::Spotlight => "Spotlight",
            TileTool::Remove => "Remove",
        }
    }
}

/// Whether this client is watching: the page is visible and, in focus mode, full screen.
pub fn watching(visible: bool, focus: bool, fullscreen: bool) -> bool {
    visible && (!focus || fullscreen)
}

/// What the focus-mode stage shows: the first teacher of the class in the room (`present`)
/// other than `me`, with its screen if one arrives (`live`), else its camera if it arrives,
/// else no video.
pub fn stage(
    class: &ClassState,
    me: AvatarId,
    present: impl Fn(AvatarId) -> bool,
    live: impl Fn(AvatarId, Source) -> bool,
) -> Option<(AvatarId, Option<Source>)> {
    let teacher = class
        .teachers
        .iter()
        .copied()
        .find(|t| *t != me && present(*t))?;
    let source = [Source::Screen, Source::Camera]
        .into_iter()
        .find(|s| live(teacher, *s));
    Some((teacher, source))
}

/// What the teacher reads when a student stops or starts watching (`focus`: whether the
/// class was in focus mode then; leaving the tab leaves full screen too).
pub fn attention_text(name: &str, watching: bool, focus: bool) -> String {
    match (watching, focus) {
        (true, _) => format!("{name} is back"),
        (false, true) => format!("{name} left full screen"),
        (false, false) => format!("{name} left the tab"),
    }
}

/// What a teacher is told of a recording (`ServerMsg::Recording`), as a notice.
pub fn recording_notice(room: &str, news: &RecordingNews) -> String {
    match news {
        RecordingNews::Stopped { reason } => {
            format!("The recording of {room} stopped: {reason}. The class goes on.")
        }
        RecordingNews::Ready { duration_ms, bytes } => {
            let secs = duration_ms / 1000;
            format!(
                "The recording of {room} is ready: {}:{:02}, {}.",
                secs / 60,
                secs % 60,
                crate::records::size_text(*bytes)
            )
        }
        RecordingNews::Failed { message } => {
            format!("The recording of {room} could not be made: {message}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quad_shared::ids::ZoneId;
    use quad_shared::protocol::MediaFlags;

    const TEACHER: AvatarId = AvatarId(1);
    const ADA: AvatarId = AvatarId(2);

    fn class() -> ClassState {
        ClassState {
            room: ZoneId(4),
            teachers: vec![TEACHER],
            locked: false,
            focus: false,
            spotlight: None,
            hands: vec![],
            blocked: vec![],
            blocked_for_newcomers: MediaFlags::default(),
            away: vec![],
            recording: false,
        }
    }

    #[test]
    fn toolbar_toggles_flip_the_class_state() {
        let mut c = class();
        assert_eq!(
            toolbar_action("class-lock", &c),
            Some(TeacherAction::Lock(true))
        );
        assert_eq!(
            toolbar_action("class-screen-all", &c),
            Some(TeacherAction::Allow {
                who: Who::Students,
                device: Device::Screen,
                allowed: false
            })
        );
        c.locked = true;
        c.focus = true;
        c.blocked_for_newcomers.screen = true;
        assert_eq!(
            toolbar_action("class-lock", &c),
            Some(TeacherAction::Lock(false))
        );
        assert_eq!(
            toolbar_action("class-focus", &c),
            Some(TeacherAction::Focus(false))
        );
        assert!(matches!(
            toolbar_action("class-screen-all", &c),
            Some(TeacherAction::Allow { allowed: true, .. })
        ));
        assert_eq!(
            toolbar_action("class-mute-all", &c),
            Some(TeacherAction::Allow {
                who: Who::Students,
                device: Device::Mic,
                allowed: false
            })
        );
        assert_eq!(toolbar_action("toggle-mic", &c), None);
    }

    #[test]
    fn tile_tools_say_and_do_the_opposite_of_now() {
        let mut c = class();
        assert_eq!(TileTool::Mute.label(ADA, &c), "Mute");
        assert_eq!(
            TileTool::Mute.action(ADA, &c),
            TeacherAction::Allow {
                who: Who::One(ADA),
                device: Device::Mic,
                allowed: false
            }
        );
        c.blocked = vec![(
            ADA,
            MediaFlags {
                mic: true,
                camera: false,
                screen: true,
            },
        )];
        c.spotlight = Some(ADA);
        assert_eq!(TileTool::Mute.label(ADA, &c), "Unmute");
        assert_eq!(TileTool::Camera.label(ADA, &c), "Camera off");
        assert_eq!(TileTool::Screen.label(ADA, &c), "Allow sharing");
        assert!(matches!(
            TileTool::Screen.action(ADA, &c),
            TeacherAction::Allow { allowed: true, .. }
        ));
        assert_eq!(
            TileTool::Spotlight.action(ADA, &c),
            TeacherAction::Spotlight(None)
        );
        assert_eq!(
            TileTool::Spotlight.action(AvatarId(3), &c),
            TeacherAction::Spotlight(Some(AvatarId(3)))
        );
        assert_eq!(TileTool::Remove.action(ADA, &c), TeacherAction::Remove(ADA));
        for tool in TileTool::ALL {
            assert_eq!(TileTool::from_class_name(tool.class_name()), Some(tool));
        }
        assert_eq!(TileTool::from_class_name("tile"), None);
    }

    #[test]
    fn watching_needs_full_screen_only_in_focus_mode() {
        assert!(watching(true, false, false));
        assert!(!watching(false, false, false));
        assert!(!watching(true, true, false));
        assert!(watching(true, true, true));
        assert!(!watching(false, true, true));
    }

    #[test]
    fn the_stage_prefers_the_teachers_screen() {
        let c = class();
        let all = |_| true;
        assert_eq!(
            stage(&c, ADA, all, |_, s| s == Source::Camera),
            Some((TEACHER, Some(Source::Camera)))
        );
        assert_eq!(
            stage(&c, ADA, all, |_, _| true),
            Some((TEACHER, Some(Source::Screen)))
        );
        assert_eq!(stage(&c, ADA, all, |_, _| false), Some((TEACHER, None)));
        assert_eq!(stage(&c, ADA, |_| false, |_, _| true), None);
        assert_eq!(stage(&c, TEACHER, all, |_, _| true), None);
    }

    #[test]
    fn attention_texts() {
        assert_eq!(attention_text("Ada", false, true), "Ada left full screen");
        assert_eq!(attention_text("Ada", false, false), "Ada left the tab");
        assert_eq!(attention_text("Ada", true, true), "Ada is back");
    }

    #[test]
    fn recording_news_reads_as_a_sentence() {
        let ready = RecordingNews::Ready {
            duration_ms: 125_400,
            bytes: 3_450_000,
        };
        assert_eq!(
            recording_notice("Classroom A", &ready),
            "The recording of Classroom A is ready: 2:05, 3.5 MB."
        );
        let stopped = RecordingNews::Stopped {
            reason: "the disk is full".into(),
        };
        assert_eq!(
            recording_notice("Classroom A", &stopped),
            "The recording of Classroom A stopped: the disk is full. The class goes on."
        );
        let toggle = toolbar_action(
            "class-record",
            &ClassState {
                recording: true,
                ..class()
            },
        );
        assert_eq!(toggle, Some(TeacherAction::Record(false)));
    }
}
