//! Signed, expiring links to class records (a recording's file, a register's CSV). The
//! server decides who may see a record when it lists records for a person's session, and
//! hands that person links signed with a key only it knows (HMAC-SHA256 over the path,
//! the expiry and whether it is a download). The HTTP handler checks the signature and the
//! time, and nothing else: a link works for whoever holds it until it expires, like a
//! shared file link, so it is short-lived ([`LINK_LIFETIME`]).

use base64::Engine;
use ring::hmac;

/// How long a link works.
pub const LINK_LIFETIME_MS: u64 = 60 * 60 * 1000;

/// Signs and checks links.
pub struct Links {
    key: hmac::Key,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Links(..)")
    }
}

/// Why a link is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this link is not valid")]
    Forged,
    #[error("this link has expired: ask for the list again for a new one")]
    Expired,
}

fn message(path: &str, expires_ms: u64, download: bool) -> String {
    format!("{path}\n{expires_ms}\n{}", u8::from(download))
}

impl Links {
    /// Links signed with `secret` (kept in the store, so links outlive a restart).
    pub fn new(secret: &[u8]) -> Links {
        Links {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A link to `path` (which must start with `/`) that works until `expires_ms`.
    pub fn sign(&self, path: &str, expires_ms: u64, download: bool) -> String {
        let tag = hmac::sign(&self.key, message(path, expires_ms, download).as_bytes());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        let download = if download { "&download=1" } else { "" };
        format!("{path}?expires={expires_ms}{download}&sig={sig}")
    }

    /// Checks a link to `path` with query string `query` at `now_ms`: whether it asks for
    /// a download, or why it is refused.
    pub fn verify(&self, path: &str, query: &str, now_ms: u64) -> Result<bool, Refused> {
        let (mut expires, mut download, mut sig) = (None, false, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse::<u64>().ok(),
                Some(("download", "1")) => download = true,
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(Refused::Forged);
        };
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| Refused::Forged)?;
        hmac::verify(&self.key, message(path, expires, download).as_bytes(), &tag)
            .map_err(|_| Refused::Forged)?;
        if now_ms > expires {
            return Err(Refused::Expired);
        }
        Ok(download)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_until_it_expires_and_only_as_signed() {
        let links = Links::new(b"secret");
        let url = links.sign("/records/recording/x.webm", 5_000, false);
        let (path, query) = url.split_once('?').expect("a query");
        assert_eq!(links.verify(path, query, 4_999), Ok(false));
        assert_eq!(links.verify(path, query, 5_001), Err(Refused::Expired));
        // Another path, a later expiry, a download, another key: all refused.
        assert_eq!(
            links.verify("/records/recording/y.webm", query, 0),
            Err(Refused::Forged)
        );
        let later = query.replace("expires=5000", "expires=9999999");
        assert_eq!(links.verify(path, &later, 0), Err(Refused::Forged));
        assert_eq!(
            links.verify(path, &format!("{query}&download=1"), 0),
            Err(Refused::Forged)
        );
        assert_eq!(
            Links::new(b"other").verify(path, query, 0),
            Err(Refused::Forged)
        );
        assert_eq!(links.verify(path, "", 0), Err(Refused::Forged));
        assert_eq!(
            links.verify(path, "expires=1&sig=%%%", 0),
            Err(Refused::Forged)
        );
        let download = links.sign(path, 5_000, true);
        let (_, q) = download.split_once('?').expect("a query");
        assert_eq!(links.verify(path, q, 0), Ok(true));
    }
}
