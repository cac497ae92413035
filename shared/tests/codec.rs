//! The frame codec: round trips, the size limit, and malformed frames.

use quad_shared::AvatarId;
use quad_shared::codec::{self, CodecError, MAX_FRAME_BYTES};
use quad_shared::protocol::*;
use quad_shared::proximity::ProximityRules;

fn hello() -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: "Ada".into(),
        token: None,
        spawn: Some([10.0, 20.5]),
        device: None,
        resume: None,
        room: None,
    })
}

#[test]
fn client_messages_round_trip() {
    for msg in [
        hello(),
        ClientMsg::Input(Input {
            seq: 7,
            dir: 9,
            steps: 3,
        }),
        ClientMsg::Ping { nonce: 42 },
        ClientMsg::Media(MediaFlags {
            mic: true,
            camera: true,
            screen: false,
        }),
        ClientMsg::Signal {
            to: AvatarId(9),
            signal: Signal::Description {
                kind: SdpKind::Answer,
                sdp: "v=0".into(),
            },
        },
    ] {
        let frame = codec::encode(&msg).expect("encodes");
        assert_eq!(codec::decode::<ClientMsg>(&frame).expect("decodes"), msg);
    }
}

#[test]
fn server_messages_round_trip() {
    let msgs = [
        ServerMsg::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            you: AvatarId(3),
            name: "Ada".into(),
            map_url: "/maps/campus.tmj".into(),
            spawn: [1.0, 2.0],
            tick_hz: 20,
            proximity: ProximityRules::default(),
            ice_servers: vec![quad_shared::protocol::IceServer {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                username: Some("1700000000:avatar3".into()),
                credential: Some("c2VjcmV0".into()),
            }],
            dev: true,
            role: Role::Teacher,
            resume: Some("00112233445566778899aabbccddeeff".into()),
            resume_grace_secs: 20,
            resumed: true,
        }),
        ServerMsg::Reconnecting {
            id: AvatarId(4),
            reconnecting: true,
        },
        ServerMsg::Restarting {
            retry_after_ms: 3_250,
        },
        ServerMsg::Snapshot(Snapshot {
            tick: 9,
            ack: 4,
            you: Some([3.5, 4.25]),
            avatars: vec![AvatarUpdate::new(AvatarId(2), [100.25, 200.75])],
            gone: vec![AvatarId(5)],
        }),
        ServerMsg::PeopleJoined {
            people: vec![Person {
                id: AvatarId(1),
                name: "Bo".into(),
                role: Role::Guest,
            }],
        },
        ServerMsg::PeopleLeft {
            ids: vec![AvatarId(1)],
        },
        ServerMsg::Error(ErrorMsg::new(ErrorCode::Malformed, "bad")),
        ServerMsg::Pong { nonce: 1 },
        ServerMsg::ConnectPeer {
            peer: AvatarId(4),
            polite: true,
            media: MediaFlags {
                mic: true,
                camera: false,
                screen: false,
            },
        },
        ServerMsg::PeerMedia {
            peer: AvatarId(4),
            media: MediaFlags {
                mic: false,
                camera: true,
                screen: false,
            },
        },
        ServerMsg::DisconnectPeer { peer: AvatarId(4) },
        ServerMsg::Signal {
            from: AvatarId(4),
            signal: Signal::Description {
                kind: SdpKind::Offer,
                sdp: "v=0\r\n".into(),
            },
        },
        ServerMsg::Signal {
            from: AvatarId(4),
            signal: Signal::Candidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
            },
        },
    ];
    for msg in msgs {
        let frame = codec::encode(&msg).expect("encodes");
        assert_eq!(codec::decode::<ServerMsg>(&frame).expect("decodes"), msg);
    }
}

#[test]
fn input_frames_are_compact() {
    let frame = codec::encode(&ClientMsg::Input(Input {
        seq: 1000,
        dir: 1,
        steps: 3,
    }))
    .unwrap();
    assert!(
        frame.len() <= 10,
        "an input frame took {} bytes",
        frame.len()
    );
}

#[test]
fn quantized_positions_keep_quarter_pixels() {
    let u = AvatarUpdate::new(AvatarId(1), [123.25, 456.5]);
    assert_eq!(u.position(), [123.25, 456.5]);
    let clamped = AvatarUpdate::new(AvatarId(1), [-5.0, 1.0e9]);
    assert_eq!(clamped.position()[0], 0.0);
    assert!(clamped.position()[1] > 16_000.0);
    // The top value is never produced: the server uses it for "not sent yet".
    assert_eq!(quantize([1.0e9, f32::MAX]), (u16::MAX - 1, u16::MAX - 1));
}

#[test]
fn oversized_frames_are_refused_before_decoding() {
    let frame = vec![0u8; MAX_FRAME_BYTES + 1];
    assert!(matches!(
        codec::decode::<ClientMsg>(&frame),
        Err(CodecError::TooLarge { len }) if len == MAX_FRAME_BYTES + 1
    ));
}

#[test]
fn oversized_messages_are_refused_when_encoding() {
    let msg = ServerMsg::Error(ErrorMsg::new(
        ErrorCode::Malformed,
        "x".repeat(MAX_FRAME_BYTES),
    ));
    assert!(matches!(
        codec::encode(&msg),
        Err(CodecError::TooLarge { .. })
    ));
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let good = codec::encode(&hello()).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xc1],                               // never-used MessagePack byte
        vec![0x81, 0xa3, b'F', b'o', b'o', 0xc0], // unknown variant
        good[..good.len() - 1].to_vec(),          // truncated
        [good.clone(), vec![0]].concat(),         // trailing byte
        vec![0xdd, 0xff, 0xff, 0xff, 0xff],       // array claiming 4 billion items
    ];
    // Every truncation of a valid frame, and every single-byte corruption.
    for cut in 0..good.len() {
        cases.push(good[..cut].to_vec());
    }
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0xff;
        cases.push(bad);
    }
    let mut errors = 0;
    for case in &cases {
        match codec::decode::<ClientMsg>(case) {
            Err(CodecError::Malformed(_)) => errors += 1,
            Err(other) => panic!("unexpected error kind {other:?}"),
            Ok(_) => {} // some single-byte corruptions still decode (e.g. a changed letter in the name)
        }
    }
    assert!(
        errors >= 6 + good.len(),
        "only {errors} of {} cases were refused",
        cases.len()
    );
}

#[test]
fn messages_are_legal_only_in_their_state() {
    let input = ClientMsg::Input(Input {
        seq: 1,
        dir: 1,
        steps: 1,
    });
    let err = SessionState::AwaitingHello.check(&input).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongState);
    assert!(err.message.contains("before Hello"));
    assert!(SessionState::AwaitingHello.check(&hello()).is_ok());
    assert!(SessionState::InSpace.check(&input).is_ok());
    assert_eq!(
        SessionState::InSpace.check(&hello()).unwrap_err().code,
        ErrorCode::WrongState
    );
    assert!(
        SessionState::AwaitingHello
            .check(&ClientMsg::Ping { nonce: 1 })
            .is_ok()
    );
}

#[test]
fn names_are_checked() {
    assert_eq!(normalize_name("  Ada  ").unwrap(), "Ada");
    assert_eq!(normalize_name("   ").unwrap_err().code, ErrorCode::BadName);
    assert_eq!(
        normalize_name(&"x".repeat(MAX_NAME_CHARS + 1))
            .unwrap_err()
            .code,
        ErrorCode::BadName
    );
    assert_eq!(
        normalize_name("a\u{7}b").unwrap_err().code,
        ErrorCode::BadName
    );
    assert!(normalize_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
}

#[test]
fn a_lecture_halls_session_description_fits_in_a_frame() {
    // 120 members with microphone and camera: 240 m-sections of about 600 bytes.
    let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(240 * 600 / 32);
    let msg =
        quad_shared::protocol::ServerMsg::RoomSignal(quad_shared::protocol::Signal::Description {
            kind: quad_shared::protocol::SdpKind::Offer,
            sdp,
        });
    let frame = codec::encode(&msg).expect("a 144 KB offer is one frame");
    let back: quad_shared::protocol::ServerMsg = codec::decode(&frame).expect("and decodes");
    assert_eq!(back, msg);
}

/// The hand-written snapshot encoder writes exactly what serde would, across the edges of
/// MessagePack's integer and list encodings, and refuses what is too large the same way.
#[test]
fn snapshot_encoder_matches_serde_byte_for_byte() {
    let edges: [u32; 10] = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 31, u32::MAX];
    let lens = [0usize, 1, 15, 16, 17, 300];
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut checked = 0;
    for (i, &tick) in edges.iter().enumerate() {
        for &avatars in &lens {
            for &gone in &lens {
                let pick = |r: u32| edges[r as usize % edges.len()];
                let snapshot = Snapshot {
                    tick,
                    ack: pick(next()),
                    you: (i % 3 != 0).then(|| [next() as f32 / 7.0, -(next() as f32) / 3.0]),
                    avatars: (0..avatars)
                        .map(|_| {
                            AvatarUpdate(AvatarId(pick(next())), next() as u16, pick(next()) as u16)
                        })
                        .collect(),
                    gone: (0..gone).map(|_| AvatarId(pick(next()))).collect(),
                };
                let by_serde = codec::encode(&ServerMsg::Snapshot(snapshot.clone())).unwrap();
                let mut by_hand = vec![0xAB]; // appends after what is there
                codec::encode_snapshot(&snapshot, &mut by_hand).unwrap();
                assert_eq!(by_hand[0], 0xAB);
                assert_eq!(&by_hand[1..], &by_serde[..], "{snapshot:?}");
                let back: ServerMsg = codec::decode(&by_hand[1..]).unwrap();
                assert_eq!(back, ServerMsg::Snapshot(snapshot));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, edges.len() * lens.len() * lens.len());
    // The 16-bit and 32-bit list lengths (small ids, so the frames fit).
    for n in [65_535, 65_536] {
        let snapshot = Snapshot {
            gone: vec![AvatarId(7); n],
            ..Snapshot::default()
        };
        let mut by_hand = Vec::new();
        codec::encode_snapshot(&snapshot, &mut by_hand).unwrap();
        assert_eq!(
            by_hand,
            codec::encode(&ServerMsg::Snapshot(snapshot)).unwrap()
        );
    }

    let huge = Snapshot {
        gone: vec![AvatarId(u32::MAX); MAX_FRAME_BYTES / 4],
        ..Snapshot::default()
    };
    let mut buf = vec![1, 2, 3];
    assert!(matches!(
        codec::encode_snapshot(&huge, &mut buf),
        Err(CodecError::TooLarge { .. })
    ));
    assert_eq!(
        buf,
        vec![1, 2, 3],
        "a refused snapshot leaves the buffer as it was"
    );
    assert!(matches!(
        codec::encode(&ServerMsg::Snapshot(huge)),
        Err(CodecError::TooLarge { .. })
    ));
}

#[test]
fn signaling_is_capped_at_what_real_descriptions_need() {
    use quad_shared::protocol::{
        ClientMsg, ErrorCode, MAX_CANDIDATE_BYTES, MAX_PEER_SDP_BYTES, MAX_ROOM_SDP_BYTES, SdpKind,
        Signal,
    };
    let description = |len: usize| Signal::Description {
        kind: SdpKind::Answer,
        sdp: "a".repeat(len),
    };
    assert!(
        description(MAX_PEER_SDP_BYTES)
            .check_size("Signal", MAX_PEER_SDP_BYTES)
            .is_ok()
    );
    let err = description(MAX_PEER_SDP_BYTES + 1)
        .check_size("Signal", MAX_PEER_SDP_BYTES)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    assert!(err.message.starts_with("Signal"), "{}", err.message);
    let candidate = |len: usize| Signal::Candidate {
        candidate: "c".repeat(len),
        sdp_mid: None,
        sdp_m_line_index: Some(0),
    };
    assert!(
        candidate(MAX_CANDIDATE_BYTES)
            .check_size("Signal", 0)
            .is_ok()
    );
    assert!(
        candidate(MAX_CANDIDATE_BYTES + 1)
            .check_size("Signal", MAX_PEER_SDP_BYTES)
            .is_err()
    );
    // The largest room description a client may send fits in a frame.
    let frame = quad_shared::codec::encode(&ClientMsg::RoomSignal(description(MAX_ROOM_SDP_BYTES)))
        .expect("fits in a frame");
    assert!(frame.len() <= quad_shared::codec::MAX_FRAME_BYTES);
}
