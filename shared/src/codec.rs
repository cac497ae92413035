//! The frame codec: every WebSocket frame is one MessagePack-encoded message.
//!
//! Frames larger than [`MAX_FRAME_BYTES`] are refused before decoding. Decoding never panics;
//! any malformed frame becomes a [`CodecError`].

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
