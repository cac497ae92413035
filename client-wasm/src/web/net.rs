//! The WebSocket to the server: binary MessagePack frames.

use super::{AppRef, classroom, dom, on_server_message, send};
use quad_shared::codec;
use quad_shared::protocol::{ClientMsg, Hello, PROTOCOL_VERSION, ServerMsg};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

pub fn connect(app: &AppRef, name: String) -> Result<(), JsValue> {
    let app_rc = app.upgrade().ok_or("app gone")?;
    let location = dom::window()?.location();
    let scheme = if location.protocol()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    let ws = WebSocket::new(&format!("{scheme}://{}/ws", location.host()?))?;
    ws.set_binary_type(BinaryType::Arraybuffer);

    let spawn = app_rc.borrow().params.spawn;
    let on_open = {
        let app = app.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(a) = app.upgrade() {
                let a = a.borrow();
                send(
                    &a.ws,
                    &ClientMsg::Hello(Hello {
                        version: PROTOCOL_VERSION,
                        name: name.clone(),
                        token: None,
                        spawn,
                        device: None,
                    }),
                );
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
            let reason = if e.reason().is_empty() {
                "connection lost".to_owned()
            } else {
                e.reason()
            };
            if let Some(a) = app.upgrade() {
                let mut a = a.borrow_mut();
                a.status = format!("Disconnected: {reason}. Reload to rejoin.");
                if a.game.me.is_none() {
                    let _ = dom::show_lobby(&a.status);
                }
                a.ws = None;
            }
            // Without signaling the SFU connection cannot go on.
            classroom::leave(&app, None);
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
    a.status = "Connecting…".into();
    a.handlers.push(Box::new(on_open));
    a.handlers.push(Box::new(on_message));
    a.handlers.push(Box::new(on_close));
    Ok(())
}
