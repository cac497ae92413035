//! The security headers every HTTP response carries (the page, the client, the map,
//! `/metrics`, errors): what the browser may load and run for the page, and that it is
//! not to be framed, sniffed, or named in a `Referer`. Responses hyper makes by itself
//! (a 400 for a request it cannot parse) carry none: they have no content to protect.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// The page's content security policy. Everything it loads is its own (`'self'`); wasm
/// needs `'wasm-unsafe-eval'` to be compiled, which allows no JavaScript `eval`. `/ws`
/// on the page's own host is covered by `connect-src 'self'` (CSP 3; browsers since
/// 2019). No inline script (the page's boot code is `/main.js`) and no inline style:
/// the client styles elements through the CSSOM (`element.style`), which the policy
/// allows. Media elements play `MediaStream`s (`srcObject`), and images are only the map's
/// tilesets, so `blob:`, `data:` and `mediastream:` are there for what browsers make of
/// them and nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
script-src 'self' 'wasm-unsafe-eval'; \
connect-src 'self'; \
img-src 'self' data: blob:; \
media-src 'self' blob: mediastream:; \
style-src 'self'; \
object-src 'none'; \
base-uri 'none'; \
form-action 'self'; \
frame-ancestors 'none'";

/// The headers, in the order they are added.
pub const HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    // Join links carry their token in the query string: no page the campus links to may
    // learn it from a `Referer`.
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// Adds (or replaces) the security headers.
pub fn add(headers: &mut HeaderMap) {
    for (name, value) in HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_is_a_valid_header() {
        let mut headers = HeaderMap::new();
        add(&mut headers);
        assert_eq!(headers.len(), HEADERS.len());
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}
