//! The page's DOM helpers: the window and document, elements by id, listeners kept alive
//! with the app, and setting text, `hidden` and `disabled` only when they change.

use super::AppRef;
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, EventTarget, HtmlElement, Window};

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

pub fn keep<T: 'static>(app: &AppRef, handler: T) {
    if let Some(a) = app.upgrade() {
        a.borrow_mut().handlers.push(Box::new(handler));
    }
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
