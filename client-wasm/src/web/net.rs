//! The WebSocket to the server (binary MessagePack frames), and the `Hello` that opens a
//! session: the join link's token (`?token=`) and this browser's device key. A `Ping`
//! every [`KEEPALIVE_MS`] keeps a session open while its person does nothing (the server
//! closes sessions that send nothing for `idle_timeout_secs`).
//!
//! A connection that drops is not the end of the visit ([`Link`]): the page says
//! "Reconnecting…", closes its media (it cannot negotiate without the server), and connects
//! again after a backoff with jitter, so that a campus's clients do not all return in the
//! same second (or when the server said, if it announced a restart). Its `Hello` carries the
//! resume token from `Welcome`: within the server's grace period the session goes on (same
//! avatar, place and room); otherwise it joins afresh under the same name and link, asking
//! for the room it was in.

use super::{App, AppRef, classroom, dom, hallway, lobby, on_server_message, send};
pub use crate::reconnect::Link;
use quad_shared::codec;
use quad_shared::protocol::{ClientMsg, Hello, PROTOCOL_VERSION, ServerMsg};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// Where this browser keeps its device key.
const DEVICE_KEY: &str = "quad.device";

/// How often an open session pings the server, milliseconds: 8 pings in the server's
/// default idle timeout (120 s). A tab hidden for long may have its timers throttled to
/// once a minute (Chrome's intensive throttling); that still pings twice per timeout.
const KEEPALIVE_MS: i32 = 15_000;

/// The close code the page uses to drop its own connection for a test (`quad.dropConnection()`):
/// not a normal close, so the server keeps the session for a resume.
pub const DROPPED_BY_PAGE: u16 = 4001;

thread_local! {
    /// Whether the keepalive interval runs (one per page, for whichever socket is current).
    static KEEPALIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Starts the page's keepalive, once: a `Ping` on the current socket every [`KEEPALIVE_MS`].
fn start_keepalive(app: &AppRef, a: &mut App) -> Result<(), JsValue> {
    if KEEPALIVE.with(|k| k.replace(true)) {
        return Ok(());
    }
    let mut nonce: u32 = 0;
    let tick = {
        let app = app.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(a) = app.upgrade()
                && let Ok(a) = a.try_borrow()
            {
                nonce = nonce.wrapping_add(1);
                send(&a.ws, &ClientMsg::Ping { nonce });
            }
        })
    };
    dom::window()?.set_interval_with_callback_and_timeout_and_arguments_0(
        tick.as_ref().unchecked_ref(),
        KEEPALIVE_MS,
    )?;
    a.handlers.push(Box::new(tick));
    Ok(())
}

/// Says Hello as `name`: on the socket of a refused Hello if it is still open (the server
/// keeps such a session waiting for another Hello: a fixed name, or no token after a link
/// was refused), else on a new connection.
pub fn join(app: &AppRef, name: String) -> Result<(), JsValue> {
    let app_rc = app.upgrade().ok_or("app gone")?;
    {
        let mut a = app_rc.borrow_mut();
        let open =
            a.ws.as_ref()
                .is_some_and(|ws| ws.ready_state() == WebSocket::OPEN);
        if open && a.game.me.is_none() {
            send(&a.ws, &hello(&a, name));
            a.status = "Joining…".into();
            return Ok(());
        }
    }
    connect(app, name)
}

/// The Hello for `name`, with the page's token (unless the server refused it) and spawn;
/// when reconnecting, with the resume token and the room the avatar was in.
fn hello(a: &App, name: String) -> ClientMsg {
    let back = a.link.reconnecting;
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: if back {
            a.link.name.clone().unwrap_or(name)
        } else {
            name
        },
        token: a.params.token.clone(),
        spawn: a.params.spawn,
        device: device_key(),
        resume: a.link.resume.clone().filter(|_| back),
        room: a.link.room.clone().filter(|_| back),
    })
}

/// The connection dropped while in the space (or while trying to get back): media closes,
/// the page forgets the space's state, and the next attempt is scheduled.
fn connection_lost(app: &AppRef, reason: &str) {
    let Some(app_rc) = app.upgrade() else { return };
    let peers: Vec<_> = app_rc.borrow().media.peers.keys().copied().collect();
    for peer in peers {
        hallway::disconnect(app, peer);
    }
    classroom::leave(app, None);
    let delay = {
        let mut a = app_rc.borrow_mut();
        a.game.connection_lost();
        a.link.reconnecting = true;
        a.link.attempt += 1;
        let delay = a.link.next_delay_ms(js_sys::Math::random());
        a.status = format!(
            "Reconnecting… ({reason}; trying again in {:.0} s)",
            (delay / 1000.0).ceil()
        );
        delay
    };
    let app = app.clone();
    let retry = Closure::once_into_js(move || {
        let name = app
            .upgrade()
            .and_then(|a| a.borrow().link.name.clone())
            .unwrap_or_else(|| "Guest".into());
        if let Err(e) = connect(&app, name) {
            web_sys::console::warn_2(&"reconnecting:".into(), &e);
        }
    });
    if let Ok(window) = dom::window() {
        let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
            retry.unchecked_ref(),
            delay as i32,
        );
    }
}

/// Drops the current connection as a network cut would (for tests: the page reconnects,
/// after `hold_ms` if given, as if the network were down that long).
pub fn drop_connection(app: &AppRef, hold_ms: Option<u32>) {
    let Some(app_rc) = app.upgrade() else { return };
    let mut a = app_rc.borrow_mut();
    if hold_ms.is_some() {
        a.link.retry_hint_ms = hold_ms;
    }
    if let Some(ws) = &a.ws {
        let _ = ws.close_with_code_and_reason(DROPPED_BY_PAGE, "dropped by the page");
    }
}

/// This browser's device key: 32 hex digits kept in `localStorage`, made on the first
/// visit. `None` where the page cannot keep one (no storage, or storage refused).
fn device_key() -> Option<String> {
    let window = web_sys::window()?;
    let storage = window.local_storage().ok()??;
    if let Ok(Some(key)) = storage.get_item(DEVICE_KEY)
        && key.len() == 32
        && key.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some(key);
    }
    let mut bytes = [0u8; 16];
    window
        .crypto()
        .ok()?
        .get_random_values_with_u8_array(&mut bytes)
        .ok()?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // A key that is not kept would be a new one every visit: no key is more honest.
    storage.set_item(DEVICE_KEY, &key).ok()?;
    Some(key)
}

fn connect(app: &AppRef, name: String) -> Result<(), JsValue> {
    let app_rc = app.upgrade().ok_or("app gone")?;
    let location = dom::window()?.location();
    let scheme = if location.protocol()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    let ws = WebSocket::new(&format!("{scheme}://{}/ws", location.host()?))?;
    ws.set_binary_type(BinaryType::Arraybuffer);

    let on_open = {
        let app = app.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(a) = app.upgrade() {
                let a = a.borrow();
                send(&a.ws, &hello(&a, name.clone()));
            }
        })
    };
    let on_message = {
        let app = app.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Ok(buf) = e.data().dyn_into::<js_sys::ArrayBuffer>() else {
                return;
            };
            let bytes = js_sys::Uint8Array::new(&buf).to_vec();
            match codec::decode::<ServerMsg>(&bytes) {
                Ok(msg) => on_server_message(&app, msg),
                Err(err) => {
                    web_sys::console::warn_1(&format!("bad frame from server: {err}").into())
                }
            }
        })
    };
    let on_close = {
        let app = app.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            // A socket we replaced (a new Join) closing says nothing about the current one.
            let target = e.target();
            let current = app
                .upgrade()
                .is_some_and(|a| match (&a.borrow().ws, &target) {
                    (Some(ws), Some(target)) => {
                        AsRef::<JsValue>::as_ref(ws) == AsRef::<JsValue>::as_ref(target)
                    }
                    _ => false,
                });
            if !current {
                return;
            }
            let reason = if e.reason().is_empty() {
                "connection lost".to_owned()
            } else {
                e.reason()
            };
            let mut lost = false;
            if let Some(a) = app.upgrade() {
                let mut a = a.borrow_mut();
                a.ws = None;
                if a.game.me.is_some() || a.link.reconnecting {
                    // In the space, or trying to get back: try (again).
                    lost = true;
                } else {
                    // Not in yet (e.g. the server stopped waiting for a corrected name):
                    // Join opens a new connection.
                    a.status = format!("Not connected ({reason}): press Join to try again.");
                    let _ = lobby::show_lobby(&a.status);
                }
            }
            if lost {
                connection_lost(&app, &reason);
            } else {
                // Without signaling the SFU connection cannot go on.
                classroom::leave(&app, None);
            }
        })
    };
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));

    let mut a = app_rc.borrow_mut();
    if let Some(old) = a.ws.take() {
        let _ = old.close();
    }
    a.ws = Some(ws);
    if !a.link.reconnecting {
        a.status = "Connecting…".into();
    }
    a.handlers.push(Box::new(on_open));
    a.handlers.push(Box::new(on_message));
    a.handlers.push(Box::new(on_close));
    start_keepalive(app, &mut a)?;
    Ok(())
}
