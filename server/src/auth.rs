//! Join links: JWTs (HS256) that say who someone is in the space (name, role, optional
//! room) until when. The server signs them with a secret from the config or one generated
//! once into the data directory; `quad-server token` makes them, `Hello.token` presents
//! them. People without a link join as guests when the server allows guests.
//!
//! This module also says who a session *is* for the chat history ([`UserKey`]): the link's
//! subject, or a hash of the browser's device key, or the session alone.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quad_shared::protocol::{ErrorCode, ErrorMsg, Role};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a join link says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// Who the link is for: random per link, stable across visits.
    pub sub: String,
    pub name: String,
    /// `teacher` or `student`.
    pub role: String,
    /// The classroom (zone name) the link is for: its holder appears there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
}

impl JoinClaims {
    /// The role the link grants (guests have no link).
    pub fn role(&self) -> Role {
        Role::parse(&self.role)
            .filter(|r| *r != Role::Guest)
            .unwrap_or(Role::Student)
    }
}

/// Why a link was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("this join link has expired; ask for a new one")]
    Expired,
    #[error("this join link is not valid (it was not made by this server, or it was altered)")]
    Invalid,
}

impl From<TokenError> for ErrorMsg {
    fn from(e: TokenError) -> ErrorMsg {
        ErrorMsg::new(ErrorCode::Unauthorized, e.to_string())
    }
}

/// Signs and checks join links with one secret.
#[derive(Clone)]
pub struct JoinKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JoinKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinKeys(..)")
    }
}

impl JoinKeys {
    pub fn new(secret: &[u8]) -> JoinKeys {
        JoinKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Makes a link's token for `name` as `role`, valid for `ttl` from `now`.
    pub fn issue(
        &self,
        name: &str,
        role: Role,
        room: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> anyhow::Result<String> {
        let name = quad_shared::protocol::normalize_name(name)
            .map_err(|e| anyhow::anyhow!("name: {}", e.message))?;
        if role == Role::Guest {
            anyhow::bail!("role: a link is for a teacher or a student (guests need none)");
        }
        let iat = unix_secs(now);
        let claims = JoinClaims {
            sub: random_hex(16),
            name,
            role: role.as_str().to_owned(),
            room: room.map(str::to_owned),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Checks a token's signature and expiry (no leeway beyond a few seconds of clock skew).
    pub fn verify(&self, token: &str) -> Result<JoinClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match jsonwebtoken::decode::<JoinClaims>(token, &self.decoding, &validation) {
            Ok(data) => {
                // A signed token with a bad name is still not usable.
                if quad_shared::protocol::normalize_name(&data.claims.name).is_err() {
                    return Err(TokenError::Invalid);
                }
                Ok(data.claims)
            }
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                _ => Err(TokenError::Invalid),
            },
        }
    }
}

/// Who a session is, for chat history: stable across visits where it can be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserKey(pub String);

impl UserKey {
    /// A link holder: the link's subject.
    pub fn link(claims: &JoinClaims) -> UserKey {
        UserKey(format!("link:{}", claims.sub))
    }

    /// A guest whose browser sent a device key: a hash of it (the key itself is a secret
    /// of that browser and is not stored).
    pub fn device(key: &str) -> Option<UserKey> {
        let key = key.trim();
        if key.len() < 16 || key.len() > 128 {
            return None;
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        Some(UserKey(format!("device:{}", hex(&digest.as_ref()[..16]))))
    }

    /// Anyone else: this session only (`nonce` tells server runs apart).
    pub fn session(nonce: u64, avatar: u32) -> UserKey {
        UserKey(format!("session:{nonce:x}:{avatar}"))
    }
}

/// Parses a duration such as `8h`, `30m`, `7d` or `1h 30m`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 8h, 30m or 7d: {e}"))?;
    if ttl.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(ttl)
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `n` random bytes from the system's secure generator, as hex.
pub fn random_hex(n: usize) -> String {
    hex(&random_bytes(n))
}

/// `n` random bytes from the system's secure generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    // The system generator fails only if the OS has no randomness at all, where nothing
    // secure can be done; a zero key would be worse than stopping.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator failed");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_round_trips_with_its_claims() {
        let keys = JoinKeys::new(b"secret-one");
        let now = SystemTime::now();
        let token = keys
            .issue(
                " Ms Ada ",
                Role::Teacher,
                Some("Room 1"),
                Duration::from_secs(3600),
                now,
            )
            .expect("valid claims");
        let claims = keys.verify(&token).expect("valid token");
        assert_eq!(claims.name, "Ms Ada");
        assert_eq!(claims.role(), Role::Teacher);
        assert_eq!(claims.room.as_deref(), Some("Room 1"));
        assert_eq!(claims.exp, unix_secs(now) + 3600);
    }

    #[test]
    fn expired_forged_and_garbled_links_are_refused() {
        let keys = JoinKeys::new(b"secret-one");
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        let expired = keys
            .issue("Bo", Role::Student, None, Duration::from_secs(60), long_ago)
            .expect("valid claims");
        assert_eq!(keys.verify(&expired), Err(TokenError::Expired));

        let forged = JoinKeys::new(b"another-secret")
            .issue(
                "Bo",
                Role::Teacher,
                None,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .expect("valid claims");
        assert_eq!(keys.verify(&forged), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not.a.token"), Err(TokenError::Invalid));
        assert_eq!(keys.verify(""), Err(TokenError::Invalid));
    }

    #[test]
    fn guests_get_no_links_and_names_are_checked() {
        let keys = JoinKeys::new(b"s");
        let ttl = Duration::from_secs(60);
        assert!(
            keys.issue("Bo", Role::Guest, None, ttl, SystemTime::now())
                .is_err()
        );
        assert!(
            keys.issue("", Role::Student, None, ttl, SystemTime::now())
                .is_err()
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_ttl("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_ttl("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("0s").is_err());
    }

    #[test]
    fn device_keys_are_hashed_and_checked() {
        let a = UserKey::device("0123456789abcdef0123").expect("long enough");
        assert!(a.0.starts_with("device:"));
        assert!(!a.0.contains("0123456789abcdef0123"));
        assert_eq!(UserKey::device("short"), None);
    }
}
