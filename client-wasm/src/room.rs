//! Classroom media as the client keeps track of it, free of any browser API: what media
//! streams are called on the wire (`quad_shared::media`), who is in the room with what
//! ([`RoomState`]), who speaks, and whose shared screen to show. The browser side
//! (`web::classroom`) owns the connection to the SFU and the DOM; this module must not
//! touch either.

use quad_shared::AvatarId;
use quad_shared::ids::ZoneId;
use quad_shared::protocol::RoomMember;

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
