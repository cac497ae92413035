//! The chat panel (`#chat`): the lines held (`#chat-log`, one `li.chat-line` per line; our
//! own lines the server could not save get the class `unsaved` and a `.chat-note`) and
//! the form that sends one (`#chat-form`: who to in `#chat-to`, the text in `#chat-input`).
//! Which lines there are is `Game`'s ([`crate::chat::ChatLog`]); this module shows them and
//! sends what is typed. Names and text from the network go in as text (`textContent`),
//! never as markup.

use super::{App, AppRef, dom, send};
use crate::chat::{
    ChatLog, NOT_SAVED_NOTE, NOT_SAVED_NOTICE, parse_recipient, recipient_value, scope_name,
};
use crate::game::Game;
use quad_shared::protocol::{ChatLine, ChatScope, ChatTo, ClientMsg, normalize_chat};
use std::collections::{HashMap, HashSet};
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, HtmlElement, HtmlInputElement, HtmlSelectElement};

/// The panel's elements, and the `<li>` of each line shown, by line id.
pub struct ChatView {
    log: Element,
    to: HtmlSelectElement,
    /// The `room` recipient, enabled only in a room.
    room_option: Element,
    /// The `<optgroup>` with one `direct:<id>` option per other person.
    direct: HtmlElement,
    items: HashMap<u64, Element>,
}

impl ChatView {
    pub fn new(document: &Document) -> Result<ChatView, JsValue> {
        let to: HtmlSelectElement = dom::by_id(document, "chat-to")?.dyn_into()?;
        let room_option = to
            .query_selector("option[value=room]")?
            .ok_or("#chat-to has no room option")?;
        Ok(ChatView {
            log: dom::by_id(document, "chat-log")?,
            to,
            room_option,
            direct: dom::by_id(document, "chat-direct")?.dyn_into()?,
            items: HashMap::new(),
        })
    }

    /// One `direct:<id>` recipient per other person in the space, keeping the choice made
    /// if that person is still here (else back to `nearby`). Called when the roster changed.
    pub fn set_recipients(&self, game: &Game) -> Result<(), JsValue> {
        let document = dom::document()?;
        let chosen = self.to.value();
        self.direct.set_text_content(None);
        let me = game.me.as_ref().map(|m| m.id);
        for (id, name) in game.people.iter().filter(|(id, _)| Some(**id) != me) {
            let option = document.create_element("option")?;
            option.set_attribute("value", &recipient_value(ChatTo::Direct(*id)))?;
            // Names are text, never markup.
            option.set_text_content(Some(name));
            self.direct.append_child(&option)?;
        }
        self.direct
            .set_hidden(self.direct.child_element_count() == 0);
        self.to.set_value(&chosen);
        if self.to.value() != chosen {
            self.to.set_value("nearby");
        }
        Ok(())
    }

    /// Brings the log up to date with `chat`: removes lines no longer held, adds new ones in
    /// their place, and follows the newest line if the reader was at the end.
    fn render(&mut self, chat: &ChatLog) -> Result<(), JsValue> {
        let document = dom::document()?;
        let log = &self.log;
        let at_end = log.scroll_top() + log.client_height() >= log.scroll_height() - 8;
        let held: HashSet<u64> = chat.lines().map(|l| l.id).collect();
        self.items.retain(|id, li| {
            let keep = held.contains(id);
            if !keep {
                li.remove();
            }
            keep
        });
        let mut previous: Option<Element> = None;
        for line in chat.lines() {
            let li = match self.items.get(&line.id) {
                Some(li) => li.clone(),
                None => {
                    let li = new_line(&document, line)?;
                    self.items.insert(line.id, li.clone());
                    li
                }
            };
            if chat.is_unsaved(line.id) && !li.class_list().contains("unsaved") {
                mark_unsaved(&document, &li)?;
            }
            let next = match &previous {
                Some(p) => p.next_element_sibling(),
                None => log.first_element_child(),
            };
            if next.as_ref() != Some(&li) {
                log.insert_before(&li, next.as_deref())?;
            }
            previous = Some(li);
        }
        if at_end {
            log.set_scroll_top(log.scroll_height());
        }
        Ok(())
    }
}

/// `<li class="chat-line" data-id data-scope>` with the sender (`.chat-from`, a `.chat-badge`
/// for teachers), the recipient of a direct message (`.chat-to`) and the text (`.chat-text`).
fn new_line(document: &Document, line: &ChatLine) -> Result<Element, JsValue> {
    let li = document.create_element("li")?;
    li.set_class_name("chat-line");
    li.set_attribute("data-id", &line.id.to_string())?;
    li.set_attribute("data-scope", scope_name(&line.scope))?;
    if let ChatScope::Room(room) = &line.scope {
        li.set_attribute("title", &format!("In {room}"))?;
    }
    let span = |class: &str, text: &str| -> Result<Element, JsValue> {
        let el = document.create_element("span")?;
        el.set_class_name(class);
        // Text from the network: as text, never markup.
        el.set_text_content(Some(text));
        li.append_child(&el)?;
        Ok(el)
    };
    span("chat-from", &line.from_name)?;
    if line.from_role.is_teacher() {
        span("chat-badge", "Teacher")?;
    }
    if let Some(to) = &line.to_name {
        span("chat-to", &format!("to {to}"))?;
    }
    span("chat-text", &line.text)?;
    Ok(li)
}

/// Marks a line the server could not save: class `unsaved` and a `.chat-note`.
fn mark_unsaved(document: &Document, li: &Element) -> Result<(), JsValue> {
    li.class_list().add_1("unsaved")?;
    let note = document.create_element("span")?;
    note.set_class_name("chat-note");
    note.set_text_content(Some(NOT_SAVED_NOTE));
    note.set_attribute("title", NOT_SAVED_NOTICE)?;
    li.append_child(&note)?;
    Ok(())
}

/// The form sends what is typed (Enter or the button) and clears it; Escape goes back to
/// the map.
pub fn install(app: &AppRef) -> Result<(), JsValue> {
    let document = dom::document()?;
    let input: HtmlInputElement = dom::by_id(&document, "chat-input")?.dyn_into()?;
    let form = dom::by_id(&document, "chat-form")?;
    let weak = app.clone();
    let typed = input.clone();
    dom::listen(app, &form, "submit", move |e| {
        e.prevent_default();
        let text = typed.value();
        if text.trim().is_empty() {
            return;
        }
        let Some(app) = weak.upgrade() else { return };
        let Ok(mut a) = app.try_borrow_mut() else {
            return;
        };
        let to = parse_recipient(&a.chat.to.value()).unwrap_or(ChatTo::Nearby);
        match normalize_chat(&text) {
            Ok(text) => {
                send(&a.ws, &ClientMsg::Chat { to, text });
                typed.set_value("");
            }
            Err(e) => a.game.notice = Some(e.message),
        }
    })?;
    dom::listen(app, &input, "keydown", move |e| {
        if e.dyn_ref::<web_sys::KeyboardEvent>()
            .is_some_and(|k| k.key() == "Escape")
            && let Ok(world) = dom::document().and_then(|d| dom::by_id(&d, "world"))
            && let Ok(world) = world.dyn_into::<HtmlElement>()
        {
            let _ = world.focus();
        }
    })?;
    Ok(())
}

/// Brings the panel up to date, every frame; touches the DOM only when something changed.
pub fn update(app: &mut App) -> Result<(), JsValue> {
    let in_room = app.media.room.is_some();
    let view = &mut app.chat;
    if view.room_option.has_attribute("disabled") == in_room {
        dom::set_disabled(&view.room_option, !in_room)?;
        if !in_room && view.to.value() == "room" {
            view.to.set_value("nearby");
        }
    }
    if app.game.chat.dirty {
        app.game.chat.dirty = false;
        view.render(&app.game.chat)?;
    }
    Ok(())
}
