//! `/records/`: class records through signed links ([`crate::records::links`]). A link is
//! checked (signature, expiry) and nothing else: who may see a record was decided when its
//! link was made for a person's session. Recordings are served from the recordings folder
//! with byte ranges (a browser's player seeks), registers as CSV made from the store.
//! Responses are private and not cached.

use crate::AppState;
use crate::records::links::Refused;
use std::sync::Arc;
use warp::Filter;
use warp::http::{HeaderValue, Response, StatusCode, header};

/// A refused link, for the recovery to answer with 403 and why.
#[derive(Debug)]
pub struct RefusedLink(pub Refused);

impl warp::reject::Reject for RefusedLink {}

/// A register's id from the last path segment (`<session>.csv`), if it is one.
fn session_of(name: &str) -> Option<&str> {
    name.strip_suffix(".csv")
        .filter(|s| crate::media::recording::valid_id(s))
}

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    // The link's signature and expiry: whether it asks for a download.
    let signed = warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with_state.clone())
        .and_then(
            |path: warp::path::FullPath, query: String, state: Arc<AppState>| async move {
                state
                    .records
                    .links
                    .verify(path.as_str(), &query, crate::store::now_ms())
                    .map_err(|e| warp::reject::custom(RefusedLink(e)))
            },
        );
    let dir = state
        .records
        .dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("/nonexistent"));
    let recording = warp::path!("records" / "recording" / ..)
        .and(warp::path::peek())
        .and_then(|rest: warp::path::Peek| async move {
            // Only a recording's file: `<id>.webm`, never its raw tracks' folder.
            match rest.as_str().strip_suffix(".webm") {
                Some(id) if crate::media::recording::valid_id(id) => Ok(()),
                _ => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
        .and(signed.clone())
        .and(warp::fs::dir(dir))
        .map(|download: bool, file: warp::fs::File| {
            let mut res = warp::Reply::into_response(file);
            private(&mut res);
            if download {
                res.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"recording.webm\""),
                );
            }
            res
        });
    let register = warp::get()
        .and(warp::path!("records" / "class" / String))
        .and_then(|name: String| async move {
            session_of(&name)
                .map(str::to_owned)
                .ok_or_else(warp::reject::not_found)
        })
        .and(signed)
        .and(with_state)
        .and_then(
            |session: String, _download: bool, state: Arc<AppState>| async move {
                let read = tokio::task::spawn_blocking(move || {
                    state.records.storage.blocking().register(&session)
                })
                .await;
                let register = match read {
                    Ok(Ok(Some(register))) => register,
                    Ok(Ok(None)) => return Err(warp::reject::not_found()),
                    Ok(Err(e)) => {
                        tracing::error!("reading a class register: {e:#}");
                        return Err(warp::reject::not_found());
                    }
                    Err(_) => return Err(warp::reject::not_found()),
                };
                let csv = crate::records::register::csv(&register, crate::store::now_ms());
                let mut res = Response::new(csv.into_bytes());
                let res_headers = res.headers_mut();
                res_headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                );
                // The room's name is the campus's own, but still only letters go in a header.
                let room: String = register
                    .room
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let day = crate::records::register::rfc3339(register.started_ms);
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "attachment; filename=\"{room}-{}.csv\"",
                    &day[..10]
                )) {
                    res_headers.insert(header::CONTENT_DISPOSITION, v);
                }
                let mut res = warp::Reply::into_response(res);
                private(&mut res);
                Ok::<_, warp::Rejection>(res)
            },
        );
    recording.or(register).unify()
}

fn private(res: &mut warp::reply::Response) {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
}

/// The answer to a refused link.
pub fn refused(link: &RefusedLink) -> Response<Vec<u8>> {
    let mut res = Response::new(format!("{}\n", link.0).into_bytes());
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
