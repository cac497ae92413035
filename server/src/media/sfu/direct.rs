//! Quad's own send path for forwarded microphones: a packet is numbered, encrypted and
//! queued for the media port here, in the forwarder's task, instead of going through
//! webrtc-rs's per-packet pipeline (its track, event channel, driver loop and interceptor
//! chain, about two thirds of the server's CPU when forwarding; see the README's
//! measurements). The m-lines these streams go on are Quad's own (`mic_lines`): webrtc-rs
//! knows nothing of them.
//!
//! One [`Direct`] per member connection, shared by the forwarders that send to it. It needs
//! two things the connection makes as it comes up, and until both are there it declines
//! (the packet is lost to that member; forwarding starts once the connection is up):
//! - the connection's sending SRTP keys ([`super::srtp_keys::KeyCapture`]), made by the
//!   DTLS handshake;
//! - where the connection's media goes ([`SendPath`], learnt from its driver's sends).
//!
//! Every packet is numbered from the connection's one transport-wide counter and recorded
//! in its one history ([`TransportWide`]), so the member's feedback and the bandwidth
//! estimate cover both paths alike; a stream's extension id is bound when the member's
//! answer takes its m-line ([`Direct::bind`]).
//!
//! Only microphones go this way: video keeps webrtc-rs's NACK responder, which resends
//! from what it sent. Sender reports for these streams are not sent (receivers play audio
//! without them; they are for lip sync and statistics).

use super::batch_udp::SendPath;
use super::srtp_keys::{KeyCapture, SrtpKeys};
use super::transport_cc::TransportWide;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One member connection's direct send path (see the module docs).
pub struct Direct {
    keys: Arc<KeyCapture>,
    transport: Arc<TransportWide>,
    path: Arc<SendPath>,
    srtp: Mutex<Option<Context>>,
}

impl Direct {
    pub fn new(
        keys: Arc<KeyCapture>,
        transport: Arc<TransportWide>,
        path: Arc<SendPath>,
    ) -> Direct {
        Direct {
            keys,
            transport,
            path,
            srtp: Mutex::new(None),
        }
    }

    /// Numbers the stream `ssrc` with the transport-wide extension `id` (none: the member
    /// did not take the extension, and its packets go unnumbered).
    pub fn bind(&self, ssrc: u32, id: Option<u8>) {
        self.transport.bind(ssrc, id);
    }

    /// Sends one forwarded RTP packet (its header already rewritten for this leg, without
    /// extensions) to the member; hands it back when it cannot (see the module docs).
    pub fn send(&self, mut packet: rtc::rtp::Packet) -> Result<(), rtc::rtp::Packet> {
        if !self.path.is_known() {
            return Err(packet);
        }
        // The context is the one thing here that is per connection and stateful (each
        // stream's rollover counter): one lock for encrypting, held briefly.
        let mut srtp = self.srtp.lock().unwrap_or_else(|e| e.into_inner());
        if srtp.is_none() {
            *srtp = self.keys.sending().and_then(|keys| context(&keys));
        }
        let Some(context) = srtp.as_mut() else {
            return Err(packet);
        };
        // The transport-wide number goes in a one-byte header extension (4 bytes with the
        // extension header, 4 with its padding).
        let size = packet.marshal_size() + if packet.header.extension { 4 } else { 8 };
        if let Some((extension_id, number)) = self.transport.number(
            packet.header.ssrc,
            packet.header.sequence_number,
            size,
            Instant::now(),
        ) {
            let extension = bytes::Bytes::copy_from_slice(&number.to_be_bytes());
            if packet
                .header
                .set_extension(extension_id, extension)
                .is_err()
            {
                return Err(packet);
            }
        }
        let Ok(sealed) = packet
            .marshal()
            .and_then(|plain| context.encrypt_rtp(&plain))
        else {
            return Err(packet);
        };
        drop(srtp);
        if self.path.send(&sealed) {
            Ok(())
        } else {
            Err(packet)
        }
    }
}

/// The sending SRTP context for `keys`.
fn context(keys: &SrtpKeys) -> Option<Context> {
    let crypto = rtc::crypto::default_provider().ok()?;
    keys.context(crypto.crypto())
        .inspect_err(|error| tracing::warn!(%error, "cannot make the direct path's SRTP context"))
        .ok()
}
