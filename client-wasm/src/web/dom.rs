//! The page's DOM: the lobby, the HUD (with the notice toast `#notice`), the people list
//! (real, accessible elements), the keyboard, the URL parameters.

use super::{App, AppRef, PageParams, join};
use quad_shared::movement::dir;
use quad_shared::protocol::Role;
use wasm_bindgen::prelude::*;
use web_sys::{
    Document, Element, EventTarget, HtmlElement, HtmlInputElement, KeyboardEvent, Window,
};

/// How long a notice stays up, ms.
const NOTICE_MS: f64 = 6000.0;

pub fn window() -> Result<Window, JsValue> {
    web_sys::window().ok_or_else(|| "no window".into())
}

pub fn document() -> Result<Document, JsValue> {
    window()?.document().ok_or_else(|| "no document".into())
}

pub fn by_id(document: &Document, id: &str) -> Result<Element, JsValue> {
    document
        .get_element_by_id(id)
        .ok_or_else(|| format!("the page has no #{id}").into())
}

pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

pub fn request_frame(f: &Closure<dyn FnMut(f64)>) -> Result<i32, JsValue> {
    window()?.request_animation_frame(f.as_ref().unchecked_ref())
}

/// Calls `f` on every `event` at `target`, for as long as the app lives.
pub fn listen(
    app: &AppRef,
    target: &impl AsRef<EventTarget>,
    event: &str,
    f: impl FnMut(web_sys::Event) + 'static,
) -> Result<(), JsValue> {
    let closure = Closure::<dyn FnMut(web_sys::Event)>::new(f);
    target
        .as_ref()
        .add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())?;
    keep(app, closure);
    Ok(())
}

/// The element an event happened on.
pub fn event_element(e: &web_sys::Event) -> Option<Element> {
    e.target()?.dyn_into().ok()
}

/// Reads the page's options (see [`PageParams`]).
pub fn page_params() -> Result<PageParams, JsValue> {
    let search = window()?.location().search()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search)?;
    let name = params.get("name").filter(|n| !n.trim().is_empty());
    let token = params.get("token").filter(|t| !t.trim().is_empty());
    let spawn = params.get("spawn").and_then(|s| {
        let (x, y) = s.split_once(',')?;
        Some([x.trim().parse().ok()?, y.trim().parse().ok()?])
    });
    let flag =
        |key: &str, default: bool| params.get(key).map_or(default, |v| v == "1" || v == "true");
    Ok(PageParams {
        name,
        token,
        spawn,
        mic: flag("mic", true),
        camera: flag("camera", false),
        relay: flag("relay", false),
        fakescreen: flag("fakescreen", false),
    })
}

pub fn set_hidden(id: &str, hidden: bool) -> Result<(), JsValue> {
    let el: HtmlElement = by_id(&document()?, id)?.dyn_into()?;
    if el.hidden() != hidden {
        el.set_hidden(hidden);
    }
    Ok(())
}

/// Sets or removes `disabled` when it changes.
pub fn set_disabled(el: &Element, disabled: bool) -> Result<(), JsValue> {
    if el.has_attribute("disabled") != disabled {
        el.toggle_attribute_with_force("disabled", disabled)?;
    }
    Ok(())
}

/// Sets an element's text when it changes. For text from the network too: it is text,
/// never markup.
pub fn set_text(el: &Element, text: &str) {
    if el.text_content().as_deref() != Some(text) {
        el.set_text_content(Some(text));
    }
}

/// Shows the lobby with an error message (empty for none).
pub fn show_lobby(error: &str) -> Result<(), JsValue> {
    set_hidden("lobby", false)?;
    set_hidden("campus", true)?;
    by_id(&document()?, "lobby-error")?.set_text_content(Some(error));
    if let Ok(input) = by_id(&document()?, "lobby-name")?.dyn_into::<HtmlInputElement>() {
        let _ = input.focus();
    }
    Ok(())
}

pub fn show_campus() -> Result<(), JsValue> {
    set_hidden("lobby", true)?;
    set_hidden("campus", false)?;
    let canvas: HtmlElement = by_id(&document()?, "world")?.dyn_into()?;
    canvas.focus()
}

/// The lobby form joins under the typed name.
pub fn install_lobby(app: &AppRef) -> Result<(), JsValue> {
    let document = document()?;
    let form = by_id(&document, "lobby-form")?;
    let weak = app.clone();
    let on_submit = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        e.prevent_default();
        let input = |id: &str| {
            document
                .get_element_by_id(id)
                .and_then(|el| el.dyn_into::<HtmlInputElement>().ok())
        };
        let name = input("lobby-name").map(|i| i.value()).unwrap_or_default();
        let mic = input("lobby-mic").is_some_and(|i| i.checked());
        let camera = input("lobby-camera").is_some_and(|i| i.checked());
        if let Some(a) = weak.upgrade() {
            a.borrow().media.resume_audio();
        }
        join(&weak, name, mic, camera);
    });
    form.add_event_listener_with_callback("submit", on_submit.as_ref().unchecked_ref())?;
    keep(app, on_submit);
    Ok(())
}

pub fn keep<T: 'static>(app: &AppRef, handler: T) {
    if let Some(a) = app.upgrade() {
        a.borrow_mut().handlers.push(Box::new(handler));
    }
}

/// The lobby's device checkboxes show a live preview of what will be shared.
pub fn install_device_preview(app: &AppRef) -> Result<(), JsValue> {
    let document = document()?;
    let weak = app.clone();
    let on_change = Closure::<dyn FnMut()>::new(move || {
        let weak = weak.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let Ok(document) = self::document() else {
                return;
            };
            let checked = |id: &str| {
                document
                    .get_element_by_id(id)
                    .and_then(|el| el.dyn_into::<HtmlInputElement>().ok())
                    .is_some_and(|i| i.checked())
            };
            let (mic, camera) = (checked("lobby-mic"), checked("lobby-camera"));
            if let Some(a) = weak.upgrade()
                && let Some(old) = a.borrow_mut().media.local.take()
            {
                old.get_tracks().iter().for_each(|t| {
                    if let Ok(t) = t.dyn_into::<web_sys::MediaStreamTrack>() {
                        t.stop();
                    }
                });
            }
            let local = super::peers::acquire_local(mic, camera).await;
            if let Ok(preview) = by_id(&document, "lobby-preview")
                && let Ok(video) = preview.dyn_into::<web_sys::HtmlVideoElement>()
            {
                video.set_src_object(local.as_ref());
                video.set_hidden(!camera || local.is_none());
            }
            let note = match (&local, mic || camera) {
                (None, true) => "No access to the chosen devices: you can still join without them.",
                _ => "",
            };
            if let Ok(el) = by_id(&document, "lobby-error") {
                el.set_text_content(Some(note));
            }
            if let Some(a) = weak.upgrade() {
                a.borrow_mut().media.local = local;
            }
        });
    });
    for id in ["lobby-mic", "lobby-camera"] {
        by_id(&document, id)?
            .add_event_listener_with_callback("change", on_change.as_ref().unchecked_ref())?;
    }
    keep(app, on_change);
    Ok(())
}

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

/// Resolves after `ms` milliseconds (a `setTimeout`); at once if there is no window.
pub async fn sleep_ms(ms: f64) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Ok(w) = window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms as i32);
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
