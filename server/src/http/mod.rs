//! HTTP: the accept loop ([`serve`]), the `/ws` upgrade ([`ws_upgrade`]) and the warp routes:
//! `/` and the page's static files, `/pkg/*` (the wasm client), `/map.tmj` and
//! `/map/tileset/N` (the space's map and its images), `/healthz`, `/metrics` ([`metrics`]). Handlers only translate
//! HTTP; sessions and the space do the work.

pub mod metrics;
pub mod serve;
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

    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| {
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(&state).into_bytes(),
            )
        });

    let map = warp::path("map.tmj")
        .and(warp::path::end())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| {
            response(
                StatusCode::OK,
                "application/json",
                state.map_file.text.clone().into_bytes(),
            )
        });

    let tileset = warp::path!("map" / "tileset" / usize)
        .and(with_state.clone())
        .map(
            |index: usize, state: Arc<AppState>| match state.map_file.tileset_images.get(index) {
                Some((bytes, mime)) => response(StatusCode::OK, mime, bytes.clone()),
                None => response(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"no such tileset".to_vec(),
                ),
            },
        );

    let client = warp::path("pkg").and(warp::fs::dir(state.config.client_dir.clone()));
    let page = warp::fs::dir(state.config.assets_dir.clone());

    healthz
        .or(metrics)
        .or(map)
        .or(tileset)
        .or(client)
        .or(page)
        .recover(|_rejection: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(response(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found".to_vec(),
            ))
        })
}

fn response(status: StatusCode, mime: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    if let Ok(value) = mime.parse() {
        res.headers_mut().insert("content-type", value);
    }
    res
}
