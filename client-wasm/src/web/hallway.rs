//! Proximity media in the hallway: one `RTCPeerConnection` per peer the server links this
//! avatar with, negotiated with the WebRTC "perfect negotiation" pattern over the server's
//! signaling relay (the server decides who is polite), each peer's signals handled in the
//! order they came ([`Negotiation`]). Remote audio plays through
//! WebAudio: one gain and one stereo panner per peer, set from positions every frame,
//! fading to silence at the disconnect radius. A peer's camera shows in a round `<video>`
//! bubble above its avatar. The server tells us each peer's microphone, camera and screen
//! state (we tell it ours on every toggle). A connection that goes down (`disconnected` or
//! `failed`) is restarted (ICE restart) on a backoff with jitter for as long as the link
//! lasts, by the impolite side; the polite side restarts only when the other has not
//! offered for a whole (longer) wait of its own ([`recover`]). A connection that says
//! `connected` while nothing arrives from a peer whose microphone or camera is on is
//! replaced by a new one on both sides ([`watch`], [`Signal::Renew`]): Firefox was seen to
//! stay like that after ICE restarts, and no further restart brought it back.
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
    /// Our side is the polite one (kept for a renewal).
    polite: bool,
    /// Which connection with this peer this is: 0 for the first, then one more for each
    /// renewal ([`renew`]), ours or the peer's.
    pub generation: u32,
    /// When this connection replaced the one before (`performance.now()` ms).
    renewed_ms: Option<f64>,
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
    let remote_offers = Rc::new(Cell::new(0u32));
    let on_state = {
        let (pc, app) = (pc.clone(), app.clone());
        let recovering = Rc::new(Cell::new(false));
        let ice_restarts = ice_restarts.clone();
        let remote_offers = remote_offers.clone();
        Closure::<dyn FnMut()>::new(move || match pc.connection_state() {
            RtcPeerConnectionState::Connected => {
                // A hallway peer plays: a room being left may close now.
                media_ready(&app, false);
            }
            RtcPeerConnectionState::Disconnected | RtcPeerConnectionState::Failed => recover(
                app.clone(),
                peer,
                pc.clone(),
                Recovery {
                    polite,
                    running: recovering.clone(),
                    restarts: ice_restarts.clone(),
                    remote_offers: remote_offers.clone(),
                },
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
        remote_offers,
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
            polite,
            generation: 0,
            renewed_ms: None,
            _handlers: vec![
                Box::new(on_negotiation),
                Box::new(on_candidate),
                Box::new(on_track),
                Box::new(on_state),
            ],
        },
    );
    drop(a);
    watch(app.clone(), peer);
    Ok(())
}

/// How often [`watch`] looks at what a connection receives, milliseconds.
const WATCH_EVERY_MS: f64 = 2_000.0;
/// A `connected` connection that received nothing this long from a peer whose microphone
/// or camera is on is renewed; each renewal of the link doubles it, up to
/// [`SILENCE_MAX_MS`], so a peer whose device sends nothing is not renewed forever.
const SILENCE_FIRST_MS: f64 = 6_000.0;
const SILENCE_MAX_MS: f64 = 60_000.0;
/// A peer's renewals closer together than this are ignored: one honest side renews at
/// most once per [`SILENCE_FIRST_MS`].
const RENEW_MIN_GAP_MS: f64 = 3_000.0;

/// How long [`watch`] waits in silence before renewing a link renewed `generation` times.
fn silence_limit_ms(generation: u32) -> f64 {
    (SILENCE_FIRST_MS * f64::from(1u32 << generation.min(8))).min(SILENCE_MAX_MS)
}

/// Watches the connection with `peer` for as long as it is the link's current one: while
/// it is `connected` and the peer's microphone or camera is on, the audio and video bytes
/// received must rise; when they have not for [`silence_limit_ms`], it is renewed.
fn watch(app: AppRef, peer: AvatarId) {
    let Some(pc) = app.upgrade().and_then(|a| {
        a.try_borrow()
            .ok()?
            .media
            .peers
            .get(&peer)
            .map(|p| p.pc.clone())
    }) else {
        return;
    };
    spawn_local(async move {
        let mut received = -1.0;
        let mut quiet_since = dom::now_ms();
        loop {
            dom::sleep_ms(WATCH_EVERY_MS).await;
            let Some((expects, generation)) = app.upgrade().and_then(|a| {
                let a = a.try_borrow().ok()?;
                let p = a.media.peers.get(&peer)?;
                (AsRef::<JsValue>::as_ref(&p.pc) == AsRef::<JsValue>::as_ref(&pc))
                    .then_some((p.remote.mic || p.remote.camera, p.generation))
            }) else {
                break;
            };
            if pc.connection_state() != RtcPeerConnectionState::Connected || !expects {
                received = -1.0;
                quiet_since = dom::now_ms();
                continue;
            }
            let Some(bytes) = inbound_media_bytes(&pc).await else {
                continue;
            };
            if bytes > received {
                received = bytes;
                quiet_since = dom::now_ms();
            } else if dom::now_ms() - quiet_since >= silence_limit_ms(generation) {
                web_sys::console::warn_1(
                    &format!("nothing from {peer} for a while on a connected link: renewing it")
                        .into(),
                );
                renew(&app, peer, None);
                break;
            }
        }
    });
}

/// The audio and video bytes `pc` has received (its `inbound-rtp` statistics), or `None`
/// if the browser did not say.
async fn inbound_media_bytes(pc: &RtcPeerConnection) -> Option<f64> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    let values = js_sys::Reflect::get(&report, &"values".into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?
        .call0(&report)
        .ok()?;
    let mut bytes = 0.0;
    for stat in js_sys::try_iter(&values).ok()??.flatten() {
        let field = |name: &str| js_sys::Reflect::get(&stat, &name.into()).ok();
        if field("type").and_then(|t| t.as_string()).as_deref() == Some("inbound-rtp") {
            bytes += field("bytesReceived")
                .and_then(|b| b.as_f64())
                .unwrap_or(0.0);
        }
    }
    Some(bytes)
}

/// Replaces the connection with `peer` by a new one with the same roles: ours (`None`,
/// telling the peer with [`Signal::Renew`]) or at the peer's word (`Some(generation)`, which
/// is ignored if we are there already, or if the peer renews too often).
fn renew(app: &AppRef, peer: AvatarId, theirs: Option<u32>) {
    let Some(app_rc) = app.upgrade() else { return };
    let Some((polite, remote, generation, renewed_ms)) = app_rc.try_borrow().ok().and_then(|a| {
        let p = a.media.peers.get(&peer)?;
        Some((p.polite, p.remote, p.generation, p.renewed_ms))
    }) else {
        return;
    };
    let next = match theirs {
        Some(g) if g <= generation => return,
        Some(_) if renewed_ms.is_some_and(|t| dom::now_ms() - t < RENEW_MIN_GAP_MS) => {
            web_sys::console::warn_1(&format!("{peer} renews too often: ignored").into());
            return;
        }
        Some(g) => g,
        None => {
            let next = generation.saturating_add(1);
            send_signal(app, peer, Signal::Renew { generation: next });
            next
        }
    };
    disconnect(app, peer);
    if let Err(e) = connect(app, peer, polite, remote) {
        web_sys::console::warn_2(&format!("could not renew the link with {peer}:").into(), &e);
        return;
    }
    if let Ok(mut a) = app_rc.try_borrow_mut()
        && let Some(p) = a.media.peers.get_mut(&peer)
    {
        p.generation = next;
        p.renewed_ms = Some(dom::now_ms());
    }
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

/// What [`recover`] needs of one hallway connection.
struct Recovery {
    /// Our side is the polite one of the link.
    polite: bool,
    /// A recovery loop is running (one per connection).
    running: Rc<Cell<bool>>,
    /// ICE restarts made, for the test surface.
    restarts: Rc<Cell<u32>>,
    /// Offers from the peer applied so far ([`Negotiation::remote_offers`]).
    remote_offers: Rc<Cell<u32>>,
}

/// Whether the side waking in [`recover`] restarts ICE now: the impolite side always does;
/// the polite side only when the peer has made no offer (its own restart) during the wait.
/// Two sides restarting at once make colliding offers, perfect negotiation rolls the
/// polite one's back, and Firefox was seen left "connected" after that on a candidate
/// pair that carried nothing either way, with nobody restarting again.
fn restart_due(polite: bool, peer_offered_meanwhile: bool) -> bool {
    !polite || !peer_offered_meanwhile
}

/// The polite side's waits are this many times the impolite side's, so that it is the
/// impolite side's restart that normally comes first.
const POLITE_WAIT_FACTOR: f64 = 2.0;

/// Restarts ICE with `peer` on a backoff with jitter while `pc` is down, for as long as it
/// is the link's connection (the server ends the link when the avatars part), leaving it
/// to the impolite side where that one is restarting ([`restart_due`]). One loop per
/// connection.
fn recover(app: AppRef, peer: AvatarId, pc: RtcPeerConnection, recovery: Recovery) {
    if recovery.running.replace(true) {
        return;
    }
    wasm_bindgen_futures::spawn_local(async move {
        let factor = if recovery.polite {
            POLITE_WAIT_FACTOR
        } else {
            1.0
        };
        let mut attempt = 0;
        let mut offers_seen = recovery.remote_offers.get();
        loop {
            attempt += 1;
            let wait = crate::reconnect::backoff_ms(
                attempt,
                RESTART_FIRST_MS * factor,
                RESTART_MAX_MS * factor,
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
            let offered = recovery.remote_offers.get() != offers_seen;
            offers_seen = recovery.remote_offers.get();
            match pc.connection_state() {
                _ if !current => break,
                RtcPeerConnectionState::Connected | RtcPeerConnectionState::Closed => break,
                _ if !restart_due(recovery.polite, offered) => {}
                _ => {
                    ext(&pc).restart_ice();
                    recovery.restarts.set(recovery.restarts.get() + 1);
                    if let Some(a) = app.upgrade()
                        && let Ok(mut a) = a.try_borrow_mut()
                    {
                        a.status = format!("Reconnecting to {}…", a.game.name_of(peer));
                    }
                }
            }
        }
        recovery.running.set(false);
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
    /// Offers from the peer applied so far (an ICE restart of the peer's shows here).
    remote_offers: Rc<Cell<u32>>,
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
                if kind == SdpKind::Offer {
                    self.remote_offers
                        .set(self.remote_offers.get().wrapping_add(1));
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
            // Handled before it is queued (`on_signal`).
            Signal::Renew { .. } => {}
        }
    }
}

/// Handles signaling from `from`, in the order it came (see [`Negotiation`]).
pub fn on_signal(app: &AppRef, from: AvatarId, signal: Signal) {
    // Everything after a renewal is for the peer's new connection, so ours is replaced
    // before the next signal is handled.
    if let Signal::Renew { generation } = signal {
        return renew(app, from, Some(generation));
    }
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
