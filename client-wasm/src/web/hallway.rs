//! Proximity media in the hallway: one `RTCPeerConnection` per peer the server links this
//! avatar with, negotiated with the WebRTC "perfect negotiation" pattern over the server's
//! signaling relay (the server decides who is polite), each peer's signals handled in the
//! order they came ([`Negotiation`]). Remote audio plays through
//! WebAudio: one gain and one stereo panner per peer, set from positions every frame,
//! fading to silence at the disconnect radius. A peer's camera shows in a round `<video>`
//! bubble above its avatar. The server tells us each peer's microphone, camera and screen
//! state (we tell it ours on every toggle). A connection that goes down (`disconnected` or
//! `failed`) is restarted (ICE restart) on a backoff with jitter for as long as the link
//! lasts.
//!
//! A shared screen goes to each peer on a video transceiver of its own, added when sharing
//! starts (perfect negotiation renegotiates) and kept for the next share, never reused for
//! the camera. Browsers name streams themselves, so the descriptions we send rename the
//! screen's stream to `"<our id>:screen"` ([`StreamLabel`], the form the SFU
//! uses too); a receiver knows a screen by that name and shows it in `#hallway-screen`.
//! The devices sent are `media`'s; in a classroom they go to the SFU instead (`classroom`).

use super::rtc::{InOrder, ext, media_ready, new_connection, sdp_kind, sdp_type, stream_live};
use super::screen;
use super::{AppRef, dom, send};
use crate::room::rename_stream;
use quad_shared::AvatarId;
use quad_shared::media::{Source, StreamLabel};
use quad_shared::protocol::{ClientMsg, MediaFlags, SdpKind, Signal};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    AudioContext, GainNode, HtmlAudioElement, HtmlVideoElement, MediaStream,
    MediaStreamAudioSourceNode, MediaStreamTrack, RtcIceCandidateInit, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpTransceiver,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSessionDescriptionInit,
    RtcSignalingState, RtcTrackEvent, StereoPannerNode,
};

/// The diameter of a camera bubble, CSS pixels.
const BUBBLE_PX: f64 = 72.0;

/// Remote audio of one peer, placed in space.
struct Voice {
    /// Chrome plays remote WebRTC audio into WebAudio only while an element holds the stream.
    element: HtmlAudioElement,
    source: MediaStreamAudioSourceNode,
    gain: GainNode,
    pan: StereoPannerNode,
}

/// One peer connection.
pub struct Peer {
    pub pc: RtcPeerConnection,
    /// When the server linked us (`performance.now()`), for measuring link-to-audio time.
    pub since_ms: f64,
    /// What the peer signals, handled in order.
    negotiation: Rc<Negotiation>,
    /// Whether our tracks are on the connection yet (the polite side adds them when it
    /// answers the first offer).
    pub(super) sending: Rc<Cell<bool>>,
    voice: Rc<RefCell<Option<Voice>>>,
    /// The peer's camera, shown above its avatar.
    pub bubble: Rc<RefCell<Option<HtmlVideoElement>>>,
    /// The peer's shared screen, as it arrives.
    pub screen_in: Rc<RefCell<Option<MediaStream>>>,
    /// The transceiver our screen goes out on, once we have shared one with this peer.
    pub(super) screen_out: Rc<RefCell<Option<RtcRtpTransceiver>>>,
    /// The peer's microphone, camera and screen state, as the server last told us.
    pub remote: MediaFlags,
    /// ICE restarts made to bring this connection back (see `recover`).
    pub ice_restarts: Rc<Cell<u32>>,
    _handlers: Vec<Box<dyn std::any::Any>>,
}

/// Sends our screen (`Some((track, the stream it goes in))`) to a peer, or stops sending it
/// (`None`). The screen's transceiver is made on first use and kept in `slot`; stopping
/// turns it to receive only, which renegotiates, so the peer's screen track ends muted.
pub(super) fn send_screen(
    pc: &RtcPeerConnection,
    slot: &RefCell<Option<RtcRtpTransceiver>>,
    screen: Option<(&MediaStreamTrack, &MediaStream)>,
) {
    let mut slot = slot.borrow_mut();
    match (slot.as_ref(), screen) {
        (Some(t), screen) => {
            let _ = t.sender().replace_track(screen.map(|(track, _)| track));
            let direction = if screen.is_some() {
                RtcRtpTransceiverDirection::Sendrecv
            } else {
                RtcRtpTransceiverDirection::Recvonly
            };
            if t.direction() != direction {
                // Renegotiates (perfect negotiation takes it from here).
                t.set_direction(direction);
            }
        }
        (None, Some((track, carrier))) => {
            // Send and receive: the peer may put its own camera on this transceiver.
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Sendrecv);
            init.set_streams(&js_sys::Array::of1(carrier));
            *slot = Some(pc.add_transceiver_with_media_stream_track_and_init(track, &init));
        }
        (None, None) => {}
    }
}

fn send_signal(app: &AppRef, to: AvatarId, signal: Signal) {
    if let Some(a) = app.upgrade()
        && let Ok(a) = a.try_borrow()
    {
        send(&a.ws, &ClientMsg::Signal { to, signal });
    }
}

/// Sends our description, with our screen's stream renamed `"<our id>:screen"`.
fn send_local_description(app: &AppRef, to: AvatarId, pc: &RtcPeerConnection) {
    let (Some(desc), Some(a)) = (pc.local_description(), app.upgrade()) else {
        return;
    };
    let Ok(a) = a.try_borrow() else { return };
    let mut sdp = desc.sdp();
    if let (Some(me), Some(carrier)) = (&a.game.me, &a.media.screen_stream) {
        let label = StreamLabel {
            avatar: me.id,
            source: Source::Screen,
        };
        sdp = rename_stream(&sdp, &carrier.id(), &label.to_string());
    }
    let kind = sdp_kind(desc.type_());
    send(
        &a.ws,
        &ClientMsg::Signal {
            to,
            signal: Signal::Description { kind, sdp },
        },
    );
}

/// Opens the connection the server asked for.
pub fn connect(
    app: &AppRef,
    peer: AvatarId,
    polite: bool,
    remote: MediaFlags,
) -> Result<(), JsValue> {
    let app_rc = app.upgrade().ok_or("app gone")?;
    let mut a = app_rc.borrow_mut();
    if a.media.peers.contains_key(&peer) {
        return Ok(());
    }
    let pc = new_connection(&a.ice_servers, a.media.relay_only)?;
    // The impolite side offers first; the polite side adds its tracks to the transceivers
    // of that offer when it answers. Both offering at once (glare) is survivable with
    // perfect negotiation, but Chromium's rollback of an offer that is still gathering
    // can leave the answer's ICE gathering stuck with no candidates.
    let sending = Rc::new(Cell::new(false));
    let screen_out: Rc<RefCell<Option<RtcRtpTransceiver>>> = Rc::new(RefCell::new(None));
    if !polite {
        add_local_tracks(&pc, a.media.local.as_ref())?;
        if let Some(screen) = a.media.screen_out() {
            send_screen(&pc, &screen_out, Some(screen));
        }
        sending.set(true);
    }
    let making_offer = Rc::new(Cell::new(false));
    let voice: Rc<RefCell<Option<Voice>>> = Rc::new(RefCell::new(None));
    let audio = a.media.audio()?;

    let on_negotiation = {
        let (pc, app, making_offer) = (pc.clone(), app.clone(), making_offer.clone());
        Closure::<dyn FnMut()>::new(move || {
            let (pc, app, making_offer) = (pc.clone(), app.clone(), making_offer.clone());
            spawn_local(async move {
                making_offer.set(true);
                let done = JsFuture::from(ext(&pc).set_local_description_implicit()).await;
                making_offer.set(false);
                if done.is_ok() {
                    send_local_description(&app, peer, &pc);
                }
            });
        })
    };
    let on_candidate = {
        let app = app.clone();
        Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(move |e: RtcPeerConnectionIceEvent| {
            if let Some(c) = e.candidate() {
                send_signal(
                    &app,
                    peer,
                    Signal::Candidate {
                        candidate: c.candidate(),
                        sdp_mid: c.sdp_mid(),
                        sdp_m_line_index: c.sdp_m_line_index(),
                    },
                );
            }
        })
    };
    let bubble: Rc<RefCell<Option<HtmlVideoElement>>> = Rc::new(RefCell::new(None));
    let screen_in: Rc<RefCell<Option<MediaStream>>> = Rc::new(RefCell::new(None));
    let on_track = {
        let (voice, audio, bubble) = (voice.clone(), audio.clone(), bubble.clone());
        let screen_in = screen_in.clone();
        Closure::<dyn FnMut(RtcTrackEvent)>::new(move |e: RtcTrackEvent| {
            // A screen comes in a stream named as one (see the module doc).
            let screen = e
                .streams()
                .iter()
                .filter_map(|s| s.dyn_into::<MediaStream>().ok())
                .find(|s| StreamLabel::parse(&s.id()).is_some_and(|l| l.source == Source::Screen));
            if let Some(stream) = screen {
                if e.track().kind() == "video" {
                    *screen_in.borrow_mut() = Some(stream);
                }
                return;
            }
            // A stream of just this track: the sender's stream may carry both kinds.
            let Ok(stream) = MediaStream::new() else {
                return;
            };
            stream.add_track(&e.track());
            match e.track().kind().as_str() {
                "audio" if voice.borrow().is_none() => {
                    if let Ok(v) = spatial_voice(&audio, &stream) {
                        *voice.borrow_mut() = Some(v);
                    }
                }
                "video" => {
                    if let Some(old) = bubble.borrow_mut().take() {
                        old.remove();
                    }
                    match camera_bubble(peer, &stream) {
                        Ok(v) => *bubble.borrow_mut() = Some(v),
                        Err(e) => web_sys::console::warn_2(&"no camera bubble".into(), &e),
                    }
                }
                _ => {}
            }
        })
    };
    let ice_restarts = Rc::new(Cell::new(0u32));
    let on_state = {
        let (pc, app) = (pc.clone(), app.clone());
        let recovering = Rc::new(Cell::new(false));
        let ice_restarts = ice_restarts.clone();
        Closure::<dyn FnMut()>::new(move || match pc.connection_state() {
            RtcPeerConnectionState::Connected => {
                // A hallway peer plays: a room being left may close now.
                media_ready(&app, false);
            }
            RtcPeerConnectionState::Disconnected | RtcPeerConnectionState::Failed => recover(
                app.clone(),
                peer,
                pc.clone(),
                recovering.clone(),
                ice_restarts.clone(),
            ),
            _ => {}
        })
    };
    pc.set_onnegotiationneeded(Some(on_negotiation.as_ref().unchecked_ref()));
    pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
    pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));

    let negotiation = Rc::new(Negotiation {
        app: app.clone(),
        peer,
        pc: pc.clone(),
        polite,
        making_offer,
        ignore_offer: Cell::new(false),
        sending: sending.clone(),
        screen_out: screen_out.clone(),
        signals: InOrder::new(pc.clone()),
    });
    a.media.peers.insert(
        peer,
        Peer {
            pc,
            since_ms: dom::now_ms(),
            negotiation,
            sending,
            voice,
            bubble,
            screen_in,
            screen_out,
            remote,
            ice_restarts,
            _handlers: vec![
                Box::new(on_negotiation),
                Box::new(on_candidate),
                Box::new(on_track),
                Box::new(on_state),
            ],
        },
    );
    Ok(())
}

/// Puts the local tracks on `pc`, or with nothing to send, asks to receive audio.
fn add_local_tracks(pc: &RtcPeerConnection, local: Option<&MediaStream>) -> Result<(), JsValue> {
    match local {
        Some(stream) => {
            for track in stream.get_tracks().iter() {
                let track: MediaStreamTrack = track.dyn_into()?;
                pc.add_track_0(&track, stream);
            }
        }
        None => {
            pc.add_transceiver_with_str("audio");
        }
    }
    Ok(())
}

/// A muted, round `<video>` of a peer's camera in the page's bubble layer.
fn camera_bubble(peer: AvatarId, stream: &MediaStream) -> Result<HtmlVideoElement, JsValue> {
    let document = dom::document()?;
    let video: HtmlVideoElement = document.create_element("video")?.dyn_into()?;
    video.set_class_name("bubble");
    video.set_attribute("data-peer", &peer.0.to_string())?;
    video.set_muted(true);
    video.set_autoplay(true);
    video.set_attribute("playsinline", "")?;
    video.set_hidden(true);
    video.set_src_object(Some(stream));
    let _ = video.play();
    dom::by_id(&document, "bubbles")?.append_child(&video)?;
    Ok(video)
}

fn spatial_voice(audio: &AudioContext, stream: &MediaStream) -> Result<Voice, JsValue> {
    let element = HtmlAudioElement::new()?;
    element.set_src_object(Some(stream));
    element.set_muted(true);
    let _ = element.play();
    let source = audio.create_media_stream_source(stream)?;
    let gain = audio.create_gain()?;
    gain.gain().set_value(0.0);
    let pan = audio.create_stereo_panner()?;
    source.connect_with_audio_node(&gain)?;
    gain.connect_with_audio_node(&pan)?;
    pan.connect_with_audio_node(&audio.destination())?;
    Ok(Voice {
        element,
        source,
        gain,
        pan,
    })
}

/// Closes the connection with `peer`.
/// The first ICE restart of a hallway connection that went down comes after at most this
/// long, milliseconds (a connection briefly `disconnected` often recovers by itself);
/// each one that does not bring it back doubles the wait, up to [`RESTART_MAX_MS`].
const RESTART_FIRST_MS: f64 = 2_000.0;

const RESTART_MAX_MS: f64 = 15_000.0;

/// Restarts ICE with `peer` on a backoff with jitter while `pc` is down, for as long as it
/// is the link's connection (the server ends the link when the avatars part). One loop per
/// connection (`recovering`); `restarts` counts them for the test surface.
fn recover(
    app: AppRef,
    peer: AvatarId,
    pc: RtcPeerConnection,
    recovering: Rc<Cell<bool>>,
    restarts: Rc<Cell<u32>>,
) {
    if recovering.replace(true) {
        return;
    }
    wasm_bindgen_futures::spawn_local(async move {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = crate::reconnect::backoff_ms(
                attempt,
                RESTART_FIRST_MS,
                RESTART_MAX_MS,
                js_sys::Math::random(),
            );
            dom::sleep_ms(wait).await;
            let current = app.upgrade().is_some_and(|a| {
                a.try_borrow().is_ok_and(|a| {
                    a.media.peers.get(&peer).is_some_and(|p| {
                        AsRef::<JsValue>::as_ref(&p.pc) == AsRef::<JsValue>::as_ref(&pc)
                    })
                })
            });
            match pc.connection_state() {
                _ if !current => break,
                RtcPeerConnectionState::Connected | RtcPeerConnectionState::Closed => break,
                _ => {
                    ext(&pc).restart_ice();
                    restarts.set(restarts.get() + 1);
                    if let Some(a) = app.upgrade()
                        && let Ok(mut a) = a.try_borrow_mut()
                    {
                        a.status = format!("Reconnecting to {}…", a.game.name_of(peer));
                    }
                }
            }
        }
        recovering.set(false);
    });
}

pub fn disconnect(app: &AppRef, peer: AvatarId) {
    let Some(app_rc) = app.upgrade() else { return };
    let Some(p) = app_rc.borrow_mut().media.peers.remove(&peer) else {
        return;
    };
    p.pc.set_onnegotiationneeded(None);
    p.pc.set_onicecandidate(None);
    p.pc.set_ontrack(None);
    p.pc.set_onconnectionstatechange(None);
    p.pc.close();
    if let Some(video) = p.bubble.borrow_mut().take() {
        video.set_src_object(None);
        video.remove();
    }
    p.screen_in.borrow_mut().take();
    if let Some(v) = p.voice.borrow_mut().take() {
        let _ = v.source.disconnect();
        let _ = v.gain.disconnect();
        let _ = v.pan.disconnect();
        v.element.set_src_object(None);
    }
}

/// The signaling of one hallway connection (perfect negotiation: the impolite side ignores
/// a colliding offer; the polite side rolls back and answers). What the peer sends is
/// handled one signal at a time, in order: an offer must meet the state the answer before
/// it left, not the one it found while that answer was still being applied (an impolite
/// side would take the second for a collision and ignore it, and the peer would wait for
/// an answer forever).
struct Negotiation {
    app: AppRef,
    peer: AvatarId,
    pc: RtcPeerConnection,
    polite: bool,
    making_offer: Rc<Cell<bool>>,
    ignore_offer: Cell<bool>,
    /// Whether our tracks are on the connection yet (the polite side adds them when it
    /// answers the first offer).
    sending: Rc<Cell<bool>>,
    /// The transceiver our screen goes out on, once we have shared one with this peer.
    screen_out: Rc<RefCell<Option<RtcRtpTransceiver>>>,
    /// What the peer sends, handled in order.
    signals: Rc<InOrder<Signal>>,
}

impl Negotiation {
    fn push(self: &Rc<Self>, signal: Signal) {
        let this = self.clone();
        self.signals.push(signal, move |signal| {
            let this = this.clone();
            async move { this.handle(signal).await }
        });
    }

    async fn handle(&self, signal: Signal) {
        let pc = &self.pc;
        match signal {
            Signal::Description { kind, sdp } => {
                let collision = kind == SdpKind::Offer
                    && (self.making_offer.get()
                        || pc.signaling_state() != RtcSignalingState::Stable);
                self.ignore_offer.set(!self.polite && collision);
                if self.ignore_offer.get() {
                    return;
                }
                let desc = RtcSessionDescriptionInit::new(sdp_type(kind));
                desc.set_sdp(&sdp);
                if let Err(e) = JsFuture::from(pc.set_remote_description(&desc)).await {
                    web_sys::console::warn_2(
                        &format!("description from {} refused:", self.peer).into(),
                        &e,
                    );
                    return;
                }
                if kind == SdpKind::Offer && !self.sending.replace(true) {
                    let (local, screen) = self
                        .app
                        .upgrade()
                        .and_then(|a| {
                            let a = a.try_borrow().ok()?;
                            let screen = a
                                .media
                                .screen_out()
                                // `Clone::clone`: `clone()` on these is the JS method that copies
                                // the track or stream.
                                .map(|(t, s)| (Clone::clone(t), Clone::clone(s)));
                            Some((a.media.local.clone(), screen))
                        })
                        .unwrap_or_default();
                    // With nothing to send, the offer's transceivers already receive.
                    if let Some(local) = local
                        && let Err(e) = add_local_tracks(pc, Some(&local))
                    {
                        web_sys::console::warn_2(&"could not add local tracks".into(), &e);
                    }
                    // A new transceiver: renegotiated once this answer is done.
                    if let Some((track, carrier)) = &screen {
                        send_screen(pc, &self.screen_out, Some((track, carrier)));
                    }
                }
                if kind == SdpKind::Offer {
                    match JsFuture::from(ext(pc).set_local_description_implicit()).await {
                        Ok(_) => send_local_description(&self.app, self.peer, pc),
                        Err(e) => web_sys::console::warn_2(
                            &format!("no answer to {}:", self.peer).into(),
                            &e,
                        ),
                    }
                }
            }
            Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                let init = RtcIceCandidateInit::new(&candidate);
                init.set_sdp_mid(sdp_mid.as_deref());
                init.set_sdp_m_line_index(sdp_m_line_index);
                let added = JsFuture::from(
                    pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
                )
                .await;
                if added.is_err() && !self.ignore_offer.get() {
                    web_sys::console::warn_1(
                        &format!("ICE candidate from {} refused", self.peer).into(),
                    );
                }
            }
        }
    }
}

/// Handles signaling from `from`, in the order it came (see [`Negotiation`]).
pub fn on_signal(app: &AppRef, from: AvatarId, signal: Signal) {
    let Some(app_rc) = app.upgrade() else { return };
    let negotiation = app_rc
        .borrow()
        .media
        .peers
        .get(&from)
        .map(|p| p.negotiation.clone());
    if let Some(negotiation) = negotiation {
        negotiation.push(signal);
    }
}

/// Shows the screen a hallway peer shares in `#hallway-screen` (the lowest id's if several
/// share), or hides it. `name` gives a peer's display name.
pub fn place_peer_screen(peers: &HashMap<AvatarId, Peer>, name: impl Fn(AvatarId) -> String) {
    let shown = peers
        .iter()
        .filter(|(_, p)| p.remote.screen)
        .filter_map(|(id, p)| {
            let stream = p.screen_in.borrow().clone()?;
            stream_live(&stream, "video").then_some((*id, stream))
        })
        .min_by_key(|(id, _)| *id);
    let result = match &shown {
        Some((id, stream)) => screen::show("hallway-screen", Some((&name(*id), stream))),
        None => screen::show("hallway-screen", None),
    };
    if let Err(e) = result {
        web_sys::console::warn_1(&e);
    }
}

/// Places each peer's camera bubble above its avatar (`screen` maps a peer to its
/// avatar's position on screen), hidden while its camera is off or it is out of view.
pub fn place_bubbles(
    peers: &HashMap<AvatarId, Peer>,
    screen: impl Fn(AvatarId) -> Option<(f64, f64)>,
) {
    for (id, peer) in peers {
        let Some(video) = peer.bubble.borrow().clone() else {
            continue;
        };
        match screen(*id).filter(|_| peer.remote.camera) {
            Some((x, y)) => {
                let style = video.style();
                let _ = style.set_property("left", &format!("{}px", x - BUBBLE_PX / 2.0));
                let _ = style.set_property("top", &format!("{}px", y - BUBBLE_PX - 34.0));
                video.set_hidden(false);
            }
            None => video.set_hidden(true),
        }
    }
}

/// Sets every peer's gain and pan from its place relative to ours.
pub fn place_voices(
    peers: &HashMap<AvatarId, Peer>,
    place: impl Fn(AvatarId) -> Option<(f32, f32)>,
    rules: &quad_shared::proximity::ProximityRules,
) {
    for (id, peer) in peers {
        let (Some((distance, dx)), Some(voice)) = (
            place(*id),
            peer.voice
                .borrow()
                .as_ref()
                .map(|v| (v.gain.clone(), v.pan.clone())),
        ) else {
            continue;
        };
        voice.0.gain().set_value(rules.gain(distance));
        voice
            .1
            .pan()
            .set_value((dx / rules.disconnect_radius).clamp(-1.0, 1.0));
    }
}
