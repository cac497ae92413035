//! HTTP: the accept loop and its connection limits ([`serve`], [`limits`]), the `/ws`
//! upgrade ([`ws_upgrade`]) and who may make it ([`origin`]), `/metrics` and who may read
//! it ([`metrics`]), the security headers of every response ([`headers`]), with TLS on
//! what arrives on the port (HTTPS, TURN over TLS, or plain HTTP to redirect: [`sniff`]),
//! and the warp
//! routes: `/` and the page's static files (an allow-list: [`is_page_file`]), `/pkg/*`
//! (the wasm client: [`is_client_file`]), `/map.tmj` and `/map/tileset/N` (the space's map
//! and its images), all held in memory, compressed and cached by [`files`]; `/healthz`. Handlers only translate HTTP; sessions and the space do
//! the work.

pub mod files;
pub mod headers;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod records;
pub mod serve;
pub mod sniff;
pub mod ws_upgrade;

use crate::AppState;
use std::sync::Arc;
use warp::Filter;
use warp::http::{Response, StatusCode};

/// Where the client fetches the map; `Welcome.map_url` points here.
pub const MAP_URL: &str = "/map.tmj";

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };

    let healthz = warp::path("healthz").and(warp::path::end()).map(|| "ok");

    // The page, the client and the map: held in memory, compressed, cached by hashed name.
    let files = warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(warp::header::optional::<String>("if-none-match"))
        .and(with_state.clone())
        .and_then(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             accept: Option<String>,
             none_match: Option<String>,
             state: Arc<AppState>| async move {
                if method != warp::http::Method::GET && method != warp::http::Method::HEAD {
                    return Err(warp::reject::not_found());
                }
                state
                    .files
                    .respond(path.as_str(), accept.as_deref(), none_match.as_deref())
                    .ok_or_else(warp::reject::not_found)
            },
        );

    let records = records::routes(state.clone());

    // Cluster mode: the nodes, their load and the space's owner, for operators.
    let cluster = warp::path("cluster")
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_state.clone())
        .and_then(|auth: Option<String>, state: Arc<AppState>| async move {
            let Some(cluster) = state.cluster.as_ref() else {
                return Err(warp::reject::not_found());
            };
            let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
            if !token.is_some_and(|t| cluster.is_secret(t.as_bytes())) {
                return Ok(response(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    b"401 Unauthorized: /cluster needs `Authorization: Bearer <cluster_secret>`\n"
                        .to_vec(),
                ));
            }
            let body = serde_json::to_vec_pretty(&cluster.view()).unwrap_or_default();
            Ok(response(StatusCode::OK, "application/json", body))
        });

    healthz
        .or(cluster)
        .or(records)
        .or(files)
        .recover(|rejection: warp::Rejection| async move {
            let res = match rejection.find::<records::RefusedLink>() {
                Some(link) => records::refused(link),
                None => response(StatusCode::NOT_FOUND, "text/plain", b"not found".to_vec()),
            };
            Ok::<_, std::convert::Infallible>(res)
        })
}

/// What the page's own files may be: the files at the top of the assets folder that a
/// page loads (index.html, CSS, scripts, images, fonts). Folders are never served (the
/// map and its images have their own routes; `tools/` is for people), and neither are
/// names with `%` escapes, dot files, or other kinds of file.
pub fn is_page_file(path: &str) -> bool {
    const KINDS: [&str; 10] = [
        "html", "css", "js", "png", "jpg", "svg", "ico", "webp", "woff2", "txt",
    ];
    if path == "/" {
        return true;
    }
    let Some(name) = path.strip_prefix('/') else {
        return false;
    };
    plain_name(name)
        && name
            .rsplit_once('.')
            .is_some_and(|(_, kind)| KINDS.contains(&kind))
}

/// What the client folder may serve under `/pkg/`: wasm-bindgen's JavaScript (snippets
/// included) and the wasm module.
pub fn is_client_file(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/pkg/") else {
        return false;
    };
    rest.split('/').all(plain_name)
        && rest
            .rsplit_once('.')
            .is_some_and(|(_, kind)| kind == "js" || kind == "wasm")
}

/// A file or folder name of letters, digits, `-`, `_` and `.`, not starting with `.`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn response(status: StatusCode, mime: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    if let Ok(value) = mime.parse() {
        res.headers_mut().insert("content-type", value);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_files_are_served_and_nothing_else() {
        for path in ["/", "/index.html", "/style.css", "/main.js", "/favicon.ico"] {
            assert!(is_page_file(path), "{path}");
        }
        for path in [
            "/tools/make_campus.py",
            "/tools%2Fmake_campus.py",
            "/maps/campus.tmj",
            "/tilesets/campus.png",
            "/.git",
            "/..",
            "/make_campus.py",
            "/index.html/",
            "",
        ] {
            assert!(!is_page_file(path), "{path}");
        }
    }

    #[test]
    fn the_client_files_are_js_and_wasm() {
        for path in [
            "/pkg/quad_client.js",
            "/pkg/quad_client_bg.wasm",
            "/pkg/snippets/quad-client-1/inline0.js",
        ] {
            assert!(is_client_file(path), "{path}");
        }
        for path in [
            "/pkg/",
            "/pkg/package.json",
            "/pkg/../Cargo.toml",
            "/pkg/%2e%2e/x.js",
            "/pkg/.hidden.js",
        ] {
            assert!(!is_client_file(path), "{path}");
        }
    }
}
