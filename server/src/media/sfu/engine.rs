//! How the SFU builds a peer connection: the codecs it forwards (Opus and VP8), the RTP
//! header extensions it reads (audio level), the interceptors (NACK, RTCP reports, TWCC
//! feedback for what it receives, Quad's transport-wide numbering and congestion control
//! for what it sends ([`TransportWideCc`]), [`KeyframeRequests`], which hands viewers'
//! picture-loss requests to the SFU, and [`UnacknowledgedLayers`], which keeps simulcast
//! layers identifiable across renegotiations), the local addresses it offers, the crypto
//! provider that learns its SRTP keys ([`KeyCapture`]), and the runtime ([`SfuRuntime`])
//! whose UDP sockets are virtual sockets on the media port that batch their sends. With
//! the connection comes its [`Direct`] send path, which forwarded microphones take.
//!
//! The send history (`transport_cc`) resolves the member's transport-wide feedback for
//! packets of both paths and drives Quad's [`super::estimator::DownlinkEstimator`];
//! [`DownlinkEstimate`] is where the estimate comes out, for the room's
//! [`super::allocation`]. No pacer: the allocation keeps what is forwarded
//! within the estimate, and a pacer would hold audio behind video bursts (keyframes).
//! Retransmissions are held to a share of the estimate ([`RetransmissionBudget`]).

use super::batch_udp::{SendPath, SfuRuntime};
use super::direct::Direct;
use super::estimator::{DownlinkEstimate, DownlinkEstimator};
use super::media_port::PortLink;
use super::retransmission::RetransmissionBudget;
use super::srtp_keys::{self, KeyCapture};
use super::transport_cc::{TransportWide, TransportWideCc};
use super::{SfuConfig, Source};
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

/// The audio level header extension (RFC 6464): how loud each packet is.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The RTP stream id header extension (RFC 8852): which simulcast layer a packet belongs to.
pub const RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// The Opus codec as the SFU negotiates it on every leg.
pub fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The VP8 codec as the SFU negotiates it on every leg.
pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        // `register_default_interceptors` adds NACK, PLI and transport-cc feedback.
        rtcp_feedback: vec![],
    }
}

/// The one codec the SFU negotiates for a stream of `kind` (the engine registers exactly one
/// per media kind: Opus for the mic, VP8 for the camera and the screen).
pub fn negotiated_codec(kind: Source) -> RTCRtpCodec {
    match kind {
        Source::Mic => opus(),
        Source::Camera | Source::Screen => vp8(),
    }
}

/// Builds one SFU-side peer connection whose events go to `handler`, whose datagrams go
/// through `link`, and whose sending direction's bandwidth estimate goes to `estimate`;
/// with it, the connection's direct send path for forwarded microphones.
pub async fn peer_connection(
    config: &SfuConfig,
    link: Arc<PortLink>,
    handler: Arc<dyn PeerConnectionEventHandler>,
    estimate: Arc<DownlinkEstimate>,
) -> anyhow::Result<(Arc<dyn PeerConnection>, Arc<Direct>)> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // Simulcast layers are told apart by these (the browser sends them on each layer).
    for uri in [
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        RTP_STREAM_ID_URI,
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    ] {
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )?;
    }
    // After the codecs: it adds NACK/PLI feedback only to codecs already registered. It
    // also negotiates the transport-wide sequence number extension and `transport-cc`
    // feedback for audio and video, both ways: publishers get feedback on what they send
    // (the TWCC receiver), and the server numbers what it sends (the TWCC sender) so that
    // viewers' browsers report on it to the congestion controller.
    // Quad numbers what it sends itself (see `transport_cc`): one counter and one history
    // for webrtc-rs's packets and the direct path's.
    let transport = TransportWide::new(DownlinkEstimator::new(estimate.clone()));
    let registry = register_default_interceptors(Registry::new(), &mut media)?
        .with(Slot::TwccSender, TransportWideCc::new(transport.clone()))
        // Between the NACK responder (4_000) and the wire, to see its resends go out.
        .with(Slot::from(3_500), RetransmissionBudget::new(estimate))
        // Wire-ward of the receiver reports (10_000), so the reports pass it on their way out.
        .with(Slot::from(9_500), UnacknowledgedLayers::default())
        .with(Slot::from(14_000), KeyframeRequests::default());
    let keys = KeyCapture::new()?;
    let mut settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_crypto_provider(keys.clone())
        .with_srtp_protection_profiles(srtp_keys::PROFILES.to_vec());
    if let Some(ip) = config.public_ip {
        settings = settings.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
    }
    let path = Arc::new(SendPath::default());
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings.build())
        .with_handler(handler)
        .with_runtime(Arc::new(SfuRuntime::new(link, path.clone())))
        // The driver binds a socket here only for its address, which its host candidates
        // carry (the member's task puts the media port in them); the runtime closes it.
        .with_udp_addrs(driver_addrs(config.bind_ip))
        .build()
        .await?;
    Ok((Arc::new(pc), Arc::new(Direct::new(keys, transport, path))))
}

/// What a connection's driver binds for its host candidates, the media port being on
/// `bind_ip`. A wildcard stands for every interface address of its family (webrtc-rs
/// expands it), so the IPv6 wildcard, on which the media port takes both families, is given
/// with the IPv4 one: a server listening on `[::]` offers its IPv4 addresses too, and a
/// client with IPv4 alone still reaches it directly.
fn driver_addrs(bind_ip: std::net::IpAddr) -> Vec<std::net::SocketAddr> {
    let mut addrs = vec![std::net::SocketAddr::new(bind_ip, 0)];
    if bind_ip == std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) {
        addrs.push(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    }
    addrs
}

/// The last interceptor of the chain: keeps only viewers' keyframe requests (PLI, FIR) and
/// receiver reports (for their loss) of inbound RTCP and marks them for the application,
/// where they arrive as `TrackLocalEvent::OnRtcpPacket` on the forwarded track they name.
/// Everything else was already handled by the interceptors before it (NACK, TWCC).
///
/// webrtc-rs hands a compound RTCP packet whole to the track its first packet's first
/// destination names, and drops it when that is no track of its own: a receiver report
/// whose first block is about a microphone on one of Quad's own m-lines (`mic_lines`)
/// would take the camera's keyframe request beside it down with it. So each keyframe
/// request goes on alone, and each report block about a stream webrtc-rs sends goes on as
/// a receiver report of its own; blocks about other streams are dropped here.
#[derive(Default)]
pub struct KeyframeRequests {
    /// SSRCs of the streams webrtc-rs sends (its local streams).
    local: HashSet<u32>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            self.read.push_back(msg);
            return Ok(());
        };
        let (now, transport) = (msg.now, msg.transport);
        let mut deliver = |packet: Box<dyn rtc::rtcp::Packet>| {
            let mut message = AttributedPacket::new(Packet::Rtcp(vec![packet]));
            message.add(Attribute::DeliverToApplication);
            self.read.push_back(TaggedPacket {
                now,
                transport,
                message,
            });
        };
        for packet in packets {
            if is_keyframe_request(packet.as_ref()) {
                deliver(packet.clone());
            } else if let Some(rr) = packet.as_any().downcast_ref::<ReceiverReport>() {
                for report in rr.reports.iter().filter(|r| self.local.contains(&r.ssrc)) {
                    deliver(Box::new(ReceiverReport {
                        ssrc: rr.ssrc,
                        reports: vec![report.clone()],
                        profile_extensions: Default::default(),
                    }));
                }
            }
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.local.insert(info.ssrc);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.local.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Leaves the publishers' video streams out of the receiver reports the SFU sends, so that
/// simulcast layers stay identifiable after a renegotiation.
///
/// A browser marks a simulcast layer's packets with the layer's RID (and the MID) only until
/// a receiver report acknowledges that layer's SSRC. webrtc-rs forgets which SSRC carries
/// which layer at every renegotiation (it rebuilds a receiver from the SDP, where simulcast
/// layers have RIDs and no SSRCs) and learns it again only from a packet that carries the
/// RID. With the layers acknowledged, a publisher's camera stopped reaching the SFU at the
/// first renegotiation after it (someone else joining the room), and later viewers never
/// got a picture. Unacknowledged, the browser marks every packet, and the layers are known
/// again from the next packet on. The cost: a few bytes of header per video packet, and no
/// reception statistics for video at the publisher, which still gets them (and its
/// round-trip time) for its microphone. Streams are recognised by the RID header extension
/// negotiated on their m-line: every video stream a browser publishes, screen included.
#[derive(Default)]
pub struct UnacknowledgedLayers {
    /// SSRCs of the inbound streams whose m-line negotiated the RID extension.
    layered: HashSet<u32>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl UnacknowledgedLayers {
    /// `packets` without report blocks about layered streams.
    fn strip(&self, packets: &mut [Box<dyn rtc::rtcp::Packet>]) {
        // The blocks to keep, if any must go.
        let kept = |reports: &[ReceptionReport]| {
            reports
                .iter()
                .any(|r| self.layered.contains(&r.ssrc))
                .then(|| {
                    let kept = reports.iter().filter(|r| !self.layered.contains(&r.ssrc));
                    kept.cloned().collect::<Vec<_>>()
                })
        };
        for packet in packets.iter_mut() {
            let any = packet.as_any();
            if let Some(rr) = any.downcast_ref::<ReceiverReport>()
                && let Some(reports) = kept(&rr.reports)
            {
                *packet = Box::new(ReceiverReport {
                    reports,
                    ..rr.clone()
                });
            } else if let Some(sr) = any.downcast_ref::<SenderReport>()
                && let Some(reports) = kept(&sr.reports)
            {
                *packet = Box::new(SenderReport {
                    reports,
                    ..sr.clone()
                });
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for UnacknowledgedLayers {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if !self.layered.is_empty()
            && let Packet::Rtcp(packets) = &mut msg.message.packet
        {
            self.strip(packets);
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for UnacknowledgedLayers {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if info
            .rtp_header_extensions
            .iter()
            .any(|e| e.uri == RTP_STREAM_ID_URI)
        {
            self.layered.insert(info.ssrc);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.layered.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::shared::{TransportContext, TransportMessage};

    #[test]
    fn each_stream_kind_names_the_codec_the_engine_registered_for_it() {
        assert_eq!(negotiated_codec(Source::Mic).mime_type, MIME_TYPE_OPUS);
        assert_eq!(negotiated_codec(Source::Mic).clock_rate, 48_000);
        for kind in [Source::Camera, Source::Screen] {
            assert_eq!(negotiated_codec(kind).mime_type, MIME_TYPE_VP8);
            assert_eq!(negotiated_codec(kind).clock_rate, 90_000);
        }
    }

    fn stream(ssrc: u32, uris: &[&str]) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtp_header_extensions: uris
                .iter()
                .enumerate()
                .map(|(i, uri)| RTPHeaderExtension {
                    uri: (*uri).to_owned(),
                    id: i as u16 + 1,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TransportMessage {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    fn report(ssrc: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            last_sequence_number: 100,
            ..Default::default()
        }
    }

    /// What the reports that leave say about which SSRCs.
    fn reported(msg: &TaggedPacket) -> Vec<u32> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            panic!("not RTCP");
        };
        packets
            .iter()
            .flat_map(|p| {
                let any = p.as_any();
                let reports = any
                    .downcast_ref::<ReceiverReport>()
                    .map(|rr| rr.reports.clone())
                    .or_else(|| {
                        any.downcast_ref::<SenderReport>()
                            .map(|sr| sr.reports.clone())
                    })
                    .unwrap_or_default();
                reports.into_iter().map(|r| r.ssrc)
            })
            .collect()
    }

    #[test]
    fn reports_leave_out_streams_that_carry_rids_only() {
        let mut filter = UnacknowledgedLayers::default();
        // A camera layer (its m-line has the RID extension) and a microphone (audio level).
        filter.bind_remote_stream(&stream(11, &[RTP_STREAM_ID_URI]));
        filter.bind_remote_stream(&stream(22, &[AUDIO_LEVEL_URI]));
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![report(11), report(22)],
            ..Default::default()
        };
        let sr = SenderReport {
            ssrc: 1,
            reports: vec![report(22), report(11)],
            ..Default::default()
        };
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 11,
        };
        filter
            .handle_write(rtcp(vec![Box::new(rr), Box::new(sr), Box::new(pli)]))
            .expect("written");
        let out = filter.poll_write().expect("the packet goes on");
        assert_eq!(reported(&out), vec![22, 22]);
        let Packet::Rtcp(packets) = &out.message.packet else {
            panic!("not RTCP");
        };
        assert_eq!(packets.len(), 3, "no packet of the compound is lost");
        assert!(is_keyframe_request(packets[2].as_ref()));

        // Once the layer's stream is gone, reports about that SSRC pass again.
        filter.unbind_remote_stream(&stream(11, &[RTP_STREAM_ID_URI]));
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![report(11)],
            ..Default::default()
        };
        filter
            .handle_write(rtcp(vec![Box::new(rr)]))
            .expect("written");
        assert_eq!(reported(&filter.poll_write().expect("passes")), vec![11]);
        assert!(filter.poll_write().is_none());
    }

    #[test]
    fn feedback_reaches_each_stream_webrtc_rs_sends_apart() {
        let mut requests = KeyframeRequests::default();
        // A forwarded camera webrtc-rs sends; 33 is a microphone on one of Quad's lines.
        requests.bind_local_stream(&stream(11, &[]));
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![report(33), report(11)],
            ..Default::default()
        };
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 11,
        };
        let bye = rtc::rtcp::goodbye::Goodbye {
            sources: vec![1],
            ..Default::default()
        };
        requests
            .handle_read(rtcp(vec![Box::new(rr), Box::new(pli), Box::new(bye)]))
            .expect("read");
        let camera = requests.poll_read().expect("the camera's report");
        assert_eq!(
            reported(&camera),
            vec![11],
            "alone, so it is routed to the camera"
        );
        assert!(camera.message.has(&Attribute::DeliverToApplication));
        let request = requests.poll_read().expect("the keyframe request");
        let Packet::Rtcp(packets) = &request.message.packet else {
            panic!("not RTCP");
        };
        assert_eq!(packets.len(), 1);
        assert!(is_keyframe_request(packets[0].as_ref()));
        assert!(requests.poll_read().is_none(), "nothing else goes on");

        // Once webrtc-rs no longer sends it, its reports stop too.
        requests.unbind_local_stream(&stream(11, &[]));
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![report(11)],
            ..Default::default()
        };
        requests
            .handle_read(rtcp(vec![Box::new(rr)]))
            .expect("read");
        assert!(requests.poll_read().is_none());
        // RTP goes on untouched.
        let rtp = TransportMessage {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet::default())),
        };
        requests.handle_read(rtp).expect("read");
        assert!(requests.poll_read().is_some());
    }
}
