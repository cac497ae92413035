//! The classroom: one `RTCPeerConnection` to the server's SFU while this avatar is in a room
//! zone ([`Room`]), and the room panel (`#room`: the room's name in `#room-title`, a shared
//! screen in `#room-screen`, one tile per member in `#room-tiles`, one `<audio>` per member
//! in `#room-audio`).
//!
//! Signaling follows the server's contract. The client offers once, with three sendonly
//! transceivers in the order microphone, camera, screen (the server maps them by that
//! order, [`Source::index`]); afterwards only the server offers, whenever forwarded tracks
//! come and go, and the client answers. The steps of one connection run one at a time, in
//! arrival order ([`Signaling`]), so a candidate or an offer that arrives while an earlier
//! step is pending waits for it. Device toggles swap the tracks of the three transceivers
//! (`replaceTrack`: no renegotiation). Forwarded streams are named
//! `"<avatar>:<mic|camera|screen>"` ([`StreamLabel`]). Room audio is not spatial: each
//! member's microphone plays through a plain `<audio>` element.
//!
//! Proximity links are the server's to close (`DisconnectPeer` comes before
//! `JoinRoomMedia`); this module does not touch them. The class (teachers' marks and tools
//! on the tiles, the focus-mode stage) is `class`'s: the view keeps a copy of the class for
//! it and calls it when it renders.

use super::rtc::{self, InOrder, ext, sdp_kind, sdp_type, stream_live};
use super::{AppRef, class, dom, screen, send};
use crate::room::RoomState;
use quad_shared::AvatarId;
use quad_shared::ids::ZoneId;
use quad_shared::media::{Source, StreamLabel};
use quad_shared::protocol::{ClassState, ClientMsg, RoomMember, SdpKind, Signal};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Document, Element, HtmlAudioElement, HtmlElement, HtmlVideoElement, MediaStream,
    MediaStreamTrack, RtcIceCandidateInit, RtcPeerConnection, RtcPeerConnectionIceEvent,
    RtcPeerConnectionState, RtcRtpTransceiver, RtcRtpTransceiverDirection, RtcRtpTransceiverInit,
    RtcSessionDescriptionInit, RtcSignalingState, RtcTrackEvent,
};

/// The connection to the SFU for the room this avatar is in.
pub struct Room {
    pub pc: RtcPeerConnection,
    /// Our transceivers, in [`Source::ALL`] order.
    outgoing: [RtcRtpTransceiver; 3],
    signaling: Rc<Signaling>,
    pub view: Rc<RefCell<RoomView>>,
    _handlers: Vec<Box<dyn std::any::Any>>,
}

impl Room {
    /// Sends `track` from one of our devices, or nothing.
    pub fn send(&self, source: Source, track: Option<&MediaStreamTrack>) {
        let _ = self.outgoing[source.index()].sender().replace_track(track);
    }

    /// Our own stream changed (the camera went on or off): our tile previews it.
    pub fn set_local(&self, local: Option<MediaStream>) {
        if let Ok(mut view) = self.view.try_borrow_mut() {
            view.local = local;
            view.render_logged();
        }
    }
}

/// What the room panel shows, and the DOM that shows it.
pub struct RoomView {
    pub state: RoomState,
    pub me: AvatarId,
    /// Our microphone and camera, for our own tile.
    local: Option<MediaStream>,
    /// What the SFU forwards, by whose device it carries.
    incoming: HashMap<StreamLabel, MediaStream>,
    tiles: HashMap<AvatarId, Tile>,
    voices: HashMap<AvatarId, HtmlAudioElement>,
    /// To report tile sizes to the server (simulcast layer choice).
    app: AppRef,
    /// The tile widths last reported.
    reported: Vec<(AvatarId, u16)>,
    /// The room's class, as the server last sent it (a copy of `Game::class`).
    pub class: Option<ClassState>,
    /// Whether this client is a teacher (its role).
    pub teacher: bool,
}

/// One member's tile: `<figure class="tile" data-member="ID">` with a `<video>`, a
/// `<figcaption>` holding the name and a microphone-off marker, and the class's marks.
struct Tile {
    figure: Element,
    video: HtmlVideoElement,
    name: Element,
    muted: HtmlElement,
    marks: class::TileMarks,
}

impl RoomView {
    /// Whether a live track from `avatar`'s `source` arrives.
    pub fn receiving(&self, avatar: AvatarId, source: Source) -> bool {
        self.stream(avatar, source).is_some()
    }

    /// The stream of `avatar`'s `source`, while a live track of it arrives.
    pub fn stream(&self, avatar: AvatarId, source: Source) -> Option<&MediaStream> {
        self.incoming
            .get(&StreamLabel { avatar, source })
            .filter(|s| stream_live(s, source.kind()))
    }

    /// The member whose screen the big view shows.
    pub fn shown_screen(&self) -> Option<&RoomMember> {
        self.state
            .shown_screen(self.me, |id| self.receiving(id, Source::Screen))
    }

    pub(super) fn render_logged(&mut self) {
        if let Err(e) = self.render() {
            web_sys::console::warn_2(&"room panel:".into(), &e);
        }
    }

    /// Brings the panel up to date with the state, touching only what changed.
    fn render(&mut self) -> Result<(), JsValue> {
        let document = dom::document()?;
        let section: HtmlElement = dom::by_id(&document, "room")?.dyn_into()?;
        if section.hidden() {
            section.set_hidden(false);
        }
        let title = dom::by_id(&document, "room-title")?;
        if title.text_content().as_deref() != Some(self.state.name.as_str()) {
            title.set_text_content(Some(&self.state.name));
        }

        let state = &self.state;
        self.tiles.retain(|id, tile| {
            let keep = state.member(*id).is_some();
            if !keep {
                tile.video.set_src_object(None);
                tile.figure.remove();
            }
            keep
        });
        self.voices.retain(|id, audio| {
            let keep = state.member(*id).is_some();
            if !keep {
                audio.set_src_object(None);
                audio.remove();
            }
            keep
        });

        let speaking = state.speaking();
        let marks = class::TileContext {
            class: self.class.as_ref(),
            me: self.me,
            teacher: self.teacher,
        };
        let tiles_el = dom::by_id(&document, "room-tiles")?;
        let voices_el = dom::by_id(&document, "room-audio")?;
        for m in &state.members {
            let me = m.id == self.me;
            let tile = match self.tiles.entry(m.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let tile = new_tile(&document, m.id, me)?;
                    tiles_el.append_child(&tile.figure)?;
                    e.insert(tile)
                }
            };
            if tile.name.text_content().as_deref() != Some(m.name.as_str()) {
                // Names are text, never markup.
                tile.name.set_text_content(Some(&m.name));
            }
            let blocked = tile.marks.update(&tile.figure, m.id, &m.name, &marks)?;
            // A teacher's mute says more than "Mic off".
            let mic_off = !m.media.mic && !blocked.mic;
            if tile.muted.hidden() == mic_off {
                tile.muted.set_hidden(!mic_off);
            }
            let classes = tile.figure.class_list();
            classes.toggle_with_force("speaking", speaking == Some(m.id))?;

            let camera = if me {
                self.local.as_ref()
            } else {
                self.incoming.get(&StreamLabel {
                    avatar: m.id,
                    source: Source::Camera,
                })
            };
            if tile.video.src_object().as_ref() != camera {
                tile.video.set_src_object(camera);
                let _ = tile.video.play();
            }
            let live = camera.is_some_and(|s| stream_live(s, "video"));
            if tile.video.hidden() == live {
                tile.video.set_hidden(!live);
            }
            classes.toggle_with_force("no-video", !live)?;

            let mic = self.incoming.get(&StreamLabel {
                avatar: m.id,
                source: Source::Mic,
            });
            if let (false, Some(mic)) = (me, mic) {
                let audio = match self.voices.entry(m.id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let audio = HtmlAudioElement::new()?;
                        audio.set_autoplay(true);
                        audio.set_attribute("data-member", &m.id.0.to_string())?;
                        voices_el.append_child(&audio)?;
                        e.insert(audio)
                    }
                };
                if audio.src_object().as_ref() != Some(mic) {
                    audio.set_src_object(Some(mic));
                    let _ = audio.play();
                }
            }
        }

        let shown = self.shown_screen().and_then(|m| {
            let label = StreamLabel {
                avatar: m.id,
                source: Source::Screen,
            };
            Some((m.name.as_str(), self.incoming.get(&label)?))
        });
        screen::show("room-screen", shown)?;
        show_stage(self)?;
        self.report_tiles();
        Ok(())
    }

    /// Tells the server how wide (device pixels) each other member's tile is, when that
    /// changed, so it forwards the simulcast layer that fits.
    fn report_tiles(&mut self) {
        let ratio = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio());
        let mut tiles: Vec<(AvatarId, u16)> = self
            .tiles
            .iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(id, tile)| {
                let width = f64::from(tile.figure.client_width()) * ratio;
                (*id, width.clamp(0.0, f64::from(u16::MAX)) as u16)
            })
            .filter(|(_, width)| *width > 0)
            .collect();
        tiles.sort_unstable();
        if tiles == self.reported {
            return;
        }
        if let Some(a) = self.app.upgrade()
            && let Ok(a) = a.try_borrow()
        {
            send(&a.ws, &ClientMsg::RoomTiles(tiles.clone()));
            self.reported = tiles;
        }
    }

    /// Empties and hides the panel.
    fn clear(&mut self) {
        for (_, tile) in self.tiles.drain() {
            tile.video.set_src_object(None);
            tile.figure.remove();
        }
        for (_, audio) in self.voices.drain() {
            audio.set_src_object(None);
            audio.remove();
        }
        self.incoming.clear();
        let _ = screen::show("room-screen", None);
        let _ = class::hide_stage();
        if let Ok(document) = dom::document() {
            if let Ok(title) = dom::by_id(&document, "room-title") {
                title.set_text_content(None);
            }
            if let Ok(section) = dom::by_id(&document, "room")
                && let Ok(section) = section.dyn_into::<HtmlElement>()
            {
                section.set_hidden(true);
            }
        }
    }
}

fn new_tile(document: &Document, id: AvatarId, me: bool) -> Result<Tile, JsValue> {
    let figure = document.create_element("figure")?;
    figure.set_class_name(if me { "tile self" } else { "tile" });
    figure.set_attribute("data-member", &id.0.to_string())?;
    let video: HtmlVideoElement = document.create_element("video")?.dyn_into()?;
    video.set_autoplay(true);
    video.set_muted(true);
    video.set_attribute("muted", "")?;
    video.set_attribute("playsinline", "")?;
    video.set_hidden(true);
    let caption = document.create_element("figcaption")?;
    let name = document.create_element("span")?;
    name.set_class_name("name");
    caption.append_child(&name)?;
    if me {
        let you = document.create_element("span")?;
        you.set_class_name("you");
        you.set_text_content(Some(" (you)"));
        caption.append_child(&you)?;
    }
    let muted: HtmlElement = document.create_element("span")?.dyn_into()?;
    muted.set_class_name("muted-marker");
    muted.set_text_content(Some("Mic off"));
    muted.set_hidden(true);
    caption.append_child(&muted)?;
    figure.append_child(&video)?;
    figure.append_child(&caption)?;
    let marks = class::TileMarks::new(document, &figure, &caption)?;
    Ok(Tile {
        figure,
        video,
        name,
        muted,
        marks,
    })
}

/// One signaling step with the SFU.
enum Step {
    /// Our one offer, when the connection opens.
    Offer,
    /// Something the server sent.
    Remote(Signal),
}

/// A connection's signaling with the SFU, its steps run one at a time, in order.
struct Signaling {
    pc: RtcPeerConnection,
    app: AppRef,
    steps: Rc<InOrder<Step>>,
}

impl Signaling {
    fn push(self: &Rc<Self>, step: Step) {
        let this = self.clone();
        self.steps.push(step, move |step| {
            let this = this.clone();
            async move {
                if let Err(e) = this.run(step).await
                    && this.pc.signaling_state() != RtcSignalingState::Closed
                {
                    web_sys::console::warn_2(&"classroom signaling:".into(), &e);
                }
            }
        });
    }

    async fn run(&self, step: Step) -> Result<(), JsValue> {
        match step {
            Step::Offer => {
                JsFuture::from(ext(&self.pc).set_local_description_implicit()).await?;
                self.send_local_description();
            }
            Step::Remote(Signal::Description { kind, sdp }) => {
                let desc = RtcSessionDescriptionInit::new(sdp_type(kind));
                desc.set_sdp(&sdp);
                JsFuture::from(self.pc.set_remote_description(&desc)).await?;
                if kind == SdpKind::Offer {
                    JsFuture::from(ext(&self.pc).set_local_description_implicit()).await?;
                    self.send_local_description();
                }
            }
            // The server never renews a room connection (only hallway peers do).
            Step::Remote(Signal::Renew { .. }) => {}
            Step::Remote(Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            }) => {
                // End-of-candidates: nothing to wait for.
                if candidate.is_empty() {
                    return Ok(());
                }
                let init = RtcIceCandidateInit::new(&candidate);
                init.set_sdp_mid(sdp_mid.as_deref());
                init.set_sdp_m_line_index(sdp_m_line_index);
                JsFuture::from(
                    self.pc
                        .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
                )
                .await?;
            }
        }
        Ok(())
    }

    fn send_local_description(&self) {
        if let Some(desc) = self.pc.local_description() {
            send_room_signal(
                &self.app,
                Signal::Description {
                    kind: sdp_kind(desc.type_()),
                    sdp: desc.sdp(),
                },
            );
        }
    }
}

fn send_room_signal(app: &AppRef, signal: Signal) {
    if let Some(a) = app.upgrade()
        && let Ok(a) = a.try_borrow()
    {
        send(&a.ws, &ClientMsg::RoomSignal(signal));
    }
}

/// Opens the connection to the SFU for `id` and shows the room panel (closing any room
/// connection there was).
pub fn join(app: &AppRef, id: ZoneId, name: String) -> Result<(), JsValue> {
    leave(app, None);
    let app_rc = app.upgrade().ok_or("app gone")?;
    let mut a = app_rc.borrow_mut();
    let me = a
        .game
        .me
        .as_ref()
        .map(|m| m.id)
        .ok_or("not in the space yet")?;
    let pc = rtc::new_connection(&a.ice_servers, a.media.relay_only)?;
    let tracks = [
        a.media.mic_track(),
        a.media.camera_track(),
        a.media.screen.as_ref().map(|s| Clone::clone(&s.track)),
    ];
    let outgoing = Source::ALL.map(|source| {
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendonly);
        if source == Source::Camera {
            init.set_send_encodings(&simulcast_layers());
        }
        match &tracks[source.index()] {
            Some(track) => pc.add_transceiver_with_media_stream_track_and_init(track, &init),
            None => pc.add_transceiver_with_str_and_init(source.kind(), &init),
        }
    });
    let view = Rc::new(RefCell::new(RoomView {
        state: RoomState::new(id, name),
        me,
        local: a.media.local.clone(),
        incoming: HashMap::new(),
        tiles: HashMap::new(),
        voices: HashMap::new(),
        app: app.clone(),
        reported: Vec::new(),
        class: a.game.class.clone(),
        teacher: a.game.role.is_teacher(),
    }));

    // Re-renders when a forwarded track starts, stops or ends (the server removing a track
    // makes its transceiver inactive, which mutes the track).
    let refresh = {
        let view = Rc::downgrade(&view);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(view) = view.upgrade()
                && let Ok(mut view) = view.try_borrow_mut()
            {
                view.render_logged();
            }
        })
    };
    // A forwarded track that starts playing also means the room plays: hallway links kept
    // while walking in may close.
    let on_unmute = {
        let (view, app) = (Rc::downgrade(&view), app.clone());
        Closure::<dyn FnMut()>::new(move || {
            rtc::media_ready(&app, true);
            if let Some(view) = view.upgrade()
                && let Ok(mut view) = view.try_borrow_mut()
            {
                view.render_logged();
            }
        })
    };
    let on_track = {
        let view: Weak<RefCell<RoomView>> = Rc::downgrade(&view);
        let refresh: js_sys::Function =
            refresh.as_ref().unchecked_ref::<js_sys::Function>().clone();
        let on_unmute: js_sys::Function = on_unmute
            .as_ref()
            .unchecked_ref::<js_sys::Function>()
            .clone();
        Closure::<dyn FnMut(RtcTrackEvent)>::new(move |e: RtcTrackEvent| {
            let track = e.track();
            let labelled = e
                .streams()
                .iter()
                .filter_map(|s| s.dyn_into::<MediaStream>().ok())
                .find_map(|s| Some((StreamLabel::parse(&s.id())?, s)));
            let Some((label, stream)) = labelled.filter(|(l, _)| l.source.kind() == track.kind())
            else {
                web_sys::console::warn_1(
                    &"classroom: a forwarded track without a usable stream id".into(),
                );
                return;
            };
            track.set_onmute(Some(&refresh));
            track.set_onunmute(Some(&on_unmute));
            track.set_onended(Some(&refresh));
            if let Some(view) = view.upgrade()
                && let Ok(mut view) = view.try_borrow_mut()
            {
                // The server reuses an m-line, and so this track, for a later stream once
                // one ends: the stream it came with before is no longer its own.
                let id = track.id();
                view.incoming
                    .retain(|_, s| s.get_track_by_id(&id).is_none());
                view.incoming.insert(label, stream);
                view.render_logged();
            }
        })
    };
    let on_candidate = {
        let app = app.clone();
        Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(move |e: RtcPeerConnectionIceEvent| {
            if let Some(c) = e.candidate() {
                send_room_signal(
                    &app,
                    Signal::Candidate {
                        candidate: c.candidate(),
                        sdp_mid: c.sdp_mid(),
                        sdp_m_line_index: c.sdp_m_line_index(),
                    },
                );
            }
        })
    };
    let on_state = {
        let (pc, app, view) = (pc.clone(), app.clone(), Rc::downgrade(&view));
        Closure::<dyn FnMut()>::new(move || {
            // Alone in the room, being connected is all there is to wait for.
            if pc.connection_state() == RtcPeerConnectionState::Connected
                && view
                    .upgrade()
                    .and_then(|v| v.try_borrow().ok().map(|v| v.state.members.len() <= 1))
                    .unwrap_or(false)
            {
                rtc::media_ready(&app, true);
            }
            if pc.connection_state() == RtcPeerConnectionState::Failed
                && let Some(a) = app.upgrade()
                && let Ok(mut a) = a.try_borrow_mut()
            {
                a.status = "Could not connect to the classroom's audio and video".into();
            }
        })
    };
    pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
    pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));

    let signaling = Rc::new(Signaling {
        pc: pc.clone(),
        app: app.clone(),
        steps: InOrder::new(pc.clone()),
    });
    a.media.room = Some(Room {
        pc,
        outgoing,
        signaling: signaling.clone(),
        view: view.clone(),
        _handlers: vec![
            Box::new(refresh),
            Box::new(on_unmute),
            Box::new(on_track),
            Box::new(on_candidate),
            Box::new(on_state),
        ],
    });
    drop(a);
    view.borrow_mut().render_logged();
    signaling.push(Step::Offer);
    Ok(())
}

/// The camera's simulcast layers, lowest first, named as the SFU expects (`q`, `h`, `f`:
/// a quarter, half and all of the camera's resolution).
fn simulcast_layers() -> js_sys::Array {
    let layers = js_sys::Array::new();
    for (rid, scale) in quad_shared::media::SIMULCAST_LAYERS {
        let layer = web_sys::RtcRtpEncodingParameters::new();
        layer.set_rid(rid);
        layer.set_scale_resolution_down_by(scale);
        layers.push(&layer);
    }
    layers
}

/// Closes the room connection and hides the panel: the one for `room`, or with `None`
/// whichever there is (the WebSocket closed). A `LeaveRoomMedia` for another room than
/// ours is stale, and ignored.
pub fn leave(app: &AppRef, room: Option<ZoneId>) {
    let Some(app_rc) = app.upgrade() else { return };
    let taken = {
        let Ok(mut a) = app_rc.try_borrow_mut() else {
            web_sys::console::warn_1(&"cannot close the classroom connection: app busy".into());
            return;
        };
        let ours = a
            .media
            .room
            .as_ref()
            .is_some_and(|r| room.is_none_or(|id| r.view.borrow().state.id == id));
        if ours { a.media.room.take() } else { None }
    };
    if let Some(room) = taken {
        close(room);
    }
}

fn close(room: Room) {
    let pc = &room.pc;
    pc.set_ontrack(None);
    pc.set_onicecandidate(None);
    pc.set_onconnectionstatechange(None);
    // The tracks' handlers go with `room`; unhook them first.
    for t in pc.get_transceivers().iter() {
        if let Ok(t) = t.dyn_into::<RtcRtpTransceiver>() {
            let track = t.receiver().track();
            track.set_onmute(None);
            track.set_onunmute(None);
            track.set_onended(None);
        }
    }
    pc.close();
    room.view.borrow_mut().clear();
}

/// Signaling from the SFU, queued behind the connection's earlier steps.
pub fn on_signal(app: &AppRef, signal: Signal) {
    let signaling = app.upgrade().and_then(|a| {
        let a = a.try_borrow().ok()?;
        Some(a.media.room.as_ref()?.signaling.clone())
    });
    match signaling {
        Some(s) => s.push(Step::Remote(signal)),
        None => web_sys::console::warn_1(&"room signaling without a room connection".into()),
    }
}

/// The view of `room`, if it is the room we are in.
fn view_of(app: &AppRef, room: ZoneId) -> Option<Rc<RefCell<RoomView>>> {
    let a = app.upgrade()?;
    let a = a.try_borrow().ok()?;
    let view = &a.media.room.as_ref()?.view;
    (view.borrow().state.id == room).then(|| view.clone())
}

/// The server's new member list for `room`.
pub fn on_members(app: &AppRef, room: ZoneId, members: Vec<RoomMember>) {
    let Some(view) = view_of(app, room) else {
        return;
    };
    let mut view = view.borrow_mut();
    let left = view.state.set_members(members);
    view.incoming
        .retain(|label, _| !left.contains(&label.avatar));
    view.render_logged();
}

/// Who speaks now in `room`, loudest first.
pub fn on_speakers(app: &AppRef, room: ZoneId, speakers: Vec<AvatarId>) {
    let Some(view) = view_of(app, room) else {
        return;
    };
    let mut view = view.borrow_mut();
    if view.state.speakers != speakers {
        view.state.speakers = speakers;
        view.render_logged();
    }
}

/// Shows the focus-mode stage (`#focus`) for a student of a class in focus mode: the
/// teacher's screen if it arrives, else the teacher's camera, captioned with the teacher's
/// name. Otherwise hides it.
fn show_stage(view: &RoomView) -> Result<(), JsValue> {
    let focus = view
        .class
        .as_ref()
        .filter(|c| c.focus && !view.teacher && !c.teachers.contains(&view.me));
    let Some(class) = focus else {
        return class::hide_stage();
    };
    let document = dom::document()?;
    let section: HtmlElement = dom::by_id(&document, "focus")?.dyn_into()?;
    let video: HtmlVideoElement = dom::by_id(&document, "focus-video")?.dyn_into()?;
    let shown = crate::class::stage(
        class,
        view.me,
        |id| view.state.member(id).is_some(),
        |id, source| view.receiving(id, source),
    );
    let (caption, stream) = match shown {
        Some((teacher, source)) => (
            view.state
                .member(teacher)
                .map_or("Teacher", |m| m.name.as_str()),
            source.and_then(|s| view.stream(teacher, s)),
        ),
        None => ("Waiting for the teacher", None),
    };
    if video.src_object().as_ref() != stream {
        video.set_src_object(stream);
        if stream.is_some() {
            let _ = video.play();
        }
    }
    if video.hidden() == stream.is_some() {
        video.set_hidden(stream.is_none());
    }
    // Names are text, never markup.
    dom::set_text(&dom::by_id(&document, "focus-caption")?, caption);
    if section.hidden() {
        section.set_hidden(false);
    }
    Ok(())
}
