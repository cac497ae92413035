//! The lobby: the page's options from its URL ([`page_params`]), the join form with its
//! device checkboxes and their live preview, and switching between the lobby and the
//! campus.

use super::dom::{by_id, document, keep, set_hidden, window};
use super::media::acquire_local;
use super::{AppRef, PageParams, join};
use wasm_bindgen::prelude::*;
use web_sys::{HtmlElement, HtmlInputElement};

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
            let local = acquire_local(mic, camera).await;
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
