//! The class of the room this avatar is in, on the page: the teacher's tools (the toolbar
//! `#class-controls`, the raised hands `#class-hands`, who stopped watching
//! `#class-events`, the buttons on students' tiles), the student's hand (`#toggle-hand`),
//! the devices the teacher turned off (enforced on our own microphone, camera and screen),
//! focus mode (`#focus`: the teacher's stage, full screen on request) and attention
//! reports (`ClientMsg::Attention`).
//!
//! The class is the server's (`Game::class`), and what a button does is
//! [`crate::class`]'s. The room's connection and tiles are `classroom`'s: this module only
//! decorates a tile it is given ([`TileMarks`]) and hides the stage (`classroom` shows it
//! from the room's streams).

use super::{App, AppRef, controls, dom, send};
use crate::class::{TileTool, attention_text, toolbar_action, watching};
use crate::game::Game;
use quad_shared::AvatarId;
use quad_shared::ids::ZoneId;
use quad_shared::protocol::{ClassState, ClientMsg, MediaFlags, TeacherAction};
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, HtmlElement, HtmlVideoElement};

/// The page's side of the class, kept in the app.
#[derive(Debug, Default)]
pub struct ClassUi {
    /// Whether the server believes this client watches, in the class of that room (it
    /// assumes so for someone who walks in).
    attention: Option<(ZoneId, bool)>,
}

/// The buttons: the teacher's toolbar, the raised hands' "Lower", the tiles' tools, the
/// hand, and "Watch in full screen"; and attention reports on page visibility and
/// full-screen changes.
pub fn install(app: &AppRef) -> Result<(), JsValue> {
    let document = dom::document()?;
    let weak = app.clone();
    dom::listen(
        app,
        &dom::by_id(&document, "class-controls")?,
        "click",
        move |e| {
            let Some(button) = clicked_button(&e) else {
                return;
            };
            teach(&weak, |class| toolbar_action(&button.id(), class));
        },
    )?;
    let weak = app.clone();
    dom::listen(
        app,
        &dom::by_id(&document, "class-hands")?,
        "click",
        move |e| {
            let Some(id) = clicked_button(&e)
                .filter(|b| b.class_list().contains("hand-lower"))
                .and_then(|b| member_of(&b, "li[data-member]"))
            else {
                return;
            };
            teach(&weak, |_| Some(TeacherAction::LowerHand(Some(id))));
        },
    )?;
    let weak = app.clone();
    dom::listen(
        app,
        &dom::by_id(&document, "room-tiles")?,
        "click",
        move |e| {
            let Some(button) = clicked_button(&e) else {
                return;
            };
            let classes = button.class_list();
            let tool = TileTool::ALL
                .into_iter()
                .find(|t| classes.contains(t.class_name()));
            let (Some(tool), Some(id)) = (tool, member_of(&button, "figure.tile")) else {
                return;
            };
            teach(&weak, |class| Some(tool.action(id, class)));
        },
    )?;
    let weak = app.clone();
    dom::listen(
        app,
        &dom::by_id(&document, "toggle-hand")?,
        "click",
        move |_| {
            if let Some(a) = weak.upgrade()
                && let Ok(a) = a.try_borrow()
                && a.game.class.is_some()
            {
                let raised = !a.game.hand_raised();
                send(&a.ws, &ClientMsg::Hand { raised });
            }
        },
    )?;
    // Browsers go full screen only from a click.
    dom::listen(
        app,
        &dom::by_id(&document, "focus-enter")?,
        "click",
        move |_| {
            if let Ok(focus) = dom::document().and_then(|d| dom::by_id(&d, "focus"))
                && let Err(e) = focus.request_fullscreen()
            {
                web_sys::console::warn_2(&"full screen:".into(), &e);
            }
        },
    )?;
    for event in ["visibilitychange", "fullscreenchange"] {
        let weak = app.clone();
        dom::listen(app, &document, event, move |_| {
            if let Some(a) = weak.upgrade()
                && let Ok(mut a) = a.try_borrow_mut()
            {
                report_attention(&mut a);
            }
        })?;
    }
    Ok(())
}

/// The button an event happened on (or in).
fn clicked_button(e: &web_sys::Event) -> Option<Element> {
    dom::event_element(e)?.closest("button").ok()?
}

/// The avatar id in `data-member` of `el`'s closest `selector`.
fn member_of(el: &Element, selector: &str) -> Option<AvatarId> {
    let id = el.closest(selector).ok()??.get_attribute("data-member")?;
    Some(AvatarId(id.parse().ok()?))
}

/// Sends the teacher's action `decide` makes of the class, if this client teaches one.
fn teach(app: &AppRef, decide: impl FnOnce(&ClassState) -> Option<TeacherAction>) {
    let Some(a) = app.upgrade() else { return };
    let Ok(a) = a.try_borrow() else { return };
    if !a.game.teaches() {
        return;
    }
    if let Some(action) = a.game.class.as_ref().and_then(decide) {
        send(&a.ws, &ClientMsg::Teacher(action));
    }
}

/// After a `Class` message: turns off what the teacher turned off, reports attention if it
/// changed, and redraws the room's tiles and stage.
pub fn on_class(app: &AppRef) {
    let Some(app_rc) = app.upgrade() else { return };
    let room = {
        let Ok(mut a) = app_rc.try_borrow_mut() else {
            return;
        };
        enforce_blocks(&mut a);
        report_attention(&mut a);
        let (class, teacher) = (a.game.class.clone(), a.game.role.is_teacher());
        a.media
            .room
            .as_ref()
            .map(|r| (r.view.clone(), class, teacher))
    };
    match room {
        Some((view, class, teacher)) => {
            if let Ok(mut view) = view.try_borrow_mut() {
                view.class = class;
                view.teacher = teacher;
                view.render_logged();
            }
        }
        None => {
            if let Err(e) = hide_stage() {
                web_sys::console::warn_2(&"focus mode:".into(), &e);
            }
        }
    }
}

/// Turns off our devices the teacher turned off, and tells the server.
fn enforce_blocks(a: &mut App) {
    let blocked = a.game.my_blocks();
    let mut changed = false;
    if blocked.mic && a.media.mic_on() {
        a.media.set_mic(false);
        changed = true;
    }
    if blocked.camera && a.media.camera_on() {
        a.media.camera_off();
        changed = true;
    }
    if blocked.screen {
        changed |= a.media.stop_screen();
    }
    if changed {
        let flags = a.media.flags();
        send(&a.ws, &ClientMsg::Media(flags));
    }
}

/// Tells the server whether we watch, if that is not what it believes.
fn report_attention(a: &mut App) {
    let Some(room) = a.game.class.as_ref().map(|c| c.room) else {
        a.class_ui.attention = None;
        return;
    };
    let Ok(document) = dom::document() else {
        return;
    };
    let now = watching(
        !document.hidden(),
        a.game.in_focus(),
        document.fullscreen_element().is_some(),
    );
    let believed = match a.class_ui.attention {
        Some((r, watching)) if r == room => watching,
        // Walked in: the server assumes a student watches.
        _ => true,
    };
    a.class_ui.attention = Some((room, now));
    if believed != now {
        send(&a.ws, &ClientMsg::Attention { watching: now });
    }
}

/// Redraws the hand and the teacher's panel when the class changed (every frame; cheap
/// when nothing did).
pub fn update(a: &mut App) -> Result<(), JsValue> {
    if !a.game.class_dirty {
        return Ok(());
    }
    a.game.class_dirty = false;
    render(&a.game)
}

fn render(game: &Game) -> Result<(), JsValue> {
    let document = dom::document()?;
    let class = game.class.as_ref();
    let raised = game.hand_raised();
    controls::set_toggle(
        &document,
        "toggle-hand",
        raised,
        if raised { "Lower hand" } else { "Raise hand" },
    )?;
    dom::set_hidden("toggle-hand", class.is_none() || game.role.is_teacher())?;

    // Everyone in the room sees that it records.
    dom::set_hidden("room-recording", !class.is_some_and(|c| c.recording))?;
    let teaching = class.filter(|_| game.teaches());
    dom::set_hidden("class-controls", teaching.is_none())?;
    let hands = dom::by_id(&document, "class-hands")?;
    let events = dom::by_id(&document, "class-events")?;
    hands.set_text_content(None);
    events.set_text_content(None);
    let Some(class) = teaching else {
        dom::set_hidden("class-hands", true)?;
        dom::set_hidden("class-events", true)?;
        return Ok(());
    };
    let screens_off = class.blocked_for_newcomers.screen;
    controls::set_toggle(
        &document,
        "class-screen-all",
        screens_off,
        if screens_off {
            "Allow students' screen sharing"
        } else {
            "Stop students' screen sharing"
        },
    )?;
    controls::set_toggle(
        &document,
        "class-lock",
        class.locked,
        if class.locked {
            "Unlock room"
        } else {
            "Lock room"
        },
    )?;
    controls::set_toggle(
        &document,
        "class-focus",
        class.focus,
        if class.focus {
            "End focus mode"
        } else {
            "Focus mode"
        },
    )?;
    dom::set_disabled(
        &dom::by_id(&document, "class-lower-hands")?,
        class.hands.is_empty(),
    )?;
    dom::set_hidden("class-end-spotlight", class.spotlight.is_none())?;
    controls::set_toggle(
        &document,
        "class-record",
        class.recording,
        if class.recording {
            "Stop recording"
        } else {
            "Record"
        },
    )?;

    for id in &class.hands {
        let name = game.name_of(*id);
        let li = document.create_element("li")?;
        li.set_attribute("data-member", &id.0.to_string())?;
        let who = document.create_element("span")?;
        who.set_class_name("name");
        // Names are text, never markup.
        who.set_text_content(Some(name));
        let lower = document.create_element("button")?;
        lower.set_attribute("type", "button")?;
        lower.set_class_name("hand-lower");
        lower.set_attribute("aria-label", &format!("Lower {name}'s hand"))?;
        lower.set_text_content(Some("Lower"));
        li.append_child(&who)?;
        li.append_child(&lower)?;
        hands.append_child(&li)?;
    }
    dom::set_hidden("class-hands", class.hands.is_empty())?;

    for event in &game.attention {
        let li = document.create_element("li")?;
        li.set_attribute("data-member", &event.student.0.to_string())?;
        li.set_class_name(if event.watching { "back" } else { "away" });
        li.set_text_content(Some(&attention_text(
            &event.name,
            event.watching,
            event.focus,
        )));
        events.append_child(&li)?;
    }
    dom::set_hidden("class-events", game.attention.is_empty())?;
    events.set_scroll_top(events.scroll_height());
    Ok(())
}

/// What a tile's marks are drawn for.
pub struct TileContext<'a> {
    pub class: Option<&'a ClassState>,
    pub me: AvatarId,
    /// This client is a teacher: students' tiles get the teacher's tools.
    pub teacher: bool,
}

/// The class's marks on one member's tile: a "Teacher" label, a raised hand, what the
/// teacher turned off, and (for a teacher, on a student's tile) the teacher's tools. The
/// tile's classes say the same (`teacher`, `hand`, `spotlight`, `away`, `blocked-mic`,
/// `blocked-camera`, `blocked-screen`).
pub struct TileMarks {
    teacher: HtmlElement,
    hand: HtmlElement,
    blocked: HtmlElement,
    tools: HtmlElement,
    buttons: Vec<(TileTool, Element)>,
}

impl TileMarks {
    /// Adds the (hidden) marks to a new tile's `caption`, and the tools to its `figure`.
    pub fn new(
        document: &Document,
        figure: &Element,
        caption: &Element,
    ) -> Result<TileMarks, JsValue> {
        let span = |class: &str, text: &str| -> Result<HtmlElement, JsValue> {
            let el: HtmlElement = document.create_element("span")?.dyn_into()?;
            el.set_class_name(class);
            el.set_text_content(Some(text));
            el.set_hidden(true);
            caption.append_child(&el)?;
            Ok(el)
        };
        let teacher = span("teacher-label", "Teacher")?;
        let hand = span("hand-marker", "✋")?;
        hand.set_title("Hand raised");
        hand.set_attribute("role", "img")?;
        hand.set_attribute("aria-label", "Hand raised")?;
        let blocked = span("blocked-marker", "")?;
        let tools: HtmlElement = document.create_element("div")?.dyn_into()?;
        tools.set_class_name("tile-tools");
        tools.set_hidden(true);
        let mut buttons = Vec::new();
        for tool in TileTool::ALL {
            let button = document.create_element("button")?;
            button.set_attribute("type", "button")?;
            button.set_class_name(tool.class_name());
            tools.append_child(&button)?;
            buttons.push((tool, button));
        }
        figure.append_child(&tools)?;
        Ok(TileMarks {
            teacher,
            hand,
            blocked,
            tools,
            buttons,
        })
    }

    /// Brings the marks of `id`'s tile (`figure`) up to date; returns what the teacher
    /// turned off for `id`.
    pub fn update(
        &self,
        figure: &Element,
        id: AvatarId,
        name: &str,
        ctx: &TileContext,
    ) -> Result<MediaFlags, JsValue> {
        let class = ctx.class;
        let is_teacher = class.is_some_and(|c| c.teachers.contains(&id));
        let blocked = class.map(|c| c.blocked_of(id)).unwrap_or_default();
        let hand = class.is_some_and(|c| c.hands.contains(&id));
        let classes = figure.class_list();
        classes.toggle_with_force("teacher", is_teacher)?;
        classes.toggle_with_force("hand", hand)?;
        classes.toggle_with_force("spotlight", class.is_some_and(|c| c.spotlight == Some(id)))?;
        classes.toggle_with_force(
            "away",
            ctx.teacher && class.is_some_and(|c| c.away.contains(&id)),
        )?;
        classes.toggle_with_force("blocked-mic", blocked.mic)?;
        classes.toggle_with_force("blocked-camera", blocked.camera)?;
        classes.toggle_with_force("blocked-screen", blocked.screen)?;
        show(&self.teacher, is_teacher);
        show(&self.hand, hand);
        let off: Vec<&str> = [
            (blocked.mic, "Muted by teacher"),
            (blocked.camera, "Camera off by teacher"),
            (blocked.screen, "Sharing stopped by teacher"),
        ]
        .into_iter()
        .filter_map(|(off, text)| off.then_some(text))
        .collect();
        dom::set_text(&self.blocked, &off.join(" · "));
        show(&self.blocked, !off.is_empty());

        let tools = class.filter(|_| ctx.teacher && id != ctx.me && !is_teacher);
        show(&self.tools, tools.is_some());
        if let Some(class) = tools {
            for (tool, button) in &self.buttons {
                let label = tool.label(id, class);
                dom::set_text(button, label);
                // Names are text in an attribute, never markup.
                let described = format!("{label}: {name}");
                if button.get_attribute("aria-label").as_deref() != Some(described.as_str()) {
                    button.set_attribute("aria-label", &described)?;
                }
            }
        }
        Ok(blocked)
    }
}

fn show(el: &HtmlElement, shown: bool) {
    if el.hidden() == shown {
        el.set_hidden(!shown);
    }
}

/// Hides the focus-mode stage, leaving full screen if the stage was in it.
pub fn hide_stage() -> Result<(), JsValue> {
    let document = dom::document()?;
    let section: HtmlElement = dom::by_id(&document, "focus")?.dyn_into()?;
    if !section.hidden() {
        section.set_hidden(true);
        let video: HtmlVideoElement = dom::by_id(&document, "focus-video")?.dyn_into()?;
        video.set_src_object(None);
    }
    if document
        .fullscreen_element()
        .is_some_and(|el| el.id() == "focus")
    {
        document.exit_fullscreen();
    }
    Ok(())
}
