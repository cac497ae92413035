//! The campus's controls and HUD: the keyboard (walking, and the keys for the microphone,
//! camera and screen), the media buttons and how they show their state (on, off, turned
//! off by the teacher), and the HUD (zone, role, the notice toast `#notice`, the people
//! list as real, accessible elements).

use super::dom::{
    by_id, document, keep, listen, now_ms, set_disabled, set_hidden, set_text, window,
};
use super::{App, AppRef};
use quad_shared::movement::dir;
use quad_shared::protocol::Role;
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, HtmlElement, KeyboardEvent, PointerEvent};

/// How long a notice stays up, ms.
const NOTICE_MS: f64 = 6000.0;

/// Arrow keys and WASD set direction bits while held (layout-independent key codes).
fn key_bit(code: &str) -> u8 {
    match code {
        "ArrowUp" | "KeyW" => dir::UP,
        "ArrowDown" | "KeyS" => dir::DOWN,
        "ArrowLeft" | "KeyA" => dir::LEFT,
        "ArrowRight" | "KeyD" => dir::RIGHT,
        _ => 0,
    }
}

pub fn install_keyboard(app: &AppRef) -> Result<(), JsValue> {
    let window = window()?;
    let typing = |e: &KeyboardEvent| {
        e.target()
            .and_then(|t| t.dyn_into::<Element>().ok())
            .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "SELECT" | "TEXTAREA"))
    };
    let weak = app.clone();
    let on_down = Closure::<dyn FnMut(KeyboardEvent)>::new(move |e: KeyboardEvent| {
        if typing(&e) {
            return;
        }
        if !e.repeat() {
            match e.code().as_str() {
                "KeyM" => return super::toggle_mic(&weak),
                "KeyC" => return super::toggle_camera(&weak),
                _ => {}
            }
        }
        let bit = key_bit(&e.code());
        if bit == 0 {
            return;
        }
        e.prevent_default();
        if let Some(a) = weak.upgrade() {
            let mut a = a.borrow_mut();
            a.keys |= bit;
            // Browsers start audio only after a gesture; a key press is one.
            a.media.resume_audio();
        }
    });
    let weak = app.clone();
    let on_up = Closure::<dyn FnMut(KeyboardEvent)>::new(move |e: KeyboardEvent| {
        let bit = key_bit(&e.code());
        if let Some(a) = weak.upgrade() {
            a.borrow_mut().keys &= !bit;
        }
    });
    let weak = app.clone();
    let on_blur = Closure::<dyn FnMut()>::new(move || {
        if let Some(a) = weak.upgrade() {
            a.borrow_mut().keys = 0;
        }
    });
    window.add_event_listener_with_callback("keydown", on_down.as_ref().unchecked_ref())?;
    window.add_event_listener_with_callback("keyup", on_up.as_ref().unchecked_ref())?;
    window.add_event_listener_with_callback("blur", on_blur.as_ref().unchecked_ref())?;
    keep(app, on_down);
    keep(app, on_up);
    keep(app, on_blur);
    Ok(())
}

/// Walking by touch: a finger pressed on the map and held (or dragged) walks the avatar
/// toward it, until it lifts; a mouse button held on the map does the same. The canvas
/// takes the pointer (`setPointerCapture`), so a drag that leaves it keeps walking, and its
/// CSS (`touch-action: none`) keeps the browser from scrolling or zooming instead. Any
/// press on the page also starts audio (browsers allow it only after a gesture).
pub fn install_pointer_walk(app: &AppRef) -> Result<(), JsValue> {
    let document = document()?;
    let canvas = by_id(&document, "world")?;
    let at = |e: &web_sys::Event| {
        e.dyn_ref::<PointerEvent>()
            .map(|p| glam::Vec2::new(p.client_x() as f32, p.client_y() as f32))
    };
    let weak = app.clone();
    let target = canvas.clone();
    listen(app, &canvas, "pointerdown", move |e| {
        let Some(p) = e.dyn_ref::<PointerEvent>() else {
            return;
        };
        // The main button of a mouse, or any touch or pen.
        if p.pointer_type() == "mouse" && p.button() != 0 {
            return;
        }
        let _ = target.set_pointer_capture(p.pointer_id());
        if let Some(a) = weak.upgrade() {
            a.borrow_mut().pointer = at(&e);
        }
    })?;
    let weak = app.clone();
    listen(app, &canvas, "pointermove", move |e| {
        if let Some(a) = weak.upgrade() {
            let mut a = a.borrow_mut();
            if a.pointer.is_some() {
                a.pointer = at(&e);
            }
        }
    })?;
    for end in ["pointerup", "pointercancel", "lostpointercapture"] {
        let weak = app.clone();
        listen(app, &canvas, end, move |_| {
            if let Some(a) = weak.upgrade() {
                a.borrow_mut().pointer = None;
            }
        })?;
    }
    // A touch counts as a gesture only when it ends (`pointerup`), a mouse press when it
    // starts: resume on both.
    for gesture in ["pointerdown", "pointerup"] {
        let weak = app.clone();
        listen(app, &document, gesture, move |_| {
            if let Some(a) = weak.upgrade() {
                a.borrow().media.resume_audio();
            }
        })?;
    }
    Ok(())
}

/// The drawers of small screens: `#open-people` and `#open-chat` open the people list and
/// the chat over the map (the `open` class; the CSS shows them so only on small screens),
/// one at a time; pressed again, they close it.
pub fn install_drawers(app: &AppRef) -> Result<(), JsValue> {
    const DRAWERS: [(&str, &str); 2] = [("open-people", "people"), ("open-chat", "chat")];
    let document = document()?;
    for (button, _) in DRAWERS {
        let button_el = by_id(&document, button)?;
        let doc = document.clone();
        listen(app, &button_el, "click", move |_| {
            for (other, panel) in DRAWERS {
                let (Ok(other_el), Ok(panel_el)) = (by_id(&doc, other), by_id(&doc, panel)) else {
                    continue;
                };
                let open = other == button && !panel_el.class_list().contains("open");
                let _ = panel_el.class_list().toggle_with_force("open", open);
                let _ =
                    other_el.set_attribute("aria-expanded", if open { "true" } else { "false" });
            }
        })?;
    }
    Ok(())
}

/// The microphone, camera and screen-sharing buttons of the HUD (M and C on the keyboard
/// for the first two).
pub fn install_media_buttons(app: &AppRef) -> Result<(), JsValue> {
    let document = document()?;
    let weak = app.clone();
    let on_mic = Closure::<dyn FnMut()>::new(move || super::toggle_mic(&weak));
    by_id(&document, "toggle-mic")?
        .add_event_listener_with_callback("click", on_mic.as_ref().unchecked_ref())?;
    keep(app, on_mic);
    let weak = app.clone();
    let on_camera = Closure::<dyn FnMut()>::new(move || super::toggle_camera(&weak));
    by_id(&document, "toggle-camera")?
        .add_event_listener_with_callback("click", on_camera.as_ref().unchecked_ref())?;
    keep(app, on_camera);
    let weak = app.clone();
    let on_screen = Closure::<dyn FnMut()>::new(move || super::toggle_screen(&weak));
    by_id(&document, "toggle-screen")?
        .add_event_listener_with_callback("click", on_screen.as_ref().unchecked_ref())?;
    keep(app, on_screen);
    // Phones and tablets (iOS Safari, Android's browsers) cannot share a screen: no button
    // that could only fail. (A fake screen, for tests, needs none.)
    let can_share = window()?
        .navigator()
        .media_devices()
        .is_ok_and(|d| js_sys::Reflect::has(&d, &"getDisplayMedia".into()).unwrap_or(false));
    let fake = app.upgrade().is_some_and(|a| a.borrow().params.fakescreen);
    if !can_share && !fake {
        set_hidden("toggle-screen", true)?;
    }
    Ok(())
}

/// Sets a toggle button's label and `aria-pressed` when they change; returns the button.
pub fn set_toggle(
    document: &Document,
    id: &str,
    on: bool,
    label: &str,
) -> Result<Element, JsValue> {
    let button = by_id(document, id)?;
    let pressed = if on { "true" } else { "false" };
    if button.get_attribute("aria-pressed").as_deref() != Some(pressed) {
        button.set_attribute("aria-pressed", pressed)?;
    }
    set_text(&button, label);
    Ok(button)
}

/// A device button the teacher turned off: disabled, and `data-blocked="teacher"`.
fn set_blocked(button: &Element, by_teacher: bool) -> Result<(), JsValue> {
    set_disabled(button, by_teacher)?;
    if button.has_attribute("data-blocked") != by_teacher {
        match by_teacher {
            true => button.set_attribute("data-blocked", "teacher")?,
            false => button.remove_attribute("data-blocked")?,
        }
    }
    Ok(())
}

/// What a role is called on the page; guests are not labelled.
pub fn role_label(role: Role) -> Option<&'static str> {
    match role {
        Role::Teacher => Some("Teacher"),
        Role::Student => Some("Student"),
        Role::Guest => None,
    }
}

/// The HUD line and, when the roster changed, the people list.
pub fn update_hud(app: &mut App) -> Result<(), JsValue> {
    let document = document()?;
    let zone = app
        .game
        .me
        .as_ref()
        .map(|me| {
            app.game
                .zone_name(me.predicted)
                .unwrap_or("Campus grounds")
                .to_owned()
        })
        .unwrap_or_default();
    let zone_el = by_id(&document, "hud-zone")?;
    if zone_el.text_content().as_deref() != Some(zone.as_str()) {
        zone_el.set_text_content(Some(&zone));
    }
    let (mic, camera) = (app.media.mic_on(), app.media.camera_on());
    // What the teacher turned off stays off: the buttons say so and cannot turn it on.
    let blocked = app.game.my_blocks();
    let mic_label = match (blocked.mic, mic) {
        (true, _) => "Muted by teacher",
        (false, true) => "Mic on",
        (false, false) => "Mic off",
    };
    set_blocked(
        &set_toggle(&document, "toggle-mic", mic, mic_label)?,
        blocked.mic,
    )?;
    let camera_label = match (blocked.camera, camera) {
        (true, _) => "Camera off by teacher",
        (false, true) => "Camera on",
        (false, false) => "Camera off",
    };
    set_blocked(
        &set_toggle(&document, "toggle-camera", camera, camera_label)?,
        blocked.camera,
    )?;
    let sharing = app.media.screen.is_some();
    let screen_label = match (blocked.screen, sharing) {
        (true, _) => "Sharing stopped by teacher",
        (false, true) => "Stop sharing",
        (false, false) => "Share screen",
    };
    set_blocked(
        &set_toggle(&document, "toggle-screen", sharing, screen_label)?,
        blocked.screen,
    )?;
    // Changes in the person's situation, said through the live region.
    let situation = crate::announce::Situation {
        joined: app.game.me.is_some() && !app.link.reconnecting,
        room: app.link.room.clone(),
        blocked,
        reconnecting: app.link.reconnecting,
        recorded: app.game.class.as_ref().map(|c| c.recording),
    };
    if situation != app.situation {
        let said = crate::announce::changes(&app.situation, &situation);
        if !said.is_empty() {
            set_text(&by_id(&document, "announcer")?, &said.join(". "));
        }
        app.situation = situation;
    }
    let status_el = by_id(&document, "hud-status")?;
    set_text(&status_el, &app.status);
    let notice: HtmlElement = by_id(&document, "notice")?.dyn_into()?;
    let now = now_ms();
    if let Some(text) = app.game.notice.take() {
        // Text from the network: as text, never markup.
        notice.set_text_content(Some(&text));
        notice.set_hidden(false);
        app.notice_until_ms = now + NOTICE_MS;
    } else if !notice.hidden() && now > app.notice_until_ms {
        notice.set_hidden(true);
    }
    if app.game.roster_dirty {
        app.game.roster_dirty = false;
        let list = by_id(&document, "people-list")?;
        list.set_text_content(None);
        let me = app.game.me.as_ref().map(|m| m.id);
        for (id, name) in &app.game.people {
            let li = document.create_element("li")?;
            // Names are text, never markup.
            li.set_text_content(Some(name));
            if Some(*id) == me {
                li.set_attribute("aria-current", "true")?;
                let you = document.create_element("span")?;
                you.set_class_name("you");
                you.set_text_content(Some(" (you)"));
                li.append_child(&you)?;
            }
            if app.game.reconnecting.contains(id) {
                let away = document.create_element("span")?;
                away.set_class_name("reconnecting");
                away.set_text_content(Some(" (reconnecting…)"));
                li.append_child(&away)?;
            }
            // Everyone's role, from the server: a guest who takes a teacher's name still
            // shows as a guest.
            let role = app.game.roles.get(id).copied().unwrap_or(Role::Guest);
            let badge = document.create_element("span")?;
            badge.set_class_name(&format!("role-badge role-{}", role.as_str()));
            badge.set_text_content(Some(role_label(role).unwrap_or("Guest")));
            li.append_child(&badge)?;
            list.append_child(&li)?;
        }
        by_id(&document, "people-count")?
            .set_text_content(Some(&format!("({})", app.game.people.len())));
        app.chat.set_recipients(&app.game)?;
    }
    Ok(())
}
