//! What the hallway's peer connections and the classroom's share about
//! `RTCPeerConnection`: making one with the server's ICE servers (and renewing them on the
//! open ones), the two methods web-sys does not bind, converting SDP types, whether a
//! received stream is live, telling the server that the media of a switch plays, and
//! running a connection's signaling steps in order ([`InOrder`]).

use super::AppRef;
use quad_shared::protocol::{IceServer, SdpKind};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{
    MediaStream, MediaStreamTrack, MediaStreamTrackState, RtcConfiguration, RtcPeerConnection,
    RtcSdpType, RtcSignalingState,
};

#[wasm_bindgen]
extern "C" {
    /// The two `RTCPeerConnection` methods web-sys does not bind.
    #[wasm_bindgen(extends = RtcPeerConnection, js_name = RTCPeerConnection)]
    pub(super) type PeerConnectionExt;
    /// `setLocalDescription()` with no argument: the implicit offer or answer of perfect
    /// negotiation.
    #[wasm_bindgen(method, js_name = setLocalDescription)]
    pub(super) fn set_local_description_implicit(this: &PeerConnectionExt) -> js_sys::Promise;
    #[wasm_bindgen(method, js_name = restartIce)]
    pub(super) fn restart_ice(this: &PeerConnectionExt);
}

pub(super) fn ext(pc: &RtcPeerConnection) -> &PeerConnectionExt {
    pc.unchecked_ref()
}

/// Whether `stream` carries a `kind` track that is live and receiving (not muted).
pub fn stream_live(stream: &MediaStream, kind: &str) -> bool {
    stream
        .get_tracks()
        .iter()
        .filter_map(|t| t.dyn_into::<MediaStreamTrack>().ok())
        .any(|t| t.kind() == kind && t.ready_state() == MediaStreamTrackState::Live && !t.muted())
}

/// A new peer connection with the server's ICE servers (`ice_servers`, from `Welcome`),
/// through TURN only with `relay_only`.
pub fn new_connection(
    ice_servers: &JsValue,
    relay_only: bool,
) -> Result<RtcPeerConnection, JsValue> {
    let config = RtcConfiguration::new();
    config.set_ice_servers(ice_servers);
    if relay_only {
        config.set_ice_transport_policy(web_sys::RtcIceTransportPolicy::Relay);
    }
    RtcPeerConnection::new_with_configuration(&config)
}

/// Fresh TURN credentials from the server: new connections use them, and so do ICE
/// restarts of the open ones (the hallway links' and the room's).
pub(crate) fn renew_ice_servers(app: &AppRef, servers: &[IceServer]) {
    let Some(app_rc) = app.upgrade() else { return };
    let mut a = app_rc.borrow_mut();
    a.ice_servers = ice_servers(servers);
    let config = RtcConfiguration::new();
    config.set_ice_servers(&a.ice_servers);
    if a.media.relay_only {
        config.set_ice_transport_policy(web_sys::RtcIceTransportPolicy::Relay);
    }
    let open = a.media.peers.values().map(|p| &p.pc);
    for pc in open.chain(a.media.room.as_ref().map(|r| &r.pc)) {
        if let Err(e) = pc.set_configuration_with_configuration(&config) {
            web_sys::console::warn_2(&"cannot renew the ICE servers:".into(), &e);
        }
    }
}

/// `RTCConfiguration.iceServers` from the server's list.
pub fn ice_servers(servers: &[IceServer]) -> JsValue {
    let list = js_sys::Array::new();
    for s in servers {
        let server = web_sys::RtcIceServer::new();
        let urls: js_sys::Array = s.urls.iter().map(|u| JsValue::from_str(u)).collect();
        server.set_urls(&urls);
        if let Some(user) = &s.username {
            server.set_username(user);
        }
        if let Some(credential) = &s.credential {
            server.set_credential(credential);
        }
        list.push(&server);
    }
    list.into()
}

pub(super) fn sdp_type(kind: SdpKind) -> RtcSdpType {
    match kind {
        SdpKind::Offer => RtcSdpType::Offer,
        SdpKind::Answer => RtcSdpType::Answer,
        SdpKind::Pranswer => RtcSdpType::Pranswer,
        SdpKind::Rollback => RtcSdpType::Rollback,
    }
}

pub(super) fn sdp_kind(t: RtcSdpType) -> SdpKind {
    match t {
        RtcSdpType::Answer => SdpKind::Answer,
        RtcSdpType::Pranswer => SdpKind::Pranswer,
        RtcSdpType::Rollback => SdpKind::Rollback,
        _ => SdpKind::Offer,
    }
}

/// Tells the server that the room's media (`room`) or a hallway peer's plays, so the old
/// media of a switch (hallway links after walking into a room, the room after walking out)
/// may close.
pub(crate) fn media_ready(app: &AppRef, room: bool) {
    if let Some(a) = app.upgrade()
        && let Ok(a) = a.try_borrow()
    {
        super::send(
            &a.ws,
            &quad_shared::protocol::ClientMsg::MediaReady { room },
        );
    }
}

/// Whether this browser has WebRTC (`RTCPeerConnection`). Without it a page walks and
/// chats but hears no one, and says so.
pub fn supported() -> bool {
    web_sys::window()
        .is_some_and(|w| js_sys::Reflect::has(&w, &"RTCPeerConnection".into()).unwrap_or(false))
}

/// What the page says when it cannot connect media for want of WebRTC.
pub const UNSUPPORTED: &str =
    "This browser has no WebRTC: you can walk and chat, but not hear or be heard here";

/// The most signaling steps waiting for one connection; more are dropped (the server
/// rate-limits what a peer can relay, so a full queue means a flood, not a negotiation).
pub(super) const STEPS_QUEUED: usize = 256;

/// The signaling steps of one connection, run one at a time in the order they came: a step
/// that arrives while an earlier one awaits waits for it, so an offer meets the state the
/// answer before it leaves, and a candidate the description before it. Steps still waiting
/// when the connection closes are dropped.
pub(super) struct InOrder<T> {
    pc: RtcPeerConnection,
    steps: RefCell<VecDeque<T>>,
    running: Cell<bool>,
}

impl<T: 'static> InOrder<T> {
    pub(super) fn new(pc: RtcPeerConnection) -> Rc<Self> {
        Rc::new(InOrder {
            pc,
            steps: RefCell::new(VecDeque::new()),
            running: Cell::new(false),
        })
    }

    /// Queues `step`; unless steps are running already, runs them (`run`) until none is
    /// left.
    pub(super) fn push<F>(self: &Rc<Self>, step: T, run: impl Fn(T) -> F + 'static)
    where
        F: Future<Output = ()> + 'static,
    {
        {
            let mut steps = self.steps.borrow_mut();
            if steps.len() >= STEPS_QUEUED {
                web_sys::console::warn_1(&"signaling steps dropped: too many waiting".into());
                return;
            }
            steps.push_back(step);
        }
        if self.running.replace(true) {
            return;
        }
        let this = self.clone();
        spawn_local(async move {
            loop {
                // Not `while let`: the borrow must end before the step awaits.
                let step = this.steps.borrow_mut().pop_front();
                let Some(step) = step else { break };
                if this.pc.signaling_state() == RtcSignalingState::Closed {
                    this.steps.borrow_mut().clear();
                    break;
                }
                run(step).await;
            }
            this.running.set(false);
        });
    }
}
