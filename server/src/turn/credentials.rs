//! Time-limited TURN credentials in the scheme of coturn's REST API (`use-auth-secret`):
//! the user name is `expiry:user` (Unix seconds), the password is
//! `base64(HMAC-SHA1(secret, username))`. The embedded server checks them the same way, so
//! an external coturn with the same secret accepts what this server issues.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use ring::hmac;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The password for `username` under `secret`.
pub fn password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    BASE64_STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// A user name and password valid for `ttl` from `now`.
pub fn issue(secret: &str, user: &str, ttl: Duration, now: SystemTime) -> (String, String) {
    let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    let username = format!("{}:{user}", expiry.as_secs());
    let password = password(secret, &username);
    (username, password)
}

/// Why a TURN user name is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("user name {0:?} does not start with an expiry time")]
    Malformed(String),
    #[error("credentials for {0:?} have expired")]
    Expired(String),
}

/// The expiry of a `expiry[:user]` user name, checked against `now`.
pub fn check_username(username: &str, now: SystemTime) -> Result<(), Refused> {
    let expiry = username.split(':').next().unwrap_or_default();
    let expiry: u64 = expiry
        .parse()
        .map_err(|_| Refused::Malformed(username.to_owned()))?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if expiry < now {
        return Err(Refused::Expired(username.to_owned()));
    }
    Ok(())
}

/// Sessions whose TURN credentials no longer hold: the session ended. Kept until every
/// credential issued to it has expired, so the set stays as small as the sessions that
/// ended within one credential lifetime.
#[derive(Default)]
pub struct Revocations(std::sync::Mutex<std::collections::HashMap<String, SystemTime>>);

impl Revocations {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SystemTime>> {
        // Each change is one statement: a poisoned lock still holds a whole map.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Revokes `user` until `until` (when its last credential expires anyway).
    pub fn revoke(&self, user: &str, until: SystemTime) {
        let mut map = self.map();
        let now = SystemTime::now();
        map.retain(|_, until| *until > now);
        map.insert(user.to_owned(), until);
    }

    /// Whether the session `user` was revoked.
    pub fn is_revoked(&self, user: &str) -> bool {
        self.map().contains_key(user)
    }
}

/// The embedded server's authentication: it derives the expected key from the user name
/// and the shared secret, so it keeps no per-user state beyond revocations. A wrong
/// password fails the message-integrity check in the TURN server.
///
/// The expiry in a user name is checked when a relay is allocated (by the gate, which
/// sees the request's method): a live session's relays go on being refreshed after the
/// name's short lifetime, and end with the session (revoked, and its relays deleted).
pub struct RestAuth {
    secret: String,
    revoked: std::sync::Arc<Revocations>,
}

impl RestAuth {
    pub fn new(secret: String, revoked: std::sync::Arc<Revocations>) -> Self {
        RestAuth { secret, revoked }
    }
}

impl turn::auth::AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        let user = super::relays::user_of(username);
        if username
            .split(':')
            .next()
            .is_none_or(|e| e.parse::<u64>().is_err())
        {
            tracing::info!(%src_addr, "TURN request refused: {}", Refused::Malformed(username.into()));
            return Err(turn::Error::Other("malformed user name".into()));
        }
        if self.revoked.is_revoked(user) {
            tracing::info!(%src_addr, user, "TURN request refused: the session has ended");
            return Err(turn::Error::Other("revoked".into()));
        }
        let password = password(&self.secret, username);
        Ok(turn::auth::generate_auth_key(username, realm, &password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac_sha1() {
        // Computed outside Rust with: echo -n 1433895918:username |
        //   openssl dgst -binary -sha1 -hmac secret | base64
        assert_eq!(
            password("secret", "1433895918:username"),
            "/SB/k9lFDiqk9pq7hrl1rCtecHY="
        );
    }

    #[test]
    fn issued_credentials_hold_until_they_expire() {
        let now = SystemTime::now();
        let (user, pass) = issue(
            "s3cret-s3cret-s3cret",
            "avatar#7",
            Duration::from_secs(60),
            now,
        );
        assert!(user.ends_with(":avatar#7"));
        assert_eq!(pass, password("s3cret-s3cret-s3cret", &user));
        assert_eq!(check_username(&user, now), Ok(()));
        let later = now + Duration::from_secs(120);
        assert!(matches!(
            check_username(&user, later),
            Err(Refused::Expired(_))
        ));
    }

    #[test]
    fn a_forged_user_name_is_refused_or_gets_another_key() {
        let now = SystemTime::now();
        assert!(matches!(
            check_username("admin", now),
            Err(Refused::Malformed(_))
        ));
        // Pushing the expiry forward changes the password the server expects.
        let (user, pass) = issue("secret-one-secret", "x", Duration::from_secs(60), now);
        let forged = user.replacen(user.split(':').next().unwrap(), "99999999999", 1);
        assert_ne!(password("secret-one-secret", &forged), pass);
    }
}
