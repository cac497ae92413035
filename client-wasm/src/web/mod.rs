//! The browser facade: wires DOM events, the WebSocket and the animation frame to
//! [`crate::game::Game`]. Closures are kept in [`App::handlers`] (never `forget`-ed) and hold
//! only a weak reference to the app, so there is no reference cycle.

mod chat;
mod class;
mod classroom;
mod controls;
mod dom;
mod hallway;
mod lobby;
mod media;
mod net;
mod records;
mod render;
mod rtc;
mod screen;
mod test_surface;

use crate::game::Game;
use quad_shared::codec;
use quad_shared::protocol::{ClientMsg, ErrorCode, ServerMsg};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, WebSocket};

thread_local! {
    /// The one app of this page; everything else holds weak references to it.
    static APP: RefCell<Option<Rc<RefCell<App>>>> = const { RefCell::new(None) };
}

/// What the page's URL asks for.
#[derive(Debug, Default, Clone)]
pub struct PageParams {
    /// `?name=...`: join at once under this name.
    pub name: Option<String>,
    /// `?token=...`: a join link's token, sent in `Hello` (the server takes the name from
    /// it); joins at once. Dropped when the server refuses it, so the lobby joins as a guest.
    pub token: Option<String>,
    /// `?spawn=X,Y`: where to appear (servers in `--dev` mode only).
    pub spawn: Option<[f32; 2]>,
    /// `?mic=0|1` (default 1) and `?camera=0|1` (default 0): devices to use when joining
    /// straight from the URL.
    pub mic: bool,
    pub camera: bool,
    /// `?relay=1`: force media through TURN (servers in `--dev` mode).
    pub relay: bool,
    /// `?fakescreen=1`: share a drawn canvas instead of asking for a screen (servers in
    /// `--dev` mode; for headless tests, see `screen`).
    pub fakescreen: bool,
}

pub struct App {
    pub(crate) game: Game,
    canvas: HtmlCanvasElement,
    ctx: CanvasRenderingContext2d,
    ws: Option<WebSocket>,
    keys: u8,
    /// Where a finger (or a mouse button) is held on the map, in canvas pixels: the avatar
    /// walks toward it (`controls::install_pointer_walk`).
    pointer: Option<glam::Vec2>,
    /// The last frame's camera origin (world pixels at the canvas's top left).
    view_origin: Option<glam::Vec2>,
    params: PageParams,
    renderer: Option<render::MapRenderer>,
    last_frame_ms: Option<f64>,
    status: String,
    pub(crate) media: media::Media,
    /// The chat panel.
    chat: chat::ChatView,
    /// The page's side of the class.
    class_ui: class::ClassUi,
    /// The page's side of class records.
    records_ui: records::RecordsUi,
    /// When the notice toast (`#notice`) hides, `performance.now()` ms.
    notice_until_ms: f64,
    /// What the live region (`#announcer`) last said the person's situation was.
    situation: crate::announce::Situation,
    /// ICE servers for peer connections (from `Welcome`).
    ice_servers: JsValue,
    /// What the page keeps to get its session back after the connection drops.
    link: net::Link,
    /// Event closures, alive as long as the app.
    handlers: Vec<Box<dyn std::any::Any>>,
    raf: Option<Closure<dyn FnMut(f64)>>,
}

type AppRef = Weak<RefCell<App>>;

#[wasm_bindgen(start)]
pub fn start() -> Result<(), JsValue> {
    let document = dom::document()?;
    let canvas: HtmlCanvasElement = dom::by_id(&document, "world")?.dyn_into()?;
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")?
        .ok_or("no 2d canvas context")?
        .dyn_into()?;
    let app = Rc::new(RefCell::new(App {
        game: Game::default(),
        canvas,
        ctx,
        ws: None,
        keys: 0,
        pointer: None,
        view_origin: None,
        params: lobby::page_params()?,
        renderer: None,
        last_frame_ms: None,
        status: String::new(),
        media: media::Media::default(),
        chat: chat::ChatView::new(&document)?,
        class_ui: class::ClassUi::default(),
        records_ui: records::RecordsUi::default(),
        notice_until_ms: 0.0,
        situation: Default::default(),
        ice_servers: js_sys::Array::new().into(),
        link: net::Link::default(),
        handlers: Vec::new(),
        raf: None,
    }));
    let weak = Rc::downgrade(&app);
    APP.with(|slot| *slot.borrow_mut() = Some(app.clone()));

    controls::install_keyboard(&weak)?;
    controls::install_pointer_walk(&weak)?;
    controls::install_drawers(&weak)?;
    lobby::install_lobby(&weak)?;
    lobby::install_device_preview(&weak)?;
    controls::install_media_buttons(&weak)?;
    chat::install(&weak)?;
    class::install(&weak)?;
    records::install(&weak)?;
    test_surface::install(&weak)?;
    start_frames(&weak)?;

    let params = app.borrow().params.clone();
    match (params.name, params.token) {
        (Some(name), _) => join(&weak, name, params.mic, params.camera),
        // The server names people with a link; Hello still needs a name.
        (None, Some(_)) => join(&weak, "Guest".into(), params.mic, params.camera),
        (None, None) => lobby::show_lobby("")?,
    }
    Ok(())
}

/// Takes the chosen devices, then says Hello as `name` (connecting if need be).
pub(crate) fn join(app: &AppRef, name: String, mic: bool, camera: bool) {
    let app = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let have = app
            .upgrade()
            .is_some_and(|a| a.borrow().media.local.is_some());
        if !have {
            let local = media::acquire_local(mic, camera).await;
            if let Some(a) = app.upgrade() {
                let mut a = a.borrow_mut();
                if local.is_none() && (mic || camera) {
                    a.status = "No microphone or camera: joining without them".into();
                }
                a.media.local = local;
            }
        }
        if let Err(e) = net::join(&app, name) {
            let _ = lobby::show_lobby(&format!("Cannot connect: {e:?}"));
        }
    });
}

/// Sends a message if connected.
pub(crate) fn send(ws: &Option<WebSocket>, msg: &ClientMsg) {
    let (Some(ws), Ok(frame)) = (ws, codec::encode(msg)) else {
        return;
    };
    if ws.ready_state() == WebSocket::OPEN {
        let _ = ws.send_with_u8_array(&frame);
    }
}

/// Handles one decoded message from the server.
pub(crate) fn on_server_message(app: &AppRef, msg: ServerMsg) {
    // Peer messages open and close connections, which borrow the app themselves.
    let msg = match msg {
        ServerMsg::ConnectPeer {
            peer,
            polite,
            media,
        } => {
            if let Err(e) = hallway::connect(app, peer, polite, media) {
                web_sys::console::warn_1(&e);
                no_webrtc(app);
            }
            return;
        }
        ServerMsg::PeerMedia { peer, media } => {
            if let Some(a) = app.upgrade()
                && let Some(p) = a.borrow_mut().media.peers.get_mut(&peer)
            {
                p.remote = media;
            }
            return;
        }
        ServerMsg::DisconnectPeer { peer } => return hallway::disconnect(app, peer),
        ServerMsg::Signal { from, signal } => return hallway::on_signal(app, from, signal),
        ServerMsg::JoinRoomMedia { room, name } => {
            if let Some(a) = app.upgrade() {
                a.borrow_mut().link.room = Some(name.clone());
            }
            if let Err(e) = classroom::join(app, room, name) {
                web_sys::console::warn_2(&"cannot open the classroom connection:".into(), &e);
                no_webrtc(app);
            }
            return;
        }
        ServerMsg::LeaveRoomMedia { room } => {
            if let Some(a) = app.upgrade() {
                a.borrow_mut().link.room = None;
            }
            return classroom::leave(app, Some(room));
        }
        ServerMsg::Restarting { retry_after_ms } => {
            if let Some(a) = app.upgrade() {
                let mut a = a.borrow_mut();
                a.link.retry_hint_ms = Some(retry_after_ms);
                a.status = format!(
                    "The server is restarting: back in about {} s",
                    retry_after_ms.div_ceil(1000)
                );
            }
            return;
        }
        ServerMsg::RoomSignal(signal) => return classroom::on_signal(app, signal),
        ServerMsg::RoomMembers { room, members } => {
            return classroom::on_members(app, room, members);
        }
        ServerMsg::RoomSpeakers { room, speakers } => {
            return classroom::on_speakers(app, room, speakers);
        }
        ServerMsg::IceServers { servers } => return rtc::renew_ice_servers(app, &servers),
        other => other,
    };
    let Some(app_rc) = app.upgrade() else { return };
    let (welcomed, class_changed);
    {
        let mut a = app_rc.borrow_mut();
        let before = a.game.me.is_some();
        if let ServerMsg::Welcome(w) = &msg {
            if a.link.reconnecting {
                a.game.notice = Some(if w.resumed {
                    "Reconnected".to_owned()
                } else {
                    "Reconnected: you joined again".to_owned()
                });
            }
            a.link.welcomed(w);
            a.ice_servers = rtc::ice_servers(&w.ice_servers);
            // Test options: honoured only by servers in development mode.
            a.media.relay_only = a.params.relay && w.dev;
            a.media.fake_screen = a.params.fakescreen && w.dev;
        }
        if let ServerMsg::Error(e) = &msg {
            if !before && a.link.reconnecting {
                match e.code {
                    // A new server version: the page must be the new one too.
                    ErrorCode::VersionMismatch => {
                        if let Ok(w) = dom::window() {
                            let _ = w.location().reload();
                        }
                    }
                    // Full or busy: the server closes; the next attempt follows.
                    ErrorCode::Unavailable | ErrorCode::RateLimited => {}
                    _ => {
                        // Refused (an expired link): the person decides in the lobby.
                        a.link.reconnecting = false;
                        let _ = lobby::show_lobby(&e.message);
                    }
                }
            } else if !before {
                let _ = lobby::show_lobby(&e.message);
                if e.code == ErrorCode::Unauthorized {
                    // The link is refused: the lobby's next Join tries as a guest.
                    a.params.token = None;
                }
            }
            a.status = e.message.clone();
        }
        class_changed = matches!(msg, ServerMsg::Class(_));
        a.game.on_message(msg, dom::now_ms());
        welcomed = !before && a.game.me.is_some();
        if welcomed {
            a.status.clear();
            let flags = a.media.flags();
            send(&a.ws, &ClientMsg::Media(flags));
        }
    }
    if class_changed {
        class::on_class(app);
    }
    let map_loaded = app_rc.borrow().renderer.is_some();
    if welcomed && map_loaded {
        // Back after a lost connection: the map is on screen already.
        let _ = lobby::show_campus();
    } else if welcomed {
        let _ = lobby::show_campus();
        let app = app.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = render::load_map(&app).await
                && let Some(a) = app.upgrade()
            {
                a.borrow_mut().status = format!("Cannot load the map: {e:?}");
            }
        });
    }
}

/// Mutes or unmutes the microphone and tells the server.
pub(crate) fn toggle_mic(app: &AppRef) {
    let Some(app_rc) = app.upgrade() else { return };
    let mut a = app_rc.borrow_mut();
    let on = !a.media.mic_on();
    if on && a.game.my_blocks().mic {
        a.status = "The teacher muted you".into();
        return;
    }
    if !a.media.set_mic(on) {
        a.status = "No microphone: join again with one to talk".into();
        return;
    }
    let flags = a.media.flags();
    send(&a.ws, &ClientMsg::Media(flags));
}

/// Turns the camera off, or asks for it and turns it on, and tells the server.
pub(crate) fn toggle_camera(app: &AppRef) {
    let Some(app_rc) = app.upgrade() else { return };
    if app_rc.borrow().media.camera_on() {
        let a = app_rc.borrow_mut();
        a.media.camera_off();
        let flags = a.media.flags();
        send(&a.ws, &ClientMsg::Media(flags));
        return;
    }
    if app_rc.borrow().game.my_blocks().camera {
        app_rc.borrow_mut().status = "The teacher turned your camera off".into();
        return;
    }
    let app = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let track = media::acquire_local(false, true).await.and_then(|s| {
            s.get_video_tracks()
                .get(0)
                .dyn_into::<web_sys::MediaStreamTrack>()
                .ok()
        });
        let Some(app_rc) = app.upgrade() else { return };
        let mut a = app_rc.borrow_mut();
        match track {
            // The teacher turned the camera off while the browser asked.
            Some(track) if a.game.my_blocks().camera => track.stop(),
            Some(track) => {
                if let Err(e) = a.media.camera_on_with(&track) {
                    a.status = format!("Camera: {e:?}");
                }
            }
            None => a.status = "No camera, or no permission to use it".into(),
        }
        let flags = a.media.flags();
        send(&a.ws, &ClientMsg::Media(flags));
    });
}

/// Stops sharing the screen, or asks for one (a click is the gesture browsers require) and
/// shares it: with peers nearby, or the room. Tells the server either way.
pub(crate) fn toggle_screen(app: &AppRef) {
    let Some(app_rc) = app.upgrade() else { return };
    if app_rc.borrow().media.screen.is_some() {
        return stop_screen(app);
    }
    if app_rc.borrow().game.my_blocks().screen {
        app_rc.borrow_mut().status = "The teacher stopped screen sharing".into();
        return;
    }
    let fake = app_rc.borrow().media.fake_screen;
    let app = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let captured = screen::ScreenShare::capture(fake).await;
        let Some(app_rc) = app.upgrade() else { return };
        let mut a = app_rc.borrow_mut();
        let mut share = match captured {
            Ok(share) => share,
            Err(e) => {
                web_sys::console::warn_2(&"screen capture:".into(), &e);
                a.status = "Screen sharing did not start".into();
                return;
            }
        };
        if a.media.screen.is_some() || a.game.my_blocks().screen {
            // Two clicks raced (the first share stands), or the teacher stopped sharing
            // while the browser asked; dropping this share stops it.
            return;
        }
        let weak = app.clone();
        share.on_ended(Closure::new(move || stop_screen(&weak)));
        if let Err(e) = a.media.share_screen(share) {
            a.status = format!("Screen sharing: {e:?}");
        }
        let flags = a.media.flags();
        send(&a.ws, &ClientMsg::Media(flags));
    });
}

/// Stops sharing the screen (the button, or the browser's own "stop sharing").
fn stop_screen(app: &AppRef) {
    let Some(app_rc) = app.upgrade() else { return };
    let Ok(mut a) = app_rc.try_borrow_mut() else {
        return;
    };
    if a.media.stop_screen() {
        let flags = a.media.flags();
        send(&a.ws, &ClientMsg::Media(flags));
    }
}

/// Says in the HUD, if it is so, that media failed because this browser has no WebRTC.
fn no_webrtc(app: &AppRef) {
    if !rtc::supported()
        && let Some(a) = app.upgrade()
    {
        a.borrow_mut().status = rtc::UNSUPPORTED.to_owned();
    }
}

fn start_frames(app: &AppRef) -> Result<(), JsValue> {
    let weak = app.clone();
    let closure = Closure::<dyn FnMut(f64)>::new(move |now: f64| frame(&weak, now));
    let app_rc = app.upgrade().ok_or("app gone")?;
    dom::request_frame(&closure)?;
    app_rc.borrow_mut().raf = Some(closure);
    Ok(())
}

/// The heading toward a finger or pointer held on the map (see `App::pointer`), from where
/// the avatar was drawn last frame.
fn pointer_heading(a: &App) -> u8 {
    let (Some(pointer), Some(origin), Some(me)) = (a.pointer, a.view_origin, a.game.me.as_ref())
    else {
        return 0;
    };
    crate::game::heading_toward(pointer - (me.predicted - origin))
}

fn frame(app: &AppRef, now: f64) {
    let Some(app_rc) = app.upgrade() else { return };
    let mut a = app_rc.borrow_mut();
    let dt = a
        .last_frame_ms
        .map_or(0.0, |last| ((now - last) / 1000.0) as f32);
    a.last_frame_ms = Some(now);
    let keys = a.keys | pointer_heading(&a);
    let inputs = a.game.update(dt, keys);
    for input in inputs {
        send(&a.ws, &ClientMsg::Input(input));
    }
    let now_ms = dom::now_ms();
    let rules = a.game.proximity;
    hallway::place_voices(&a.media.peers, |id| a.game.offset_to(id, now_ms), &rules);
    let drawn = render::draw(&mut a, now_ms);
    a.view_origin = drawn.as_ref().ok().copied().flatten();
    match drawn {
        Ok(Some(origin)) => {
            let screen = |id| {
                let p = a.game.render_position(id, now_ms)? - origin;
                Some((f64::from(p.x), f64::from(p.y)))
            };
            hallway::place_bubbles(&a.media.peers, screen);
        }
        Ok(None) => hallway::place_bubbles(&a.media.peers, |_| None),
        Err(e) => a.status = format!("render error: {e:?}"),
    }
    hallway::place_peer_screen(&a.media.peers, |id| a.game.name_of(id).to_owned());
    let _ = controls::update_hud(&mut a);
    if let Err(e) = chat::update(&mut a) {
        a.status = format!("chat: {e:?}");
    }
    if let Err(e) = class::update(&mut a) {
        a.status = format!("class: {e:?}");
    }
    if let Err(e) = records::update(&mut a) {
        a.status = format!("records: {e:?}");
    }
    if let Some(raf) = &a.raf {
        let _ = dom::request_frame(raf);
    }
}
