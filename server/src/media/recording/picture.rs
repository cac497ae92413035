//! The picture of a recording: one VP8 video, in an IVF file, made of whichever stream is
//! the room's picture at each moment (the shared screen, the spotlight, the teacher's
//! camera). The SFU forwards VP8 as RTP packets; this puts each frame's packets back
//! together (RFC 7741), keeps only whole frames, and starts again at a keyframe after a
//! loss or a change of stream, so the file always decodes. Each frame is stamped with its
//! time in the recording, in milliseconds, from its RTP timestamp (90 kHz) anchored where
//! its stream arrived.
//!
//! [`PictureTrack`] is a plain state machine over any seekable writer; nothing is decoded.

use std::io::{Seek, SeekFrom, Write};

/// The VP8 payload descriptor at the start of an RTP payload (RFC 7741, 4.2): whether the
/// packet starts a partition, which partition, and how long the descriptor is.
pub fn vp8_descriptor(payload: &[u8]) -> Option<(bool, u8, usize)> {
    let b0 = *payload.first()?;
    let (start, partition) = (b0 & 0x10 != 0, b0 & 0x07);
    let mut len = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        len = 2;
        if x & 0x80 != 0 {
            let picture = *payload.get(len)?;
            len += if picture & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            len += 1;
        }
        if x & 0x30 != 0 {
            len += 1;
        }
    }
    (payload.len() >= len).then_some((start, partition, len))
}

/// The picture size a VP8 keyframe declares (RFC 6386, 9.1), `None` for an interframe or
/// what is not VP8.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.first()? & 0x01 != 0 || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

/// A frame bigger than this is dropped (a 4K keyframe is well under it).
const MAX_FRAME: usize = 4 << 20;
/// The IVF file header's length.
const HEADER: u64 = 32;

/// Where one stream sits on the recording's timeline.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    stream: u64,
    ts: u32,
    at_ms: u64,
}

/// What [`PictureTrack::push`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Part of a frame, or a frame written.
    Taken,
    /// Dropped until a keyframe: the caller should ask the publisher for one.
    NeedKeyframe,
}

/// The picture track being written (see the module's documentation).
pub struct PictureTrack<W: Write + Seek> {
    out: W,
    anchor: Option<Anchor>,
    /// The frame being put together: its timestamp, its bytes, the next sequence number.
    frame: Option<(u32, Vec<u8>, u16)>,
    /// Whole frames may be written (a keyframe came since the last loss or change).
    decodable: bool,
    last_ms: Option<u64>,
    size: Option<(u16, u16)>,
    pub frames: u32,
}

impl<W: Write + Seek> PictureTrack<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        // The size and frame count are filled in when the track is finished.
        out.write_all(&header(0, 0, 0))?;
        Ok(PictureTrack {
            out,
            anchor: None,
            frame: None,
            decodable: false,
            last_ms: None,
            size: None,
            frames: 0,
        })
    }

    /// One RTP packet of stream `stream`, which arrived `at_ms` into the recording.
    pub fn push(
        &mut self,
        stream: u64,
        seq: u16,
        ts: u32,
        marker: bool,
        at_ms: u64,
        payload: &[u8],
    ) -> std::io::Result<Pushed> {
        if self.anchor.is_none_or(|a| a.stream != stream) {
            // Another stream: its frames wait for its keyframe, from where it arrived.
            self.anchor = Some(Anchor {
                stream,
                ts,
                at_ms: self.last_ms.map_or(at_ms, |last| at_ms.max(last + 1)),
            });
            self.frame = None;
            self.decodable = false;
        }
        let Some((start, partition, skip)) = vp8_descriptor(payload) else {
            return Ok(self.lost());
        };
        let data = &payload[skip..];
        if start && partition == 0 {
            // A new frame (an unfinished one before it is lost).
            self.frame = Some((ts, Vec::with_capacity(data.len() * 4), seq));
        }
        let Some((frame_ts, bytes, next)) = self.frame.as_mut() else {
            // The middle of a frame whose start was lost.
            return Ok(if self.decodable {
                self.lost()
            } else {
                Pushed::NeedKeyframe
            });
        };
        if seq != *next || ts != *frame_ts || bytes.len() + data.len() > MAX_FRAME {
            return Ok(self.lost());
        }
        bytes.extend_from_slice(data);
        *next = seq.wrapping_add(1);
        if !marker {
            return Ok(Pushed::Taken);
        }
        let Some((ts, frame, _)) = self.frame.take() else {
            return Ok(Pushed::Taken);
        };
        if let Some(size) = keyframe_size(&frame) {
            self.decodable = true;
            self.size.get_or_insert(size);
        } else if frame.first().is_none_or(|b| b & 0x01 == 0) {
            // Says it is a keyframe but is not one: not VP8.
            return Ok(self.lost());
        }
        if !self.decodable {
            return Ok(Pushed::NeedKeyframe);
        }
        self.write_frame(ts, &frame)?;
        Ok(Pushed::Taken)
    }

    /// Patches the header (size, frame count) and hands the file back.
    pub fn finish(mut self) -> std::io::Result<W> {
        let (w, h) = self.size.unwrap_or((0, 0));
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&header(w, h, self.frames))?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// The picture's size, from its first keyframe.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.size
    }

    fn lost(&mut self) -> Pushed {
        self.frame = None;
        self.decodable = false;
        Pushed::NeedKeyframe
    }

    fn write_frame(&mut self, ts: u32, frame: &[u8]) -> std::io::Result<()> {
        let Some(anchor) = self.anchor else {
            return Ok(());
        };
        // 90 kHz; a timestamp before the anchor (reordered) counts as the anchor.
        let offset = ts.wrapping_sub(anchor.ts);
        let offset = if offset > u32::MAX / 2 { 0 } else { offset };
        let mut ms = anchor.at_ms + u64::from(offset) / 90;
        // Strictly increasing, as containers want.
        if let Some(last) = self.last_ms {
            ms = ms.max(last + 1);
        }
        self.last_ms = Some(ms);
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&ms.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(frame)?;
        self.frames += 1;
        Ok(())
    }
}

/// An IVF header for VP8 in milliseconds.
fn header(w: u16, h: u16, frames: u32) -> [u8; HEADER as usize] {
    let mut head = [0u8; HEADER as usize];
    head[..4].copy_from_slice(b"DKIF");
    head[6..8].copy_from_slice(&(HEADER as u16).to_le_bytes());
    head[8..12].copy_from_slice(b"VP80");
    head[12..14].copy_from_slice(&w.to_le_bytes());
    head[14..16].copy_from_slice(&h.to_le_bytes());
    // Time base 1/1000: denominator, then numerator.
    head[16..20].copy_from_slice(&1000u32.to_le_bytes());
    head[20..24].copy_from_slice(&1u32.to_le_bytes());
    head[24..28].copy_from_slice(&frames.to_le_bytes());
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A VP8 keyframe of 320x240 (the start of one: tag, start code, size), padded.
    fn keyframe() -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&320u16.to_le_bytes());
        f.extend_from_slice(&240u16.to_le_bytes());
        f.extend_from_slice(&[7; 30]);
        f
    }

    fn interframe() -> Vec<u8> {
        vec![0x31, 0x00, 0x00, 5, 5, 5]
    }

    /// A frame cut into packets of at most `mtu` bytes: (seq, marker, payload).
    fn packetize(frame: &[u8], seq: u16, mtu: usize) -> Vec<(u16, bool, Vec<u8>)> {
        let parts: Vec<&[u8]> = frame.chunks(mtu).collect();
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let mut p = vec![if i == 0 { 0x10 } else { 0x00 }];
                p.extend_from_slice(part);
                (seq.wrapping_add(i as u16), i + 1 == n, p)
            })
            .collect()
    }

    /// The frames of an IVF file: (pts, bytes).
    fn frames_of(file: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = HEADER as usize;
        while i + 12 <= file.len() {
            let len = u32::from_le_bytes(file[i..i + 4].try_into().expect("4 bytes")) as usize;
            let pts = u64::from_le_bytes(file[i + 4..i + 12].try_into().expect("8 bytes"));
            out.push((pts, file[i + 12..i + 12 + len].to_vec()));
            i += 12 + len;
        }
        out
    }

    fn push_frame(
        track: &mut PictureTrack<Cursor<Vec<u8>>>,
        stream: u64,
        frame: &[u8],
        seq: u16,
        ts: u32,
        at_ms: u64,
    ) -> Vec<Pushed> {
        packetize(frame, seq, 16)
            .into_iter()
            .map(|(seq, marker, p)| {
                track
                    .push(stream, seq, ts, marker, at_ms, &p)
                    .expect("in memory")
            })
            .collect()
    }

    #[test]
    fn descriptors_of_every_shape_are_read() {
        assert_eq!(vp8_descriptor(&[0x10, 9]), Some((true, 0, 1)));
        // X, I with a 15-bit picture id, L, T/K.
        assert_eq!(
            vp8_descriptor(&[0x90, 0xf0, 0x80, 1, 2, 3, 9]),
            Some((true, 0, 6))
        );
        assert_eq!(vp8_descriptor(&[0x90, 0x80]), None);
        assert_eq!(vp8_descriptor(&[]), None);
        assert_eq!(keyframe_size(&keyframe()), Some((320, 240)));
        assert_eq!(keyframe_size(&interframe()), None);
    }

    #[test]
    fn frames_are_put_together_from_the_first_keyframe_and_stamped_in_ms() {
        let mut track = PictureTrack::new(Cursor::new(Vec::new())).expect("in memory");
        // An interframe before any keyframe is dropped, and a keyframe asked for.
        let r = push_frame(&mut track, 1, &interframe(), 10, 0, 100);
        assert_eq!(r.last(), Some(&Pushed::NeedKeyframe));
        push_frame(&mut track, 1, &keyframe(), 11, 9000, 200);
        push_frame(&mut track, 1, &interframe(), 14, 9000 + 3000, 233);
        let file = track.finish().expect("in memory").into_inner();
        assert_eq!(&file[..4], b"DKIF");
        assert_eq!(u16::from_le_bytes([file[12], file[13]]), 320);
        assert_eq!(u32::from_le_bytes(file[24..28].try_into().expect("4")), 2);
        let frames = frames_of(&file);
        // Anchored at the first packet (100 ms in, timestamp 0).
        assert_eq!(frames[0], (200, keyframe()));
        assert_eq!(frames[1], (233, interframe()));
    }

    #[test]
    fn a_lost_packet_drops_frames_until_the_next_keyframe() {
        let mut track = PictureTrack::new(Cursor::new(Vec::new())).expect("in memory");
        push_frame(&mut track, 1, &keyframe(), 1, 0, 0);
        // The keyframe took packets 1..=3; packet 4 (an interframe) is lost: 5 starts a frame
        // but the one after it is missing its start.
        let inter = packetize(&interframe(), 5, 4);
        let r = track
            .push(1, inter[1].0, 3000, inter[1].1, 33, &inter[1].2)
            .expect("in memory");
        assert_eq!(r, Pushed::NeedKeyframe);
        let r = push_frame(&mut track, 1, &interframe(), 8, 6000, 66);
        assert_eq!(r.last(), Some(&Pushed::NeedKeyframe));
        push_frame(&mut track, 1, &keyframe(), 9, 9000, 100);
        let frames = frames_of(&track.finish().expect("in memory").into_inner());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].0, 100);
    }

    #[test]
    fn another_stream_starts_at_its_keyframe_and_time_only_goes_forward() {
        let mut track = PictureTrack::new(Cursor::new(Vec::new())).expect("in memory");
        push_frame(&mut track, 1, &keyframe(), 1, 0, 1000);
        // The picture moves to a screen whose first packet arrives at the same moment.
        let r = push_frame(&mut track, 2, &interframe(), 500, 77, 1000);
        assert_eq!(r.last(), Some(&Pushed::NeedKeyframe));
        push_frame(&mut track, 2, &keyframe(), 501, 77 + 900, 1010);
        let frames = frames_of(&track.finish().expect("in memory").into_inner());
        assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [1000, 1011]);
    }

    #[test]
    fn garbage_is_not_written() {
        let mut track = PictureTrack::new(Cursor::new(Vec::new())).expect("in memory");
        for p in [&[][..], &[0x90][..], &[0x10, 0x00, 1, 2][..], &[0x10][..]] {
            let _ = track.push(1, 1, 0, true, 0, p).expect("in memory");
        }
        assert_eq!(track.frames, 0);
    }
}
