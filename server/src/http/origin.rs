//! Which pages may open a session: the `Origin` check of the `/ws` upgrade. A browser sends
//! `Origin` with every WebSocket handshake, and a page on another site could otherwise open
//! a session with the visitor's network position and be handed TURN credentials. Accepted:
//! no `Origin` at all (bots and tools, which no other site can drive), an origin whose
//! host and port are the request's `Host`, `public_url`'s origin, and `allowed_origins`.

use crate::Config;
use hyper::header::HeaderValue;

/// An origin: scheme (`http` or `https`), host in lower case, and port (the scheme's
/// default when none is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl Origin {
    /// Parses `scheme://host[:port]` as browsers send it: nothing after the authority, no
    /// user info. `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Origin, &'static str> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("is not scheme://host[:port]")?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            "http"
        } else if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            return Err("must start with http:// or https://");
        };
        if rest.is_empty() {
            return Err("has no host");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("must have no path, query or fragment");
        }
        if rest.contains('@') {
            return Err("must have no user name");
        }
        let authority: hyper::http::uri::Authority =
            rest.parse().map_err(|_| "has no valid host[:port]")?;
        let (host, port) = host_port(&authority, default_port(scheme))?;
        Ok(Origin { scheme, host, port })
    }

    /// Parses an `allowed_origins` entry: like [`Origin::parse`], but a trailing `/` is
    /// forgiven (people copy origins from the address bar).
    pub fn parse_setting(text: &str) -> Result<Origin, &'static str> {
        Origin::parse(text.strip_suffix('/').unwrap_or(text))
    }

    /// Whether a `Host` header names this origin's host and port (a `Host` without a port
    /// means the origin's scheme's default port).
    pub fn is_host(&self, host_header: &str) -> bool {
        if host_header.contains('@') {
            return false;
        }
        let Ok(authority) = host_header.parse::<hyper::http::uri::Authority>() else {
            return false;
        };
        match host_port(&authority, default_port(self.scheme)) {
            Ok((host, port)) => host == self.host && port == self.port,
            Err(_) => false,
        }
    }
}

fn host_port(
    authority: &hyper::http::uri::Authority,
    default: u16,
) -> Result<(String, u16), &'static str> {
    let text = authority.as_str();
    let host = authority.host();
    // Without user info (refused by the callers), the authority is the host, then `:port`.
    let Some(after_host) = text.strip_prefix(host) else {
        return Err("has no valid host[:port]");
    };
    if host.is_empty() {
        return Err("has no host");
    }
    let port = match after_host.strip_prefix(':') {
        None if after_host.is_empty() => default,
        Some(p) => p.parse().map_err(|_| "has a port that is not a number")?,
        None => return Err("has no valid host[:port]"),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Why an upgrade was refused (the 403 body).
pub const REFUSED: &str = "403 Forbidden: this server accepts WebSocket sessions only from \
its own pages (the Origin header must match the Host header, public_url, or an entry of \
allowed_origins)\n";

/// Whether a WebSocket upgrade with these `Origin` and `Host` headers may go ahead.
pub fn allowed(origin: Option<&HeaderValue>, host: Option<&HeaderValue>, config: &Config) -> bool {
    let Some(origin) = origin else {
        // Not a browser: nothing another site could have made it send.
        return true;
    };
    // `null` (sandboxed frames, files) and anything unparseable are refused.
    let Some(origin) = origin.to_str().ok().and_then(|o| Origin::parse(o).ok()) else {
        return false;
    };
    if host
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| origin.is_host(h))
    {
        return true;
    }
    if config
        .public_url
        .as_deref()
        .and_then(origin_of_url)
        .is_some_and(|o| o == origin)
    {
        return true;
    }
    config
        .allowed_origins
        .iter()
        .filter_map(|o| Origin::parse_setting(o).ok())
        .any(|o| o == origin)
}

/// The origin of a URL such as `public_url` (which may have a path).
fn origin_of_url(url: &str) -> Option<Origin> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Origin::parse(&format!("{scheme}://{authority}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origin: Option<&str>, host: Option<&str>, config: &Config) -> bool {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let host = host.map(|h| HeaderValue::from_str(h).unwrap());
        allowed(origin.as_ref(), host.as_ref(), config)
    }

    #[test]
    fn origins_parse_with_default_ports() {
        let o = Origin::parse("HTTPS://Campus.Example.org").unwrap();
        assert_eq!(
            o,
            Origin {
                scheme: "https",
                host: "campus.example.org".into(),
                port: 443
            }
        );
        assert_eq!(Origin::parse("http://127.0.0.1:8080").unwrap().port, 8080);
        assert_eq!(Origin::parse("http://[::1]:9000").unwrap().host, "[::1]");
        assert_eq!(Origin::parse("http://[::1]").unwrap().port, 80);
        for bad in [
            "null",
            "campus.example.org",
            "ws://campus.example.org",
            "https://",
            "https://a.example/",
            "https://a.example?x",
            "https://u@a.example",
            "https://a.example:port",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        assert!(Origin::parse_setting("https://a.example/").is_ok());
    }

    #[test]
    fn same_host_and_port_is_welcome() {
        let config = Config::default();
        assert!(check(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            &config
        ));
        assert!(check(
            Some("https://Campus.example.org"),
            Some("campus.example.org"),
            &config
        ));
        assert!(check(
            Some("https://campus.example.org"),
            Some("campus.example.org:443"),
            &config
        ));
        assert!(check(
            Some("http://[::1]:8080"),
            Some("[::1]:8080"),
            &config
        ));
    }

    #[test]
    fn other_sites_are_refused() {
        let config = Config::default();
        for (origin, host) in [
            ("https://evil.example", "127.0.0.1:8080"),
            ("http://127.0.0.1:8081", "127.0.0.1:8080"),
            ("https://campus.example.org", "campus.example.org:8443"),
            ("null", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
        ] {
            assert!(!check(Some(origin), Some(host), &config), "{origin}");
        }
        assert!(!check(Some("https://evil.example"), None, &config));
    }

    #[test]
    fn no_origin_is_a_tool_and_welcome() {
        assert!(check(None, Some("127.0.0.1:8080"), &Config::default()));
        assert!(check(None, None, &Config::default()));
    }

    #[test]
    fn configured_origins_are_welcome() {
        let config = Config {
            allowed_origins: vec!["https://campus.example.org/".into()],
            public_url: Some("https://quad.example.net/campus/".into()),
            ..Config::default()
        };
        for origin in ["https://campus.example.org", "https://quad.example.net"] {
            assert!(
                check(Some(origin), Some("127.0.0.1:8080"), &config),
                "{origin}"
            );
        }
        assert!(!check(
            Some("http://campus.example.org"),
            Some("127.0.0.1:8080"),
            &config
        ));
    }
}
