//! Proximity rules: outside rooms, avatars closer than `connect_radius` are linked
//! peer-to-peer; a link breaks only beyond the larger `disconnect_radius` (hysteresis, so
//! standing at the boundary does not flap); each avatar has at most `max_peers` links,
//! nearest first. The server decides links; the client uses the same radii to fade audio.

use serde::{Deserialize, Serialize};

/// The radii and cap of the proximity graph, pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProximityRules {
    pub connect_radius: f32,
    pub disconnect_radius: f32,
    pub max_peers: u8,
}

impl Default for ProximityRules {
    fn default() -> Self {
        ProximityRules {
            connect_radius: 160.0,
            disconnect_radius: 224.0,
            max_peers: 6,
        }
    }
}

impl ProximityRules {
    /// Checks the rules make sense; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.connect_radius.is_finite() && self.connect_radius > 0.0) {
            return Err("connect_radius must be a positive number of pixels".into());
        }
        if !(self.disconnect_radius.is_finite() && self.disconnect_radius > self.connect_radius) {
            return Err("disconnect_radius must be larger than connect_radius".into());
        }
        if self.max_peers == 0 {
            return Err("max_peers must be at least 1".into());
        }
        Ok(())
    }

    /// The distance a link may still be kept at, for an existing link; new links need
    /// `connect_radius`.
    pub fn keeps(&self, distance: f32, linked: bool) -> bool {
        distance
            <= if linked {
                self.disconnect_radius
            } else {
                self.connect_radius
            }
    }

    /// Audio gain for a peer at `distance`: full up close, fading to silence exactly at the
    /// disconnect radius (so a link never closes on audible sound).
    pub fn gain(&self, distance: f32) -> f32 {
        let full = self.connect_radius * 0.25;
        if distance <= full {
            1.0
        } else {
            let t = ((distance - full) / (self.disconnect_radius - full)).clamp(0.0, 1.0);
            (1.0 - t) * (1.0 - t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_keeps_links_between_the_radii() {
        let r = ProximityRules::default();
        let between = (r.connect_radius + r.disconnect_radius) / 2.0;
        assert!(
            !r.keeps(between, false),
            "a new link needs the connect radius"
        );
        assert!(
            r.keeps(between, true),
            "an existing link survives until the disconnect radius"
        );
        assert!(!r.keeps(r.disconnect_radius + 1.0, true));
    }

    #[test]
    fn gain_fades_to_silence_at_the_disconnect_radius() {
        let r = ProximityRules::default();
        assert_eq!(r.gain(0.0), 1.0);
        assert!(r.gain(r.connect_radius) < 1.0 && r.gain(r.connect_radius) > 0.0);
        assert_eq!(r.gain(r.disconnect_radius), 0.0);
        let mut last = 1.0;
        for d in 0..=(r.disconnect_radius as u32) {
            let g = r.gain(d as f32);
            assert!(g <= last, "gain rises at {d}");
            last = g;
        }
    }

    #[test]
    fn nonsense_rules_are_refused() {
        let r = ProximityRules {
            disconnect_radius: 10.0,
            ..ProximityRules::default()
        };
        assert!(r.validate().unwrap_err().contains("disconnect_radius"));
        assert!(
            ProximityRules {
                max_peers: 0,
                ..ProximityRules::default()
            }
            .validate()
            .is_err()
        );
        assert!(ProximityRules::default().validate().is_ok());
    }
}
