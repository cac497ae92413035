//! `/records/`: class records through signed links ([`crate::records::links`]). A link is
//! checked (signature, expiry) and nothing else: who may see a record was decided when its
//! link was made for a person's session. Recordings ([`serve_recording`], answered by the
//! accept loop itself, as their bodies stream) come from wherever the archive keeps them,
//! whole or by byte range (a browser's player seeks); registers come as CSV made from the
//! store (a warp route). Responses are private and not cached.

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
    warp::get()
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
        )
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

/// A streamed response body.
pub type StreamBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// Where recordings are served.
pub const RECORDING_PREFIX: &str = "/records/recording/";

/// A single byte range of a `Range` header: first byte, and last if given (`bytes=a-b`,
/// `bytes=a-`; a suffix `bytes=-n` as the last `n` of `total`). `None` for none, several
/// or a malformed one: the whole file is sent.
pub fn parse_range(header: Option<&str>, total: u64) -> Option<(u64, Option<u64>)> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some((total.saturating_sub(n), None));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        let end: u64 = b.parse().ok()?;
        if end < start {
            return None;
        }
        Some(end)
    };
    Some((start, end))
}

fn plain(status: StatusCode, text: String) -> Response<StreamBody> {
    use http_body_util::BodyExt;
    let mut res = Response::new(
        http_body_util::Full::new(bytes::Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Answers `GET /records/recording/<id>.webm?…` (or `HEAD`): the link checked, the file
/// streamed from the folder or the bucket, whole or the asked range.
pub async fn serve_recording(
    method: &hyper::Method,
    uri: &hyper::Uri,
    range: Option<&str>,
    state: &AppState,
) -> Response<StreamBody> {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    let path = uri.path();
    let id = match path
        .strip_prefix(RECORDING_PREFIX)
        .and_then(|name| name.strip_suffix(".webm"))
    {
        Some(id) if crate::media::recording::valid_id(id) => id.to_owned(),
        _ => return plain(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let download = match state.records.links.verify(
        path,
        uri.query().unwrap_or_default(),
        crate::store::now_ms(),
    ) {
        Ok(download) => download,
        Err(refused) => return plain(StatusCode::FORBIDDEN, format!("{refused}\n")),
    };
    let storage = state.records.storage.clone();
    let wanted = id.clone();
    let row = tokio::task::spawn_blocking(move || storage.blocking().recording(&wanted)).await;
    let location = match row {
        Ok(Ok(Some(r))) => crate::records::archive::Location::parse(&r.location),
        Ok(Ok(None)) => return plain(StatusCode::NOT_FOUND, "no such recording\n".into()),
        _ => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the records cannot be read now\n".into(),
            );
        }
    };
    let asked = |total| parse_range(range, total);
    let opened = match state.records.archive.open(&id, location, asked).await {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            return plain(
                StatusCode::NOT_FOUND,
                "the recording's file is gone\n".into(),
            );
        }
        Err(e) => {
            tracing::error!(id, "reading a recording: {e:#}");
            return plain(
                StatusCode::BAD_GATEWAY,
                "the recording cannot be read now\n".into(),
            );
        }
    };
    let total = opened.total;
    let asked = opened.asked;
    if asked && opened.range.is_empty() {
        let mut res = plain(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range not satisfiable\n".into(),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return res;
    }
    let len = opened.range.end - opened.range.start;
    let frames = opened.body.map(|chunk| {
        chunk
            .map(http_body::Frame::data)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    let body: StreamBody = if method == hyper::Method::HEAD {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames))
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if download {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"recording.webm\""),
        );
    }
    if asked {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{total}",
            opened.range.start,
            opened.range.end - 1
        )) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_browsers_send_them() {
        assert_eq!(parse_range(Some("bytes=0-"), 100), Some((0, None)));
        assert_eq!(parse_range(Some("bytes=10-19"), 100), Some((10, Some(19))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Some((90, None)));
        assert_eq!(parse_range(Some("bytes=5-1"), 100), None);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), None);
        assert_eq!(parse_range(Some("items=0-1"), 100), None);
        assert_eq!(parse_range(None, 100), None);
    }
}
