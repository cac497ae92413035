//! The frame codec: every WebSocket frame is one MessagePack-encoded message.
//!
//! Frames larger than [`MAX_FRAME_BYTES`] are refused before decoding. Decoding never panics;
//! any malformed frame becomes a [`CodecError`].

use crate::protocol::{AvatarUpdate, Snapshot};
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

/// The largest frame either side accepts, in bytes. Room signaling sets the size: a room's
/// session description has an m-section (about 600 bytes) for every member's microphone and
/// camera, so a lecture hall of 120 needs about 150 KB.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("frame of {len} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes one message as a frame. Structs are written as arrays (no field names), so frames
/// stay compact.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(64);
    encode_into(msg, &mut buf)?;
    Ok(buf)
}

/// Encodes one message, appending to `buf` (so a caller can reuse one buffer).
pub fn encode_into<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buf.len();
    rmp_serde::encode::write(buf, msg).map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = buf.len() - start;
    if len > MAX_FRAME_BYTES {
        buf.truncate(start);
        return Err(CodecError::TooLarge { len });
    }
    Ok(())
}

/// Encodes `ServerMsg::Snapshot(snapshot)`, appending to `buf`, byte for byte as [`encode`]
/// would, but without serde: replication sends every client one of these a tick, so this is
/// the server's hottest encoder. It writes MessagePack's smallest forms, as rmp does (a test
/// checks it against [`encode`] across every size boundary).
pub fn encode_snapshot(snapshot: &Snapshot, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buf.len();
    // Room for the longest form of everything, written through a cursor (no capacity check
    // per byte), then cut to what was written.
    let most = 35 + 16 * snapshot.avatars.len() + 5 * snapshot.gone.len();
    buf.resize(start + most, 0);
    let mut out = Cursor {
        out: &mut buf[start..],
        at: 0,
    };
    // A map of one entry, variant name to value: how serde writes a newtype variant.
    out.bytes(&[0x81, 0xa0 | SNAPSHOT_TAG.len() as u8]);
    out.bytes(SNAPSHOT_TAG.as_bytes());
    out.array_len(5);
    out.uint(snapshot.tick);
    out.uint(snapshot.ack);
    match snapshot.you {
        Some([x, y]) => {
            out.array_len(2);
            for v in [x, y] {
                out.byte(0xca);
                out.bytes(&v.to_be_bytes());
            }
        }
        None => out.byte(0xc0),
    }
    out.array_len(snapshot.avatars.len());
    for AvatarUpdate(id, x, y) in &snapshot.avatars {
        out.array_len(3);
        out.uint(id.0);
        out.uint(u32::from(*x));
        out.uint(u32::from(*y));
    }
    out.array_len(snapshot.gone.len());
    for id in &snapshot.gone {
        out.uint(id.0);
    }
    let len = out.at;
    if len > MAX_FRAME_BYTES {
        buf.truncate(start);
        return Err(CodecError::TooLarge { len });
    }
    buf.truncate(start + len);
    Ok(())
}

/// The variant name `ServerMsg::Snapshot` is serialized under (a fixstr).
const SNAPSHOT_TAG: &str = "s";

/// Writes into a buffer sized beforehand for the longest form of what is written.
struct Cursor<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.out[self.at] = b;
        self.at += 1;
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    /// A MessagePack unsigned integer in its smallest form (5 bytes at most).
    #[inline(always)]
    fn uint(&mut self, v: u32) {
        if v < 0x80 {
            self.byte(v as u8);
        } else if v <= 0xff {
            self.bytes(&[0xcc, v as u8]);
        } else if v <= 0xffff {
            let [a, b] = (v as u16).to_be_bytes();
            self.bytes(&[0xcd, a, b]);
        } else {
            let [a, b, c, d] = v.to_be_bytes();
            self.bytes(&[0xce, a, b, c, d]);
        }
    }

    /// A MessagePack array header in its smallest form (5 bytes at most). (A list of 2^32
    /// or more could not be in a frame; it is written as the largest length, and the frame
    /// limit refuses it.)
    #[inline(always)]
    fn array_len(&mut self, len: usize) {
        if len < 16 {
            self.byte(0x90 | len as u8);
        } else if len <= 0xffff {
            let [a, b] = (len as u16).to_be_bytes();
            self.bytes(&[0xdc, a, b]);
        } else {
            let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
            self.bytes(&[0xdd, a, b, c, d]);
        }
    }
}

/// Decodes one frame, refusing oversized frames and frames with trailing bytes.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge { len: frame.len() });
    }
    let mut cursor = std::io::Cursor::new(frame);
    let msg = T::deserialize(&mut rmp_serde::Deserializer::new(&mut cursor))
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    let rest = frame.len() as u64 - cursor.position();
    if rest != 0 {
        return Err(CodecError::Malformed(format!(
            "{rest} trailing bytes after the message"
        )));
    }
    Ok(msg)
}
