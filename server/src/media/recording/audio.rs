//! One microphone's track of a recording: its Opus packets, as received, in an Ogg Opus
//! file (RFC 7845) whose timeline is the recording's. The track starts at the recording's
//! first moment and ends at its last; wherever the microphone sent nothing (not there yet,
//! muted by the teacher, gone, a lost packet) the track holds silent Opus frames, so every
//! track of a recording is one continuous stream from 0 and the mixdown only adds them.
//!
//! [`AudioTrack`] is a plain state machine over any writer: it is given packets with the
//! moment they arrived and decides where each goes on the timeline; nothing is decoded.

use std::io::Write;

/// Opus always counts time in 48 kHz samples.
pub const RATE: u64 = 48_000;
/// The silence frames put in gaps are this long (20 ms).
const SILENCE_SAMPLES: u64 = 960;
/// A silent 20 ms Opus frame (mono, CELT full band: TOC 0xF8, then an empty frame).
const SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
/// A packet more than this early for its place on the timeline (it overlaps what was
/// written: reordered or repeated) is dropped; one more than this late gets silence before
/// it.
const SLACK: u64 = 480;
/// Pages end at least this often (packets), so a crash loses at most about a second.
const PACKETS_PER_PAGE: u32 = 50;

/// How many 48 kHz samples an Opus packet holds (RFC 6716, 3.1), from its TOC byte and,
/// for code 3, its frame count. `None` for what is not a valid packet.
pub fn opus_samples(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Per frame, in 48 kHz samples.
    let frame: u64 = match config {
        // SILK: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames: u64 = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    // At most 120 ms a packet.
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// Where one microphone's stream sits on the timeline: its first packet's RTP timestamp
/// was at this sample of the recording.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// Which stream (a new one, from the same person, is anchored again).
    stream: u64,
    ts: u32,
    at: u64,
}

/// An Ogg Opus track being written (see the module's documentation).
pub struct AudioTrack<W: Write> {
    ogg: ogg::PacketWriter<'static, W>,
    serial: u32,
    /// Samples written so far: where the next packet begins.
    written: u64,
    anchor: Option<Anchor>,
    since_page: u32,
    /// Packets written (not silence), for the manifest.
    pub packets: u64,
}

impl<W: Write> AudioTrack<W> {
    /// Starts a track on `out`: the Ogg Opus headers.
    pub fn new(out: W, serial: u32) -> std::io::Result<Self> {
        let mut ogg = ogg::PacketWriter::new(out);
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels: mono (a stereo stream is mixed down by the decoder)
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: the senders' is unknown
        head.extend_from_slice(&48_000u32.to_le_bytes()); // the input's rate, for players
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0
        ogg.write_packet(head, serial, ogg::PacketWriteEndInfo::EndPage, 0)?;
        let vendor = b"quad";
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no comments
        ogg.write_packet(tags, serial, ogg::PacketWriteEndInfo::EndPage, 0)?;
        Ok(AudioTrack {
            ogg,
            serial,
            written: 0,
            anchor: None,
            since_page: 0,
            packets: 0,
        })
    }

    /// Samples written so far (the track's length).
    pub fn samples(&self) -> u64 {
        self.written
    }

    /// A packet of stream `stream` with RTP timestamp `ts`, which arrived `at` samples
    /// into the recording. A packet that is not Opus, or that overlaps what was written, is
    /// dropped (`Ok(false)`).
    pub fn push(&mut self, stream: u64, ts: u32, at: u64, payload: &[u8]) -> std::io::Result<bool> {
        let Some(samples) = opus_samples(payload) else {
            return Ok(false);
        };
        let anchor = match self.anchor {
            Some(a) if a.stream == stream => a,
            _ => {
                // A new stream starts where it arrived (and not before what is written).
                let a = Anchor {
                    stream,
                    ts,
                    at: at.max(self.written),
                };
                self.anchor = Some(a);
                a
            }
        };
        // Its place by its timestamp; a timestamp from before the anchor (reordered) is
        // read as negative and dropped.
        let offset = ts.wrapping_sub(anchor.ts);
        if offset > u32::MAX / 2 {
            return Ok(false);
        }
        let place = anchor.at + u64::from(offset);
        if place + SLACK < self.written {
            return Ok(false);
        }
        self.fill_to(place)?;
        self.write(payload, samples)?;
        self.packets += 1;
        Ok(true)
    }

    /// Writes out what the file's writer holds (whole pages only).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.ogg.inner_mut().flush()
    }

    /// Silence up to `end` samples, then the end of the stream.
    pub fn finish(mut self, end: u64) -> std::io::Result<W> {
        self.fill_to(end)?;
        self.written += SILENCE_SAMPLES;
        self.ogg.write_packet(
            &SILENCE[..],
            self.serial,
            ogg::PacketWriteEndInfo::EndStream,
            self.written,
        )?;
        Ok(self.ogg.into_inner())
    }

    /// Silence frames until the next packet's place (`place`) is near.
    fn fill_to(&mut self, place: u64) -> std::io::Result<()> {
        while self.written + SLACK < place {
            self.write(&SILENCE, SILENCE_SAMPLES)?;
        }
        Ok(())
    }

    fn write(&mut self, payload: &[u8], samples: u64) -> std::io::Result<()> {
        self.written += samples;
        self.since_page += 1;
        let end = if self.since_page >= PACKETS_PER_PAGE {
            self.since_page = 0;
            ogg::PacketWriteEndInfo::EndPage
        } else {
            ogg::PacketWriteEndInfo::NormalPacket
        };
        // Ogg's granule position is the sample at the end of the page's last packet.
        self.ogg
            .write_packet(payload.to_vec(), self.serial, end, self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 ms CELT packet as browsers send (TOC 0xFC: config 31, stereo, one frame).
    const FRAME: [u8; 4] = [0xfc, 1, 2, 3];

    fn packets_of(file: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(file));
        let mut out = Vec::new();
        while let Ok(Some(p)) = reader.read_packet() {
            out.push((p.data.clone(), p.absgp_page()));
        }
        out
    }

    #[test]
    fn packet_lengths_come_from_the_toc() {
        assert_eq!(opus_samples(&[0xfc]), Some(960)); // CELT 20 ms
        assert_eq!(opus_samples(&[0x08 | 0x01]), Some(1920)); // SILK 20 ms, two frames
        assert_eq!(opus_samples(&[0x78]), Some(960)); // hybrid 20 ms
        assert_eq!(opus_samples(&[0xe3, 3]), Some(3 * 120)); // CELT 2.5 ms, three frames
        assert_eq!(opus_samples(&[0x1b, 0x3f]), None); // 63 frames of 60 ms: too long
        assert_eq!(opus_samples(&[0xe3, 0]), None); // no frames
        assert_eq!(opus_samples(&[]), None);
    }

    #[test]
    fn a_late_first_packet_and_a_gap_are_filled_with_silence() {
        let mut track = AudioTrack::new(Vec::new(), 7).expect("in memory");
        // The first packet arrived 100 ms in: 5 silent frames before it.
        assert!(track.push(1, 5000, 4800, &FRAME).expect("in memory"));
        assert!(track.push(1, 5960, 5000, &FRAME).expect("in memory"));
        // 200 ms of nothing (teacher's mute), then the stream goes on.
        assert!(
            track
                .push(1, 5000 + 960 * 12, 99_999, &FRAME)
                .expect("in memory")
        );
        let file = track.finish(RATE).expect("in memory");
        let packets = packets_of(&file);
        assert_eq!(&packets[0].0[..8], b"OpusHead");
        assert_eq!(&packets[1].0[..8], b"OpusTags");
        let audio: Vec<bool> = packets[2..].iter().map(|(p, _)| p[..] == FRAME).collect();
        let mut expected = vec![false; 5];
        expected.extend([true, true]);
        expected.extend([false; 10]);
        expected.push(true);
        // Then silence to one second (50 frames), and the closing frame.
        expected.extend([false; 50 - 18 + 1]);
        assert_eq!(audio, expected);
        assert_eq!(packets.last().map(|p| p.1), Some(RATE + 960));
    }

    #[test]
    fn reordered_repeated_and_garbage_packets_are_dropped() {
        let mut track = AudioTrack::new(Vec::new(), 7).expect("in memory");
        assert!(track.push(1, 1000, 0, &FRAME).expect("in memory"));
        assert!(track.push(1, 1960, 960, &FRAME).expect("in memory"));
        // Again, and from before the anchor.
        assert!(!track.push(1, 1960, 960, &FRAME).expect("in memory"));
        assert!(!track.push(1, 40, 0, &FRAME).expect("in memory"));
        assert!(!track.push(1, 2920, 1920, &[]).expect("in memory"));
        assert_eq!(track.packets, 2);
        assert_eq!(track.samples(), 1920);
    }

    #[test]
    fn a_new_stream_from_the_same_person_starts_where_it_arrives() {
        let mut track = AudioTrack::new(Vec::new(), 7).expect("in memory");
        assert!(track.push(1, 1000, 0, &FRAME).expect("in memory"));
        // Another stream (new timestamps) half a second later.
        assert!(track.push(2, 77, 24_000, &FRAME).expect("in memory"));
        assert_eq!(track.samples(), 24_000 + 960);
    }
}
