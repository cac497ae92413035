//! Classroom media as the client keeps track of it, free of any browser API: what media
//! streams are called on the wire ([`StreamLabel`]), who is in the room with what
//! ([`RoomState`]), who speaks, and whose shared screen to show. The browser side
//! (`web::classroom`) owns the connection to the SFU and the DOM; this module must not
//! touch either.

use quad_shared::AvatarId;
use quad_shared::ids::ZoneId;
use quad_shared::protocol::RoomMember;
use std::fmt;

/// Which of an avatar's devices a media stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Mic,
    Camera,
    Screen,
}

impl Source {
    /// In the order of the client's transceivers to the SFU (the server maps them by it).
    pub const ALL: [Source; 3] = [Source::Mic, Source::Camera, Source::Screen];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mic => "mic",
            Source::Camera => "camera",
            Source::Screen => "screen",
        }
    }

    /// The `MediaStreamTrack.kind` of this source.
    pub fn kind(self) -> &'static str {
        match self {
            Source::Mic => "audio",
            Source::Camera | Source::Screen => "video",
        }
    }

    /// Its position among the client's transceivers to the SFU.
    pub fn index(self) -> usize {
        match self {
            Source::Mic => 0,
            Source::Camera => 1,
            Source::Screen => 2,
        }
    }
}

/// The id of a media stream that says whose device it carries: `"<avatar>:<mic|camera|screen>"`
/// with the avatar id in decimal. The SFU names every forwarded stream so (see
/// `ServerMsg::RoomMembers`); in the hallway a client names its shared screen so, which is
/// how its peers tell the screen from the camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamLabel {
    pub avatar: AvatarId,
    pub source: Source,
}

impl StreamLabel {
    /// Reads a stream id; `None` for anything else (the ids come from the network).
    pub fn parse(id: &str) -> Option<StreamLabel> {
        let (avatar, source) = id.split_once(':')?;
        // `u32::from_str` accepts a leading `+`; the wire form is plain digits.
        if avatar.is_empty() || !avatar.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let source = match source {
            "mic" => Source::Mic,
            "camera" => Source::Camera,
            "screen" => Source::Screen,
            _ => return None,
        };
        Some(StreamLabel {
            avatar: AvatarId(avatar.parse().ok()?),
            source,
        })
    }
}

impl fmt::Display for StreamLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.avatar.0, self.source.as_str())
    }
}

/// Renames a media stream in an SDP: the stream id `from` becomes `to` wherever the SDP
/// names streams (`a=msid:`, `a=msid-semantic:` and `a=ssrc:... msid:` lines). Browsers
/// make stream ids up and cannot be told one, so a client renames its screen stream in the
/// descriptions it sends.
pub fn rename_stream(sdp: &str, from: &str, to: &str) -> String {
    if from.is_empty() || from == to {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.split_inclusive('\n') {
        let semantic = line.starts_with("a=msid-semantic:");
        if !(semantic || line.starts_with("a=msid:") || line.starts_with("a=ssrc:")) {
            out.push_str(line);
            continue;
        }
        let (body, end) = match line.find(['\r', '\n']) {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        for (i, token) in body.split(' ').enumerate() {
            if i > 0 {
                out.push(' ');
            }
            // `a=msid:ID` and `msid:ID` name the stream; `WMS ID ...` lists it alone.
            match token.strip_suffix(from) {
                Some(prefix) if prefix.ends_with("msid:") || (semantic && prefix.is_empty()) => {
                    out.push_str(prefix);
                    out.push_str(to);
                }
                _ => out.push_str(token),
            }
        }
        out.push_str(end);
    }
    out
}

/// The room this client is in, as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    pub id: ZoneId,
    pub name: String,
    /// Everyone in the room (this client too), in the server's order.
    pub members: Vec<RoomMember>,
    /// Who speaks now, loudest first.
    pub speakers: Vec<AvatarId>,
}

impl RoomState {
    pub fn new(id: ZoneId, name: String) -> Self {
        RoomState {
            id,
            name,
            members: Vec::new(),
            speakers: Vec::new(),
        }
    }

    /// Takes the server's new member list; returns the ids of those who left.
    pub fn set_members(&mut self, members: Vec<RoomMember>) -> Vec<AvatarId> {
        let left = self
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| !members.iter().any(|m| m.id == *id))
            .collect();
        self.members = members;
        left
    }

    pub fn member(&self, id: AvatarId) -> Option<&RoomMember> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The member highlighted as speaking: the loudest speaker.
    pub fn speaking(&self) -> Option<AvatarId> {
        self.speakers.first().copied()
    }

    /// Whose screen the big view shows: the first member other than `me`, in the server's
    /// order, whose screen arrives (`live`).
    pub fn shown_screen(
        &self,
        me: AvatarId,
        live: impl Fn(AvatarId) -> bool,
    ) -> Option<&RoomMember> {
        self.members.iter().find(|m| m.id != me && live(m.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quad_shared::protocol::MediaFlags;

    #[test]
    fn labels_round_trip_and_refuse_anything_else() {
        let label = StreamLabel::parse("42:camera").unwrap();
        assert_eq!(label.avatar, AvatarId(42));
        assert_eq!(label.source, Source::Camera);
        assert_eq!(label.to_string(), "42:camera");
        for source in Source::ALL {
            let l = StreamLabel {
                avatar: AvatarId(u32::MAX),
                source,
            };
            assert_eq!(StreamLabel::parse(&l.to_string()), Some(l));
        }
        for bad in [
            "",
            ":mic",
            "7",
            "7:",
            "7:Mic",
            "+7:mic",
            "-7:mic",
            "7:mic:x",
            "4294967296:mic",
            "{3f2a-c0de}",
            "x:screen",
        ] {
            assert_eq!(StreamLabel::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn transceiver_order_is_mic_camera_screen() {
        let order: Vec<usize> = Source::ALL.iter().map(|s| s.index()).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(Source::Mic.kind(), "audio");
        assert_eq!(Source::Screen.kind(), "video");
    }

    #[test]
    fn renames_only_the_stream_id() {
        let id = "5c8e1a2b-0d4f";
        let sdp = format!(
            "v=0\r\na=msid-semantic: WMS {id} other\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
             a=mid:2\r\na=msid:{id} track-{id}\r\na=ssrc:1234 msid:{id} track-{id}\r\n\
             a=ssrc:1234 cname:{id}\r\na=extmap:1 x-{id}\r\n"
        );
        let out = rename_stream(&sdp, id, "7:screen");
        assert_eq!(
            out,
            format!(
                "v=0\r\na=msid-semantic: WMS 7:screen other\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                 a=mid:2\r\na=msid:7:screen track-{id}\r\na=ssrc:1234 msid:7:screen track-{id}\r\n\
                 a=ssrc:1234 cname:{id}\r\na=extmap:1 x-{id}\r\n"
            )
        );
        assert_eq!(rename_stream(&sdp, "", "7:screen"), sdp);
        // Without a final line break.
        assert_eq!(
            rename_stream("a=msid:abc t", "abc", "1:screen"),
            "a=msid:1:screen t"
        );
    }

    fn member(id: u32, name: &str, screen: bool) -> RoomMember {
        RoomMember {
            id: AvatarId(id),
            name: name.into(),
            media: MediaFlags {
                mic: true,
                camera: false,
                screen,
            },
        }
    }

    #[test]
    fn members_speakers_and_the_shown_screen() {
        let mut room = RoomState::new(ZoneId(3), "Lecture hall".into());
        assert!(
            room.set_members(vec![member(1, "Ada", false), member(2, "Bo", true)])
                .is_empty()
        );
        let left = room.set_members(vec![member(2, "Bo", true), member(3, "Cy", true)]);
        assert_eq!(left, [AvatarId(1)]);
        assert_eq!(
            room.member(AvatarId(3)).map(|m| m.name.as_str()),
            Some("Cy")
        );
        assert_eq!(room.speaking(), None);
        room.speakers = vec![AvatarId(3), AvatarId(2)];
        assert_eq!(room.speaking(), Some(AvatarId(3)));
        // Our own screen is not shown back to us; the first live one in order is.
        let shown = room.shown_screen(AvatarId(2), |_| true).map(|m| m.id);
        assert_eq!(shown, Some(AvatarId(3)));
        let shown = room.shown_screen(AvatarId(9), |id| id == AvatarId(3));
        assert_eq!(shown.map(|m| m.id), Some(AvatarId(3)));
        assert_eq!(room.shown_screen(AvatarId(9), |_| false), None);
    }
}
