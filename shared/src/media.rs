//! The media wire contract: what the SFU, the browser client and the test bots call the
//! media they exchange.
//!
//! - [`Source`]: which of an avatar's devices a stream carries, in the order of the
//!   client's transceivers to the SFU (its offer's m-lines: microphone, camera, screen).
//! - [`StreamLabel`]: a stream's id, `"<avatar>:<mic|camera|screen>"`. The SFU names every
//!   stream it forwards so; in the hallway a client names its shared screen so.
//! - [`SIMULCAST_LAYERS`]: the camera's simulcast encodings by RID, smallest first, with
//!   how much each scales the picture down; [`layer_of_rid`] reads a RID.

use crate::AvatarId;
use std::fmt;

/// Which of an avatar's devices a media stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Mic,
    Camera,
    Screen,
}

impl Source {
    /// In the order of the client's transceivers to the SFU (the server maps them by it).
    pub const ALL: [Source; 3] = [Source::Mic, Source::Camera, Source::Screen];

    /// The name in a [`StreamLabel`] and in track ids.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Mic => "mic",
            Source::Camera => "camera",
            Source::Screen => "screen",
        }
    }

    /// Reads [`Self::as_str`]'s form; `None` for anything else.
    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
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

    /// The source of the client's `index`-th m-line to the SFU.
    pub fn from_m_line(index: usize) -> Option<Source> {
        Source::ALL.get(index).copied()
    }
}

/// The id of a media stream that says whose device it carries: `"<avatar>:<mic|camera|screen>"`
/// with the avatar id in decimal.
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
        Some(StreamLabel {
            avatar: AvatarId(avatar.parse().ok()?),
            source: Source::parse(source)?,
        })
    }
}

impl fmt::Display for StreamLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.avatar.0, self.source.as_str())
    }
}

/// The camera's simulcast encodings as the client sends them: RID and how many times
/// smaller than the captured picture each is, smallest first (layer 0, 1, 2).
pub const SIMULCAST_LAYERS: [(&str, f32); 3] = [("q", 4.0), ("h", 2.0), ("f", 1.0)];

/// The simulcast layer (0 smallest) a RID names: the client's `q`/`h`/`f`, and the common
/// low/mid/high spellings other senders use.
pub fn layer_of_rid(rid: &str) -> Option<u8> {
    match rid {
        "q" | "l" | "low" | "0" => Some(0),
        "h" | "m" | "mid" | "1" => Some(1),
        "f" | "high" | "2" => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_clients_rids_are_its_layers_in_order() {
        for (layer, (rid, _)) in SIMULCAST_LAYERS.iter().enumerate() {
            assert_eq!(layer_of_rid(rid), Some(layer as u8));
        }
        assert!(SIMULCAST_LAYERS.windows(2).all(|w| w[0].1 > w[1].1));
        assert_eq!(layer_of_rid("high"), Some(2));
        assert_eq!(layer_of_rid("x"), None);
    }
}
