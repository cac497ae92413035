//! The loudest-speakers rule: of a room's microphones, forward only the `n` loudest, so a
//! large room costs little. A teacher's microphone is always forwarded and takes none of
//! the `n` places: loudness is what each client reports of itself, so students claiming
//! to be loud must not be able to keep the teacher out. Pure functions over levels, so the
//! rule is tested alone.

/// Loudness is `127 - level`, where level is the RTP audio level in -dBov (0 loudest,
/// 127 silence), smoothed over recent packets. Above this a microphone counts as speaking.
pub const SPEAKING_LOUDNESS: f32 = 127.0 - 60.0;

/// A forwarded microphone keeps its place unless a newcomer is louder by this much, so two
/// similar voices do not swap places on every tick.
pub const HYSTERESIS: f32 = 6.0;

/// One microphone of a room, as the room sees it at one tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MicLevel {
    /// Smoothed loudness (see [`SPEAKING_LOUDNESS`]); 0 when the microphone sent nothing
    /// since the last tick.
    pub loudness: f32,
    /// Whether it is forwarded now.
    pub forwarded: bool,
    /// Forwarded whatever its loudness (a teacher's).
    pub always: bool,
}

/// Decides which microphones to forward: the `n` loudest, where the ones forwarded now
/// count as [`HYSTERESIS`] louder. With `n` or fewer microphones, all are forwarded.
/// Returns the new `forwarded` flag of each, in the order given.
pub fn choose(mics: &[MicLevel], n: usize) -> Vec<bool> {
    let ranked = mics.iter().filter(|m| !m.always).count();
    if ranked <= n {
        return vec![true; mics.len()];
    }
    let score = |m: &MicLevel| m.loudness + if m.forwarded { HYSTERESIS } else { 0.0 };
    let mut order: Vec<usize> = (0..mics.len()).filter(|&i| !mics[i].always).collect();
    // Loudest first; ties keep the given order (stable), which the caller keeps stable.
    order.sort_by(|&a, &b| score(&mics[b]).total_cmp(&score(&mics[a])));
    let mut chosen: Vec<bool> = mics.iter().map(|m| m.always).collect();
    for &i in order.iter().take(n) {
        chosen[i] = true;
    }
    chosen
}

/// Smooths a stream of packet loudness values: quick to rise, slower to fall, so a voice
/// counts as speaking from its first syllable and through short pauses.
pub fn smooth(previous: f32, packet: f32) -> f32 {
    if packet > previous {
        previous + (packet - previous) * 0.5
    } else {
        previous + (packet - previous) * 0.05
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mic(loudness: f32, forwarded: bool) -> MicLevel {
        MicLevel {
            loudness,
            forwarded,
            always: false,
        }
    }

    #[test]
    fn a_teacher_is_forwarded_however_loud_the_others_claim_to_be() {
        let teacher = MicLevel {
            loudness: 40.0,
            forwarded: false,
            always: true,
        };
        let mics = [
            mic(127.0, false),
            mic(127.0, false),
            teacher,
            mic(127.0, false),
        ];
        assert_eq!(choose(&mics, 3), vec![true, true, true, true]);
        let mics = [
            mic(127.0, true),
            mic(127.0, true),
            teacher,
            mic(127.0, true),
            mic(120.0, false),
        ];
        // The teacher takes none of the 3 places: the three loudest still get theirs.
        assert_eq!(choose(&mics, 3), vec![true, true, true, true, false]);
    }

    #[test]
    fn few_microphones_are_all_forwarded() {
        assert_eq!(
            choose(&[mic(0.0, false), mic(90.0, false)], 3),
            vec![true, true]
        );
    }

    #[test]
    fn the_loudest_are_forwarded() {
        let mics = [
            mic(10.0, false),
            mic(100.0, false),
            mic(50.0, false),
            mic(90.0, false),
            mic(70.0, false),
        ];
        assert_eq!(choose(&mics, 3), vec![false, true, false, true, true]);
    }

    #[test]
    fn a_forwarded_voice_keeps_its_place_against_a_slightly_louder_one() {
        let mics = [mic(80.0, true), mic(83.0, false), mic(100.0, true)];
        assert_eq!(choose(&mics, 2), vec![true, false, true]);
        let mics = [mic(80.0, true), mic(90.0, false), mic(100.0, true)];
        assert_eq!(choose(&mics, 2), vec![false, true, true]);
    }

    #[test]
    fn smoothing_rises_fast_and_falls_slowly() {
        let up = smooth(0.0, 100.0);
        assert!(up >= 50.0, "{up}");
        let down = smooth(100.0, 0.0);
        assert!(down > 90.0, "{down}");
    }
}
