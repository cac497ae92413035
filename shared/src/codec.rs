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
    // A map of one entry, variant name to value: how serde writes a newtype variant.
    buf.extend_from_slice(&[0x81, 0xa0 | SNAPSHOT_TAG.len() as u8]);
    buf.extend_from_slice(SNAPSHOT_TAG.as_bytes());
    array_len(buf, 5);
    uint(buf, snapshot.tick);
    uint(buf, snapshot.ack);
    match snapshot.you {
        Some([x, y]) => {
            array_len(buf, 2);
            for v in [x, y] {
                buf.push(0xca);
                buf.extend_from_slice(&v.to_be_bytes());
            }
        }
        None => buf.push(0xc0),
    }
    array_len(buf, snapshot.avatars.len());
    for AvatarUpdate(id, x, y) in &snapshot.avatars {
        array_len(buf, 3);
        uint(buf, id.0);
        uint(buf, u32::from(*x));
        uint(buf, u32::from(*y));
    }
    array_len(buf, snapshot.gone.len());
    for id in &snapshot.gone {
        uint(buf, id.0);
    }
    let len = buf.len() - start;
    if len > MAX_FRAME_BYTES {
        buf.truncate(start);
        return Err(CodecError::TooLarge { len });
    }
    Ok(())
}

/// The variant name `ServerMsg::Snapshot` is serialized under (a fixstr).
const SNAPSHOT_TAG: &str = "s";

/// A MessagePack unsigned integer in its smallest form.
#[inline(always)]
fn uint(buf: &mut Vec<u8>, v: u32) {
    if v < 0x80 {
        buf.push(v as u8);
    } else if v <= 0xff {
        buf.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        buf.push(0xcd);
        buf.extend_from_slice(&(v as u16).to_be_bytes());
    } else {
        buf.push(0xce);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

/// A MessagePack array header in its smallest form. (A list of 2^32 or more could not be in
/// a frame; it is written as the largest length, and the frame limit refuses it.)
#[inline(always)]
fn array_len(buf: &mut Vec<u8>, len: usize) {
    if len < 16 {
        buf.push(0x90 | len as u8);
    } else if len <= 0xffff {
        buf.push(0xdc);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(0xdd);
        buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
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
