//! `window.quad`: a stable surface for browser tests and curious users.
//! `quad.snapshot()` → `{self: {id, name, x, y, zone}, avatars: [{id, name, x, y, zone}]}`;
//! `quad.zones()` → `[{id, name, kind, x, y, w, h}]` in world pixels.
//! The snapshot also has `peers: [{id, state, since, mic, camera, video, screen, restarts}]`
//! (`restarts`: ICE restarts made to bring the connection back; `mic`
//! and `camera` as the server reports the peer's devices; `video`: its camera bubble shows
//! decoded frames; `screen`: a live screen track of the peer arrives) and
//! `media: {mic, camera, screen}` (our own);
//! `quad.peerConnection(id)` returns the `RTCPeerConnection` with a peer (for `getStats()`).
//! `room` is `null` outside a classroom, else `{id, name, state, speakers, screen, members:
//! [{id, name, audio, video, screen}]}`: `state` is the SFU connection's `connectionState`,
//! `speakers` the latest ids from the server (loudest first), `screen` the id of the member
//! whose screen the big view shows (or `null`), and a member's `audio`, `video` and `screen`
//! say whether a live (not muted) forwarded track of that kind from that member arrives
//! (always `false` for ourselves: the SFU does not send us our own media);
//! `quad.roomPc()` returns the SFU `RTCPeerConnection`, or `null`.
//! `self.role` is `"teacher"`, `"student"` or `"guest"`. `chat` is the lines held, oldest
//! first: `[{id, scope, from, to, text, saved}]` (`scope` as the page's `data-scope`:
//! `nearby`, `room`, `space` or `direct`; `from` the sender's name; `to` the recipient's
//! name of a direct message, else `null`; `saved`: `false` once the server said it could
//! not save this line of ours). `class` is `null` outside a class, else `{room, locked,
//! focus, spotlight, hands, teachers, away, recording, me: {mic, camera, screen}}` (`spotlight` an id
//! or `null`; `hands` in the order raised; `me`: `true` for each of our devices the teacher
//! turned off). `connection` is `{state, attempt, resumed, rejoined, status}` (`state`:
//! `open`, `reconnecting`, `connecting` or `closed`; `resumed`/`rejoined`: how often the
//! page got its session back, or joined afresh, after a dropped connection), and
//! `reconnecting` the ids of others whose connection dropped; `view_origin` is `[x, y]`,
//! the world point at the map's top left on screen (an avatar is drawn at its position
//! minus it).
//! `quad.dropConnection(holdMs)` closes the page's WebSocket as a network cut would (code
//! 4001): the page reconnects by itself, after `holdMs` if given (a cut that long).
//! `quad.audioState()` is the state of the page's audio context (`"suspended"` until a
//! gesture lets it run, then `"running"`), or `null` before it is made.

use super::rtc::stream_live;
use super::{AppRef, dom};
use crate::chat::scope_name;
use quad_shared::media::Source;
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[derive(Serialize)]
struct AvatarView {
    id: u32,
    name: String,
    x: f32,
    y: f32,
    zone: Option<String>,
    /// Our own role; left out for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatLineView {
    id: u64,
    scope: &'static str,
    from: String,
    to: Option<String>,
    text: String,
    /// False once the server said it could not save this line.
    saved: bool,
}

#[derive(Serialize)]
struct ClassView {
    room: u16,
    locked: bool,
    focus: bool,
    spotlight: Option<u32>,
    hands: Vec<u32>,
    teachers: Vec<u32>,
    away: Vec<u32>,
    recording: bool,
    /// Our devices the teacher turned off.
    me: MediaView,
}

#[derive(Serialize)]
struct SnapshotView {
    #[serde(rename = "self")]
    me: Option<AvatarView>,
    avatars: Vec<AvatarView>,
    peers: Vec<PeerView>,
    media: MediaView,
    room: Option<RoomView>,
    chat: Vec<ChatLineView>,
    class: Option<ClassView>,
    connection: ConnectionView,
    /// Others whose connection dropped (the server keeps them for a while).
    reconnecting: Vec<u32>,
    /// The world point at the map canvas's top left (CSS pixels), as last drawn: an
    /// avatar's place on screen is its position minus this.
    view_origin: Option<[f32; 2]>,
}

#[derive(Serialize)]
struct ConnectionView {
    /// `"open"` (in the space), `"reconnecting"`, `"connecting"` or `"closed"`.
    state: &'static str,
    /// Attempts since the connection dropped.
    attempt: u32,
    /// Sessions resumed, and joined afresh, after a dropped connection.
    resumed: u32,
    rejoined: u32,
    /// The last status line the page showed.
    status: String,
}

#[derive(Serialize)]
struct RoomView {
    id: u16,
    name: String,
    /// The SFU `RTCPeerConnection.connectionState`.
    state: String,
    speakers: Vec<u32>,
    /// Whose screen the big view shows.
    screen: Option<u32>,
    members: Vec<RoomMemberView>,
    /// `getTransceivers().length`: the m-lines of the connection (the server reuses a
    /// forwarded stream's m-line for a later one).
    transceivers: u32,
}

#[derive(Serialize)]
struct RoomMemberView {
    id: u32,
    name: String,
    /// A live forwarded track of this kind from the member arrives.
    audio: bool,
    video: bool,
    screen: bool,
}

#[derive(Serialize)]
struct PeerView {
    id: u32,
    /// The `RTCPeerConnection.connectionState`.
    state: String,
    /// When the server linked us, `performance.now()` ms.
    since: f64,
    /// The peer's microphone and camera state, as the server reports it.
    mic: bool,
    camera: bool,
    /// Whether the peer's camera bubble is showing decoded video.
    video: bool,
    /// Whether a live screen track from the peer arrives.
    screen: bool,
    /// ICE restarts made to bring the connection back.
    restarts: u32,
    /// Renewals of the link: how many connections replaced the first.
    generation: u32,
}

#[derive(Serialize)]
struct MediaView {
    mic: bool,
    camera: bool,
    screen: bool,
}

#[derive(Serialize)]
struct ZoneView {
    id: u16,
    name: String,
    kind: &'static str,
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

fn to_js<T: Serialize>(value: &T) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

pub fn install(app: &AppRef) -> Result<(), JsValue> {
    let weak = app.clone();
    let snapshot = Closure::<dyn Fn() -> JsValue>::new(move || {
        let Some(app) = weak.upgrade() else {
            return JsValue::NULL;
        };
        let Ok(a) = app.try_borrow() else {
            return JsValue::NULL;
        };
        let g = &a.game;
        let view = |id, name: &str, p: glam::Vec2| AvatarView {
            id,
            name: name.to_owned(),
            x: p.x,
            y: p.y,
            zone: g.zone_name(p).map(str::to_owned),
            role: None,
        };
        let me = g.me.as_ref().map(|m| AvatarView {
            role: Some(g.role.as_str()),
            ..view(m.id.0, &m.name, m.predicted)
        });
        let mut avatars: Vec<AvatarView> = g
            .others
            .iter()
            .filter_map(|(id, r)| Some(view(id.0, g.name_of(*id), r.latest()?)))
            .collect();
        avatars.sort_by_key(|a| a.id);
        let mut peers: Vec<PeerView> = a
            .media
            .peers
            .iter()
            .map(|(id, p)| PeerView {
                id: id.0,
                state: format!("{:?}", p.pc.connection_state()).to_lowercase(),
                since: p.since_ms,
                mic: p.remote.mic,
                camera: p.remote.camera,
                video: p
                    .bubble
                    .borrow()
                    .as_ref()
                    .is_some_and(|v| !v.hidden() && v.video_width() > 0),
                screen: p
                    .screen_in
                    .borrow()
                    .as_ref()
                    .is_some_and(|s| stream_live(s, "video")),
                restarts: p.ice_restarts.get(),
                generation: p.generation,
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        let media = MediaView {
            mic: a.media.mic_on(),
            camera: a.media.camera_on(),
            screen: a.media.screen.is_some(),
        };
        let room = a.media.room.as_ref().and_then(|r| {
            let v = r.view.try_borrow().ok()?;
            Some(RoomView {
                id: v.state.id.0,
                name: v.state.name.clone(),
                state: format!("{:?}", r.pc.connection_state()).to_lowercase(),
                speakers: v.state.speakers.iter().map(|id| id.0).collect(),
                screen: v.shown_screen().map(|m| m.id.0),
                transceivers: r.pc.get_transceivers().length(),
                members: v
                    .state
                    .members
                    .iter()
                    .map(|m| RoomMemberView {
                        id: m.id.0,
                        name: m.name.clone(),
                        audio: v.receiving(m.id, Source::Mic),
                        video: v.receiving(m.id, Source::Camera),
                        screen: v.receiving(m.id, Source::Screen),
                    })
                    .collect(),
            })
        });
        let chat = g
            .chat
            .lines()
            .map(|l| ChatLineView {
                id: l.id,
                scope: scope_name(&l.scope),
                from: l.from_name.clone(),
                to: l.to_name.clone(),
                text: l.text.clone(),
                saved: !g.chat.is_unsaved(l.id),
            })
            .collect();
        let ids = |ids: &[quad_shared::AvatarId]| ids.iter().map(|id| id.0).collect();
        let blocked = g.my_blocks();
        let class = g.class.as_ref().map(|c| ClassView {
            room: c.room.0,
            locked: c.locked,
            focus: c.focus,
            spotlight: c.spotlight.map(|id| id.0),
            hands: ids(&c.hands),
            teachers: ids(&c.teachers),
            away: ids(&c.away),
            recording: c.recording,
            me: MediaView {
                mic: blocked.mic,
                camera: blocked.camera,
                screen: blocked.screen,
            },
        });
        let connection = ConnectionView {
            state: if a.link.reconnecting {
                "reconnecting"
            } else if g.me.is_some() {
                "open"
            } else if a.ws.is_some() {
                "connecting"
            } else {
                "closed"
            },
            attempt: a.link.attempt,
            resumed: a.link.resumed,
            rejoined: a.link.rejoined,
            status: a.status.clone(),
        };
        to_js(&SnapshotView {
            me,
            avatars,
            peers,
            media,
            room,
            chat,
            class,
            connection,
            reconnecting: g.reconnecting.iter().map(|id| id.0).collect(),
            view_origin: a.view_origin.map(|o| [o.x, o.y]),
        })
    });
    let weak = app.clone();
    let zones = Closure::<dyn Fn() -> JsValue>::new(move || {
        let Some(app) = weak.upgrade() else {
            return JsValue::NULL;
        };
        let Ok(a) = app.try_borrow() else {
            return JsValue::NULL;
        };
        let zones: Vec<ZoneView> = a
            .game
            .map
            .iter()
            .flat_map(|m| m.zones.iter())
            .map(|z| ZoneView {
                id: z.id.0,
                name: z.name.clone(),
                kind: z.kind.as_str(),
                x: z.rect.x,
                y: z.rect.y,
                w: z.rect.w,
                h: z.rect.h,
            })
            .collect();
        to_js(&zones)
    });
    let weak = app.clone();
    let peer_connection = Closure::<dyn Fn(u32) -> JsValue>::new(move |id: u32| {
        let Some(app) = weak.upgrade() else {
            return JsValue::NULL;
        };
        let Ok(a) = app.try_borrow() else {
            return JsValue::NULL;
        };
        a.media
            .peers
            .get(&quad_shared::AvatarId(id))
            .map_or(JsValue::NULL, |p| p.pc.clone().into())
    });
    let weak = app.clone();
    let room_pc = Closure::<dyn Fn() -> JsValue>::new(move || {
        let Some(app) = weak.upgrade() else {
            return JsValue::NULL;
        };
        let Ok(a) = app.try_borrow() else {
            return JsValue::NULL;
        };
        a.media
            .room
            .as_ref()
            .map_or(JsValue::NULL, |r| r.pc.clone().into())
    });
    let weak = app.clone();
    let drop_connection = Closure::<dyn Fn(JsValue)>::new(move |hold: JsValue| {
        let hold_ms = hold.as_f64().map(|ms| ms.clamp(0.0, 600_000.0) as u32);
        super::net::drop_connection(&weak, hold_ms);
    });
    let quad = js_sys::Object::new();
    js_sys::Reflect::set(&quad, &"dropConnection".into(), drop_connection.as_ref())?;
    let weak = app.clone();
    let audio_state = Closure::<dyn Fn() -> JsValue>::new(move || {
        let state = weak.upgrade().and_then(|a| {
            let a = a.try_borrow().ok()?;
            Some(format!("{:?}", a.media.audio.as_ref()?.state()).to_lowercase())
        });
        state.map_or(JsValue::NULL, |s| JsValue::from_str(&s))
    });
    js_sys::Reflect::set(&quad, &"audioState".into(), audio_state.as_ref())?;
    js_sys::Reflect::set(&quad, &"peerConnection".into(), peer_connection.as_ref())?;
    js_sys::Reflect::set(&quad, &"roomPc".into(), room_pc.as_ref())?;
    js_sys::Reflect::set(&quad, &"snapshot".into(), snapshot.as_ref())?;
    js_sys::Reflect::set(&quad, &"zones".into(), zones.as_ref())?;
    js_sys::Reflect::set(&dom::window()?.into(), &"quad".into(), &quad)?;
    if let Some(a) = app.upgrade() {
        let mut a = a.borrow_mut();
        a.handlers.push(Box::new(snapshot));
        a.handlers.push(Box::new(zones));
        a.handlers.push(Box::new(peer_connection));
        a.handlers.push(Box::new(room_pc));
        a.handlers.push(Box::new(drop_connection));
        a.handlers.push(Box::new(audio_state));
    }
    Ok(())
}
