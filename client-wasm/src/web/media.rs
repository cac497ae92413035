//! This client's devices and where they go ([`Media`]): the microphone and camera
//! (`getUserMedia`, [`acquire_local`]), the shared screen, the audio context remote voices
//! play through, and the connections they are sent on (the hallway peers, `hallway`, and
//! the room, `classroom`). A toggle here reaches every connection: muting, turning the
//! camera off and on, sharing and stopping a screen.

use super::classroom::Room;
use super::dom;
use super::hallway::{Peer, send_screen};
use super::screen::ScreenShare;
use quad_shared::AvatarId;
use quad_shared::media::Source;
use quad_shared::protocol::MediaFlags;
use std::collections::HashMap;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AudioContext, MediaStream, MediaStreamTrack, RtcRtpTransceiver};

/// Local devices and every connection they are sent on.
#[derive(Default)]
pub struct Media {
    /// The microphone and camera.
    pub local: Option<MediaStream>,
    /// The screen being shared.
    pub screen: Option<ScreenShare>,
    /// The stream our screen is sent in to peers: one for the whole session, so its id (which
    /// we rename in what we send) stays that of every screen transceiver.
    pub(super) screen_stream: Option<MediaStream>,
    pub audio: Option<AudioContext>,
    pub peers: HashMap<AvatarId, Peer>,
    /// The classroom connection, while this avatar is in a room zone.
    pub room: Option<Room>,
    /// `?relay=1` (dev servers): force media through TURN.
    pub relay_only: bool,
    /// `?fakescreen=1` (dev servers): share a drawn canvas instead of a screen.
    pub fake_screen: bool,
}

impl Media {
    pub fn mic_on(&self) -> bool {
        self.track_live("audio")
    }

    pub fn camera_on(&self) -> bool {
        self.track_live("video")
    }

    /// Our state, as the server and our peers should know it.
    pub fn flags(&self) -> MediaFlags {
        MediaFlags {
            mic: self.mic_on(),
            camera: self.camera_on(),
            screen: self.screen.is_some(),
        }
    }

    /// The microphone track, if it is on.
    pub fn mic_track(&self) -> Option<MediaStreamTrack> {
        self.local_tracks("audio").into_iter().find(|t| t.enabled())
    }

    /// The camera track, if it is on.
    pub fn camera_track(&self) -> Option<MediaStreamTrack> {
        self.local_tracks("video").into_iter().next()
    }

    /// The screen track and the stream it goes to peers in, while sharing.
    pub(super) fn screen_out(&self) -> Option<(&MediaStreamTrack, &MediaStream)> {
        Some((&self.screen.as_ref()?.track, self.screen_stream.as_ref()?))
    }

    fn local_tracks(&self, kind: &str) -> Vec<MediaStreamTrack> {
        let Some(stream) = &self.local else {
            return Vec::new();
        };
        stream
            .get_tracks()
            .iter()
            .filter_map(|t| t.dyn_into::<MediaStreamTrack>().ok())
            .filter(|t| t.kind() == kind)
            .collect()
    }

    fn track_live(&self, kind: &str) -> bool {
        self.local_tracks(kind).iter().any(|t| t.enabled())
    }

    /// Mutes or unmutes the microphone (the track stays, sending silence). Returns whether
    /// there is a microphone to toggle.
    pub fn set_mic(&self, on: bool) -> bool {
        let tracks = self.local_tracks("audio");
        for t in &tracks {
            t.set_enabled(on);
        }
        // The SFU gets the microphone only while it is on (its speaker detection listens).
        if let Some(room) = &self.room {
            room.send(Source::Mic, tracks.first().filter(|_| on));
        }
        !tracks.is_empty()
    }

    /// Turns the camera off: the track stops (the camera light goes out) and every
    /// connection's camera sender sends nothing.
    pub fn camera_off(&self) {
        let cameras = self.local_tracks("video");
        let ids: Vec<String> = cameras.iter().map(|t| t.id()).collect();
        for t in &cameras {
            t.stop();
            if let Some(stream) = &self.local {
                stream.remove_track(t);
            }
        }
        for peer in self.peers.values() {
            for sender in peer.pc.get_senders().iter() {
                let Ok(sender) = sender.dyn_into::<web_sys::RtcRtpSender>() else {
                    continue;
                };
                // Only the camera's sender: the screen's keeps sending.
                if sender.track().is_some_and(|t| ids.contains(&t.id())) {
                    let _ = sender.replace_track(None);
                }
            }
        }
        if let Some(room) = &self.room {
            room.send(Source::Camera, None);
            room.set_local(self.local.clone());
        }
    }

    /// Puts a new camera track on the local stream and on every connection that sends:
    /// into an idle video sender if there is one, else as a new track (renegotiated).
    pub fn camera_on_with(&mut self, track: &MediaStreamTrack) -> Result<(), JsValue> {
        let stream = match &self.local {
            // `Clone::clone`: `MediaStream::clone` is the JS method that copies the stream.
            Some(s) => Clone::clone(s),
            None => {
                let s = MediaStream::new()?;
                self.local = Some(Clone::clone(&s));
                s
            }
        };
        stream.add_track(track);
        for peer in self.peers.values() {
            if !peer.sending.get() {
                // The polite side adds the local stream's tracks when it answers.
                continue;
            }
            // A video transceiver that sends nothing (the camera was off, or this side
            // answered an offer with video while it had none): reuse it, and let it send.
            // Not our screen's: its stream is named as a screen.
            let screen_out = peer.screen_out.borrow().clone();
            let idle = peer.pc.get_transceivers().iter().find_map(|t| {
                let t: RtcRtpTransceiver = t.dyn_into().ok()?;
                let video = t.receiver().track().kind() == "video";
                let ours = screen_out.as_ref() == Some(&t);
                (video && !ours && t.sender().track().is_none()).then_some(t)
            });
            match idle {
                Some(t) => {
                    let _ = t.sender().replace_track(Some(track));
                    if t.direction() != web_sys::RtcRtpTransceiverDirection::Sendrecv {
                        // Renegotiates (perfect negotiation takes it from here).
                        t.set_direction(web_sys::RtcRtpTransceiverDirection::Sendrecv);
                    }
                }
                None => {
                    peer.pc.add_track_0(track, &stream);
                }
            }
        }
        if let Some(room) = &self.room {
            room.send(Source::Camera, Some(track));
            room.set_local(self.local.clone());
        }
        Ok(())
    }

    /// Starts sending a captured screen: to every peer that we send to, and to the room.
    pub fn share_screen(&mut self, share: ScreenShare) -> Result<(), JsValue> {
        let carrier = match &self.screen_stream {
            Some(s) => Clone::clone(s),
            None => {
                let s = MediaStream::new()?;
                self.screen_stream = Some(Clone::clone(&s));
                s
            }
        };
        for old in carrier.get_tracks().iter() {
            if let Ok(old) = old.dyn_into::<MediaStreamTrack>() {
                carrier.remove_track(&old);
            }
        }
        carrier.add_track(&share.track);
        for peer in self.peers.values().filter(|p| p.sending.get()) {
            send_screen(&peer.pc, &peer.screen_out, Some((&share.track, &carrier)));
        }
        if let Some(room) = &self.room {
            room.send(Source::Screen, Some(&share.track));
        }
        self.screen = Some(share);
        Ok(())
    }

    /// Stops sharing the screen, everywhere; `false` if none was shared.
    pub fn stop_screen(&mut self) -> bool {
        let Some(share) = self.screen.take() else {
            return false;
        };
        for peer in self.peers.values() {
            send_screen(&peer.pc, &peer.screen_out, None);
        }
        if let Some(room) = &self.room {
            room.send(Source::Screen, None);
        }
        if let Some(carrier) = &self.screen_stream {
            carrier.remove_track(&share.track);
        }
        // Dropping the share stops the capture.
        drop(share);
        true
    }

    /// The audio context, created on first use (browsers may start it suspended until a
    /// user gesture; `resume` is called from key and click handlers).
    pub(super) fn audio(&mut self) -> Result<AudioContext, JsValue> {
        if let Some(ctx) = &self.audio {
            return Ok(ctx.clone());
        }
        let ctx = AudioContext::new()?;
        self.audio = Some(ctx.clone());
        Ok(ctx)
    }

    pub fn resume_audio(&self) {
        if let Some(ctx) = &self.audio {
            let _ = ctx.resume();
        }
    }
}

/// Asks for the microphone and camera; `None` if the user has neither or says no.
pub async fn acquire_local(mic: bool, camera: bool) -> Option<MediaStream> {
    if !mic && !camera {
        return None;
    }
    let devices = dom::window().ok()?.navigator().media_devices().ok()?;
    let constraints = web_sys::MediaStreamConstraints::new();
    constraints.set_audio(&JsValue::from_bool(mic));
    constraints.set_video(&JsValue::from_bool(camera));
    let promise = devices.get_user_media_with_constraints(&constraints).ok()?;
    JsFuture::from(promise).await.ok()?.dyn_into().ok()
}
