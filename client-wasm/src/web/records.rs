//! Class records on the page: the records panel (`#records`, opened by `#open-records`)
//! lists the recordings this person may watch (play in the panel's player, download,
//! and for a teacher of the class, share with its students) and a teacher's class
//! registers (CSV); and the live register (`#class-register`) in a teacher's room panel,
//! sortable by any column. Links come signed from the server and last an hour: the panel
//! asks for the list again each time it opens. What the lengths and the order are is
//! [`crate::records`]'s.

use super::{App, AppRef, dom, send};
use crate::records::{Column, Sort, duration_text, size_text};
use quad_shared::protocol::{ClientMsg, ReportRow};
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, HtmlElement, HtmlVideoElement};

/// The page's side of the records, kept in the app.
#[derive(Debug, Default)]
pub struct RecordsUi {
    /// How the live register is sorted.
    sort: Sort,
}

pub fn install(app: &AppRef) -> Result<(), JsValue> {
    let document = dom::document()?;
    let weak = app.clone();
    dom::listen(
        app,
        &dom::by_id(&document, "open-records")?,
        "click",
        move |_| {
            let Some(a) = weak.upgrade() else { return };
            let Ok(a) = a.try_borrow() else { return };
            let Ok(panel) = dom::document().and_then(|d| dom::by_id(&d, "records")) else {
                return;
            };
            let Ok(panel) = panel.dyn_into::<HtmlElement>() else {
                return;
            };
            let open = panel.hidden();
            panel.set_hidden(!open);
            let _ = set_expanded("open-records", open);
            if open {
                send(&a.ws, &ClientMsg::Records);
            } else {
                let _ = stop_player();
            }
        },
    )?;
    let weak = app.clone();
    dom::listen(app, &dom::by_id(&document, "records")?, "click", move |e| {
        let Some(button) = dom::event_element(&e).and_then(|el| el.closest("button").ok()?) else {
            return;
        };
        let Some(a) = weak.upgrade() else { return };
        let Ok(a) = a.try_borrow() else { return };
        if button.id() == "records-close" {
            let _ = dom::set_hidden("records", true);
            let _ = set_expanded("open-records", false);
            let _ = stop_player();
            return;
        }
        let id = button.get_attribute("data-id").unwrap_or_default();
        if button.class_list().contains("share") {
            let shared = button.get_attribute("aria-pressed").as_deref() != Some("true");
            send(&a.ws, &ClientMsg::ShareRecording { id, shared });
        } else if button.class_list().contains("play")
            && let Some(url) = button.get_attribute("data-url")
        {
            let _ = play(&url);
        }
    })?;
    let weak = app.clone();
    dom::listen(
        app,
        &dom::by_id(&document, "class-register")?,
        "click",
        move |e| {
            let Some(column) = dom::event_element(&e)
                .and_then(|el| el.closest("button[data-sort]").ok()?)
                .and_then(|b| b.get_attribute("data-sort"))
                .and_then(|k| Column::from_key(&k))
            else {
                return;
            };
            if let Some(a) = weak.upgrade()
                && let Ok(mut a) = a.try_borrow_mut()
            {
                a.records_ui.sort = a.records_ui.sort.clicked(column);
                a.game.report_dirty = true;
            }
        },
    )?;
    Ok(())
}

fn set_expanded(id: &str, expanded: bool) -> Result<(), JsValue> {
    dom::by_id(&dom::document()?, id)?.set_attribute("aria-expanded", &expanded.to_string())
}

fn player() -> Result<HtmlVideoElement, JsValue> {
    Ok(dom::by_id(&dom::document()?, "records-player")?.dyn_into()?)
}

fn play(url: &str) -> Result<(), JsValue> {
    let video = player()?;
    video.set_src(url);
    video.set_hidden(false);
    let _ = video.play();
    Ok(())
}

fn stop_player() -> Result<(), JsValue> {
    let video = player()?;
    let _ = video.pause();
    video.remove_attribute("src")?;
    video.set_hidden(true);
    Ok(())
}

/// Redraws the records panel and the live register when what they show changed.
pub fn update(a: &mut App) -> Result<(), JsValue> {
    if a.game.records_dirty {
        a.game.records_dirty = false;
        render_records(a)?;
    }
    if a.game.report_dirty {
        a.game.report_dirty = false;
        render_register(a)?;
    }
    Ok(())
}

fn cell(document: &Document, row: &Element, text: &str) -> Result<Element, JsValue> {
    let td = document.create_element("td")?;
    // Names and rooms are text, never markup.
    td.set_text_content(Some(text));
    row.append_child(&td)?;
    Ok(td)
}

/// A local date and time for `ms` since the Unix epoch.
fn when(ms: u64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    String::from(date.to_locale_string("default", &JsValue::UNDEFINED))
}

fn render_records(a: &App) -> Result<(), JsValue> {
    let document = dom::document()?;
    let Some(list) = a.game.records.as_ref() else {
        return Ok(());
    };
    let recordings = dom::by_id(&document, "records-recordings")?;
    recordings.set_text_content(None);
    for r in &list.recordings {
        let tr = document.create_element("tr")?;
        tr.set_attribute("data-id", &r.id)?;
        cell(&document, &tr, &when(r.started_ms))?;
        cell(&document, &tr, &r.room)?;
        cell(&document, &tr, &duration_text(r.duration_ms))?;
        let state = match r.state.as_str() {
            "ready" => size_text(r.bytes),
            "recording" => "recording…".to_owned(),
            "mixing" => "being made…".to_owned(),
            _ if r.message.is_empty() => "could not be made".to_owned(),
            _ => format!("could not be made: {}", r.message),
        };
        cell(&document, &tr, &state)?;
        let actions = cell(&document, &tr, "")?;
        if let Some(url) = &r.play_url {
            let play = document.create_element("button")?;
            play.set_attribute("type", "button")?;
            play.set_class_name("play");
            play.set_attribute("data-url", url)?;
            play.set_attribute("aria-label", &format!("Play the recording of {}", r.room))?;
            play.set_text_content(Some("Play"));
            actions.append_child(&play)?;
        }
        if let Some(url) = &r.download_url {
            let link = document.create_element("a")?;
            link.set_attribute("href", url)?;
            link.set_attribute("download", "")?;
            link.set_class_name("download");
            link.set_text_content(Some("Download"));
            actions.append_child(&link)?;
        }
        if r.may_share {
            let share = document.create_element("button")?;
            share.set_attribute("type", "button")?;
            share.set_class_name("share");
            share.set_attribute("data-id", &r.id)?;
            share.set_attribute("aria-pressed", &r.shared.to_string())?;
            share.set_text_content(Some(if r.shared {
                "Shared with the class"
            } else {
                "Share with the class"
            }));
            actions.append_child(&share)?;
        }
        recordings.append_child(&tr)?;
    }
    dom::set_hidden("records-none", !list.recordings.is_empty())?;
    let classes = dom::by_id(&document, "records-classes")?;
    classes.set_text_content(None);
    for c in &list.classes {
        let tr = document.create_element("tr")?;
        cell(&document, &tr, &when(c.started_ms))?;
        cell(&document, &tr, &c.room)?;
        cell(&document, &tr, &c.people.to_string())?;
        let actions = cell(&document, &tr, "")?;
        let link = document.create_element("a")?;
        link.set_attribute("href", &c.csv_url)?;
        link.set_attribute("download", "")?;
        link.set_class_name("csv");
        link.set_text_content(Some("Attendance (CSV)"));
        actions.append_child(&link)?;
        classes.append_child(&tr)?;
    }
    dom::set_hidden("records-taught", list.classes.is_empty())?;
    Ok(())
}

fn render_register(a: &App) -> Result<(), JsValue> {
    let document = dom::document()?;
    let teaching = a.game.class.is_some() && a.game.teaches();
    let report = a.game.class_report.as_ref().filter(|_| teaching);
    dom::set_hidden("class-register", report.is_none())?;
    let Some(report) = report else {
        return Ok(());
    };
    let sort = a.records_ui.sort;
    let head = dom::by_id(&document, "class-register-head")?;
    head.set_text_content(None);
    let tr = document.create_element("tr")?;
    for column in Column::ALL {
        let th = document.create_element("th")?;
        th.set_attribute("scope", "col")?;
        let order = match (sort.by == column, sort.descending) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        };
        th.set_attribute("aria-sort", order)?;
        let button = document.create_element("button")?;
        button.set_attribute("type", "button")?;
        button.set_attribute("data-sort", column.key())?;
        button.set_text_content(Some(column.title()));
        th.append_child(&button)?;
        tr.append_child(&th)?;
    }
    head.append_child(&tr)?;
    let mut rows: Vec<ReportRow> = report.rows.clone();
    sort.apply(&mut rows);
    let body = dom::by_id(&document, "class-register-rows")?;
    body.set_text_content(None);
    for row in &rows {
        let tr = document.create_element("tr")?;
        if !row.present {
            tr.set_class_name("left");
        }
        for column in Column::ALL {
            cell(&document, &tr, &column.cell(row))?;
        }
        body.append_child(&tr)?;
    }
    Ok(())
}
