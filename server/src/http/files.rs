//! The page's files, read once at start-up and held in memory: `/` (index.html) and the
//! other page files at the top of the assets folder ([`super::is_page_file`]), the wasm
//! client under `/pkg/` ([`super::is_client_file`]), and the map with its tileset images.
//!
//! - **Compressed once.** Each file that compresses (text and wasm) is kept as read, as
//!   brotli and as gzip, and sent in the best of them the browser accepts
//!   (`Accept-Encoding`, with `Vary`). The client's compressed forms come from the
//!   `.br` and `.gz` files `cargo xtask` writes next to it (brotli at its best setting takes
//!   seconds on the wasm); anything without them is compressed here.
//! - **Hashed names, cached for a year.** Every file also answers under a name carrying its
//!   content's hash (`/pkg/quad_client_bg.1a2b3c4d5e6f.wasm`), sent with
//!   `Cache-Control: immutable` and a year's `max-age`. The page's references to its own
//!   files (`"/main.js"` in index.html, `"/pkg/quad_client_bg.wasm"` in main.js: a
//!   double-quoted absolute path) are rewritten to those names as the files are read, so a
//!   new build is new names and a returning visitor fetches only what changed. A hashed
//!   name of another build answers 404, never other content.
//! - **Plain names are checked each time** (`Cache-Control: no-cache`, with an `ETag` per
//!   encoding): `/`, the map, and anything asked for by its plain name. A matching
//!   `If-None-Match` is answered 304 with no body.
//!
//! Nothing is read from disk after start-up, so what a request can reach is exactly this
//! table. A rebuilt client is served once the server restarts (`cargo xtask serve` builds,
//! then starts it).

use super::{MAP_URL, is_client_file, is_page_file};
use crate::MapFile;
use anyhow::Context;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warp::http::{HeaderValue, Response, StatusCode};

/// How long a hashed name may be cached (a year, the longest `max-age` browsers honour).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Plain names: cached, but revalidated before each use.
pub const REVALIDATE: &str = "no-cache";

/// Hex digits of the content hash in a hashed name (48 bits of SHA-256).
const HASH_HEX: usize = 12;
/// Rewriting settles when no file's hash changes; a file that names one that names it would
/// never settle, so the rounds are bounded (the page's chain is three deep).
const REWRITE_ROUNDS: usize = 8;
/// Files larger than this are compressed at brotli quality 9 when no `.br` comes with them
/// (quality 11 takes seconds per megabyte); smaller ones at 11.
const BROTLI_BEST_UP_TO: usize = 256 * 1024;

/// One file in every encoding it is kept in.
pub struct StaticFile {
    pub mime: &'static str,
    /// The content's hash: the hashed name's and the `ETag`'s.
    pub hash: String,
    pub identity: Bytes,
    pub brotli: Option<Bytes>,
    pub gzip: Option<Bytes>,
}

/// An encoding a response is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    fn token(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Brotli => Some("br"),
        }
    }
}

impl StaticFile {
    /// The best encoding of this file that `accept_encoding` allows, and its bytes.
    pub fn pick(&self, accept_encoding: Option<&str>) -> (Encoding, &Bytes) {
        let accepts = |name| accept_encoding.is_some_and(|h| accepts(h, name));
        match (&self.brotli, &self.gzip) {
            (Some(br), _) if accepts("br") => (Encoding::Brotli, br),
            (_, Some(gz)) if accepts("gzip") => (Encoding::Gzip, gz),
            _ => (Encoding::Identity, &self.identity),
        }
    }

    fn etag(&self, encoding: Encoding) -> String {
        match encoding.token() {
            Some(t) => format!("\"{}-{t}\"", self.hash),
            None => format!("\"{}\"", self.hash),
        }
    }
}

/// Whether an `Accept-Encoding` header accepts `name` (listed, or `*`, with a q-value above
/// zero; `identity` is always acceptable and never asked about).
fn accepts(header: &str, name: &str) -> bool {
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .next()
            .unwrap_or(1.0);
        if token.eq_ignore_ascii_case(name) {
            return q > 0.0;
        }
        if token == "*" {
            star = q > 0.0;
        }
    }
    star
}

/// Whether an `If-None-Match` header names `etag` (or is `*`); weak tags compare equal.
fn none_match_hits(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Every file the server sends that is not made per request, by path.
pub struct StaticFiles {
    by_path: HashMap<String, (Arc<StaticFile>, Caching)>,
}

/// How a path may be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// A hashed name: never changes.
    Immutable,
    /// A plain name: revalidated on each use.
    Revalidate,
}

/// A file as read, before hashing and compression.
struct Source {
    path: String,
    mime: &'static str,
    bytes: Vec<u8>,
    /// Where it was read from, for its precompressed siblings (none for the map's text,
    /// which comes parsed and checked).
    disk: Option<PathBuf>,
    /// Whether it gets a hashed name (not `/`, the map, or tileset images: the page finds
    /// those by their plain names).
    hashed: bool,
}

impl StaticFiles {
    /// Reads the page files of `assets_dir`, the client files of `client_dir` and the map.
    /// A file that cannot be read stops the start with its name.
    pub fn load(assets_dir: &Path, client_dir: &Path, map: &MapFile) -> anyhow::Result<Self> {
        let mut sources = Vec::new();
        read_dir(assets_dir, "/", false, &mut sources, &|p| is_page_file(p))?;
        // A server without the client built still serves the page (which says so) and bots.
        if client_dir.is_dir() {
            read_dir(client_dir, "/pkg/", true, &mut sources, &|p| {
                is_client_file(p)
            })?;
        }
        sources.push(Source {
            path: MAP_URL.to_string(),
            mime: "application/json",
            bytes: map.text.clone().into_bytes(),
            disk: None,
            hashed: false,
        });
        for (i, (bytes, mime)) in map.tileset_images.iter().enumerate() {
            sources.push(Source {
                path: format!("/map/tileset/{i}"),
                mime,
                bytes: bytes.clone(),
                disk: None,
                hashed: false,
            });
        }
        Ok(Self::build(sources))
    }

    fn build(sources: Vec<Source>) -> Self {
        // Hash, rewrite references to hashed names, hash again, until nothing changes.
        let mut contents: Vec<Vec<u8>> = sources.iter().map(|s| s.bytes.clone()).collect();
        let mut hashes: Vec<String> = contents.iter().map(|c| content_hash(c)).collect();
        for _ in 0..REWRITE_ROUNDS {
            let names: Vec<(String, String)> = sources
                .iter()
                .zip(&hashes)
                .filter(|(s, _)| s.hashed)
                .map(|(s, h)| {
                    (
                        format!("\"{}\"", s.path),
                        format!("\"{}\"", hashed_name(&s.path, h)),
                    )
                })
                .collect();
            let mut changed = false;
            for (i, s) in sources.iter().enumerate() {
                if !is_text(s.mime) {
                    continue;
                }
                let rewritten = rewrite(&s.bytes, &names);
                let hash = content_hash(&rewritten);
                if hash != hashes[i] {
                    changed = true;
                    hashes[i] = hash;
                }
                contents[i] = rewritten;
            }
            if !changed {
                break;
            }
        }

        let mut by_path = HashMap::new();
        for ((s, content), hash) in sources.into_iter().zip(contents).zip(hashes) {
            let unchanged = content == s.bytes;
            let (brotli, gzip) = if compresses(s.mime) {
                let sibling = |ext: &str| {
                    s.disk
                        .as_deref()
                        .filter(|_| unchanged)
                        .and_then(|d| precompressed(d, ext))
                };
                let br = sibling("br").unwrap_or_else(|| brotli(&content));
                let gz = sibling("gz").unwrap_or_else(|| gzip(&content));
                (
                    (br.len() < content.len()).then(|| Bytes::from(br)),
                    (gz.len() < content.len()).then(|| Bytes::from(gz)),
                )
            } else {
                (None, None)
            };
            let file = Arc::new(StaticFile {
                mime: s.mime,
                hash: hash.clone(),
                identity: Bytes::from(content),
                brotli,
                gzip,
            });
            if s.hashed {
                by_path.insert(
                    hashed_name(&s.path, &hash),
                    (file.clone(), Caching::Immutable),
                );
            }
            if s.path == "/index.html" {
                by_path.insert("/".to_string(), (file.clone(), Caching::Revalidate));
            }
            by_path.insert(s.path, (file, Caching::Revalidate));
        }
        StaticFiles { by_path }
    }

    /// The file at `path` and how it may be cached.
    pub fn get(&self, path: &str) -> Option<(&StaticFile, Caching)> {
        self.by_path.get(path).map(|(f, c)| (f.as_ref(), *c))
    }

    /// The hashed name the page refers to `path` by (`None` for plain-only paths).
    #[cfg(test)]
    fn hashed_name_of(&self, path: &str) -> Option<String> {
        let (file, _) = self.by_path.get(path)?;
        let name = hashed_name(path, &file.hash);
        self.by_path.contains_key(&name).then_some(name)
    }

    /// The response to a GET or HEAD of `path` (`None`: not one of these files).
    pub fn respond(
        &self,
        path: &str,
        accept_encoding: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Option<Response<Bytes>> {
        let (file, caching) = self.get(path)?;
        let (encoding, body) = file.pick(accept_encoding);
        let etag = file.etag(encoding);
        let fresh = if_none_match.is_some_and(|h| none_match_hits(h, &etag));
        let mut res = Response::new(if fresh { Bytes::new() } else { body.clone() });
        if fresh {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
        }
        let headers = res.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(file.mime));
        headers.insert(
            "cache-control",
            HeaderValue::from_static(match caching {
                Caching::Immutable => IMMUTABLE,
                Caching::Revalidate => REVALIDATE,
            }),
        );
        if let Ok(v) = HeaderValue::from_str(&etag) {
            headers.insert("etag", v);
        }
        if file.brotli.is_some() || file.gzip.is_some() {
            headers.insert("vary", HeaderValue::from_static("accept-encoding"));
        }
        if let Some(token) = encoding.token() {
            headers.insert("content-encoding", HeaderValue::from_static(token));
        }
        Some(res)
    }
}

/// Reads the files under `dir` that `allowed` accepts by their URL path (`prefix` + the
/// relative path), into `out`; into subfolders only with `recurse`.
fn read_dir(
    dir: &Path,
    prefix: &str,
    recurse: bool,
    out: &mut Vec<Source>,
    allowed: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))?;
    let mut entries: Vec<_> = entries.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = format!("{prefix}{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if recurse {
                read_dir(&entry.path(), &format!("{path}/"), true, out, allowed)?;
            }
            continue;
        }
        if !allowed(&path) {
            continue;
        }
        let bytes = std::fs::read(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.push(Source {
            hashed: path != "/index.html",
            mime: mime_of(&path),
            path,
            bytes,
            disk: Some(entry.path()),
        });
    }
    Ok(())
}

/// The content type of a page or client file, by its extension.
fn mime_of(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Files whose references to other files are rewritten to hashed names.
fn is_text(mime: &str) -> bool {
    mime.starts_with("text/html")
        || mime.starts_with("text/css")
        || mime.starts_with("text/javascript")
}

/// Kinds worth compressing (images and fonts already are).
fn compresses(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime == "application/wasm"
        || mime == "application/json"
        || mime == "image/svg+xml"
}

/// `/pkg/quad_client_bg.wasm` → `/pkg/quad_client_bg.<hash>.wasm`.
fn hashed_name(path: &str, hash: &str) -> String {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{folder}/{stem}.{hash}.{ext}"),
        _ => format!("{folder}/{name}.{hash}"),
    }
}

fn content_hash(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `bytes` with each `from` replaced by its `to` (quoted paths, so `"/main.js"` never
/// matches inside `"/pkg/main.js"`).
fn rewrite(bytes: &[u8], names: &[(String, String)]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bytes.to_vec();
    };
    let mut text = text.to_string();
    for (from, to) in names {
        if text.contains(from.as_str()) {
            text = text.replace(from.as_str(), to);
        }
    }
    text.into_bytes()
}

/// The `.br` or `.gz` next to `file`, if it is at least as new as the file.
fn precompressed(file: &Path, ext: &str) -> Option<Vec<u8>> {
    let mut name = file.file_name()?.to_os_string();
    name.push(".");
    name.push(ext);
    let sibling = file.with_file_name(name);
    let newer = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if newer(&sibling)? < newer(file)? {
        return None;
    }
    std::fs::read(sibling).ok()
}

/// Brotli with a 4 MiB window, at the best quality for small files and 9 for large ones
/// (see [`BROTLI_BEST_UP_TO`]).
fn brotli(bytes: &[u8]) -> Vec<u8> {
    let quality = if bytes.len() <= BROTLI_BEST_UP_TO {
        11
    } else {
        9
    };
    let mut out = Vec::with_capacity(bytes.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, 22);
        // Writing to a Vec cannot fail.
        let _ = w.write_all(bytes);
    }
    out
}

/// Gzip at the best level.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = w.write_all(bytes);
    w.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn source(path: &str, text: &str) -> Source {
        Source {
            path: path.to_string(),
            mime: mime_of(path),
            bytes: text.as_bytes().to_vec(),
            disk: None,
            hashed: path != "/index.html",
        }
    }

    fn page() -> StaticFiles {
        page_with(&"\0asm".repeat(2000))
    }

    fn page_with(wasm: &str) -> StaticFiles {
        StaticFiles::build(vec![
            source(
                "/index.html",
                "<link href=\"/style.css\"><script src=\"/main.js\"></script>",
            ),
            source(
                "/main.js",
                "import init from \"/pkg/quad_client.js\"; init(\"/pkg/quad_client_bg.wasm\");",
            ),
            source("/style.css", &"body { margin: 0 }\n".repeat(50)),
            source(
                "/pkg/quad_client.js",
                &"export default function init() {}\n".repeat(40),
            ),
            source("/pkg/quad_client_bg.wasm", wasm),
        ])
    }

    fn text(files: &StaticFiles, path: &str) -> String {
        String::from_utf8(files.get(path).unwrap().0.identity.to_vec()).unwrap()
    }

    #[test]
    fn the_page_names_its_files_by_hash_through_the_whole_chain() {
        let files = page();
        let wasm = files.hashed_name_of("/pkg/quad_client_bg.wasm").unwrap();
        let js = files.hashed_name_of("/pkg/quad_client.js").unwrap();
        let main = files.hashed_name_of("/main.js").unwrap();
        let css = files.hashed_name_of("/style.css").unwrap();
        assert!(
            wasm.starts_with("/pkg/quad_client_bg.") && wasm.ends_with(".wasm"),
            "{wasm}"
        );
        assert_eq!(wasm.len(), "/pkg/quad_client_bg..wasm".len() + HASH_HEX);
        let main_text = text(&files, "/main.js");
        assert!(main_text.contains(&format!("\"{wasm}\"")), "{main_text}");
        assert!(main_text.contains(&format!("\"{js}\"")), "{main_text}");
        let index = text(&files, "/");
        assert!(index.contains(&format!("\"{main}\"")), "{index}");
        assert!(index.contains(&format!("\"{css}\"")), "{index}");
        // The hashed name of main.js is the hash of main.js as rewritten.
        assert_eq!(
            files.get(&main).unwrap().0.hash,
            content_hash(main_text.as_bytes())
        );
        assert!(files.hashed_name_of("/").is_none());
    }

    #[test]
    fn a_new_build_of_the_wasm_renames_every_file_that_leads_to_it() {
        let before = page();
        let after = page_with("\0asm, a new build");
        for path in ["/pkg/quad_client_bg.wasm", "/main.js"] {
            assert_ne!(
                before.hashed_name_of(path),
                after.hashed_name_of(path),
                "{path}"
            );
        }
        // What does not lead to the wasm keeps its name.
        for path in ["/style.css", "/pkg/quad_client.js"] {
            assert_eq!(
                before.hashed_name_of(path),
                after.hashed_name_of(path),
                "{path}"
            );
        }
        // The old build's hashed name is not served by the new one.
        let old = before.hashed_name_of("/pkg/quad_client_bg.wasm").unwrap();
        assert!(after.respond(&old, None, None).is_none());
    }

    #[test]
    fn the_best_accepted_encoding_is_sent_and_decodes_to_the_file() {
        let files = page();
        let path = "/pkg/quad_client_bg.wasm";
        let original = files.get(path).unwrap().0.identity.clone();
        let cases = [
            (Some("gzip, deflate, br, zstd"), Some("br")),
            (Some("gzip, deflate"), Some("gzip")),
            (Some("br;q=0, gzip;q=0.5"), Some("gzip")),
            (Some("*"), Some("br")),
            (Some("identity"), None),
            (None, None),
        ];
        for (accept, expected) in cases {
            let res = files.respond(path, accept, None).unwrap();
            let encoding = res
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(encoding.as_deref(), expected, "{accept:?}");
            let body = res.body().clone();
            let decoded = match expected {
                Some("br") => {
                    let mut out = Vec::new();
                    brotli::Decompressor::new(&body[..], 4096)
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                Some("gzip") => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                _ => body.to_vec(),
            };
            assert_eq!(decoded, original, "{accept:?}");
            assert_eq!(res.headers()["vary"], "accept-encoding");
        }
    }

    #[test]
    fn a_matching_etag_is_answered_without_the_body() {
        let files = page();
        let res = files.respond("/main.js", Some("br"), None).unwrap();
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        assert!(etag.ends_with("-br\""), "{etag}");
        assert_eq!(res.headers()["cache-control"], REVALIDATE);
        let again = files
            .respond("/main.js", Some("br"), Some(&format!("\"x\", W/{etag}")))
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
        // The same tag does not match the gzip form: a cache keeps one per encoding.
        let other = files
            .respond("/main.js", Some("gzip"), Some(&etag))
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK);
        assert!(!other.body().is_empty());
    }

    #[test]
    fn hashed_names_are_immutable_and_plain_ones_revalidate() {
        let files = page();
        let hashed = files.hashed_name_of("/style.css").unwrap();
        let res = files.respond(&hashed, None, None).unwrap();
        assert_eq!(res.headers()["cache-control"], IMMUTABLE);
        let res = files.respond("/style.css", None, None).unwrap();
        assert_eq!(res.headers()["cache-control"], REVALIDATE);
        assert!(files.respond("/", None, None).is_some());
        assert!(files.respond("/nothing.js", None, None).is_none());
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        assert!(accepts("gzip, br", "br"));
        assert!(accepts("GZIP", "gzip"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(accepts("br;q=0.1", "br"));
        assert!(accepts("*;q=0.5", "br"));
        assert!(!accepts("*, br;q=0", "br"));
        assert!(!accepts("deflate", "br"));
        assert!(!accepts("br;q=oops", "br"));
    }

    #[test]
    fn images_are_not_compressed_again() {
        let files = StaticFiles::build(vec![Source {
            path: "/map/tileset/0".into(),
            mime: "image/png",
            bytes: vec![0; 4096],
            disk: None,
            hashed: false,
        }]);
        let (file, caching) = files.get("/map/tileset/0").unwrap();
        assert!(file.brotli.is_none() && file.gzip.is_none());
        assert_eq!(caching, Caching::Revalidate);
        let res = files
            .respond("/map/tileset/0", Some("br, gzip"), None)
            .unwrap();
        assert!(res.headers().get("content-encoding").is_none());
        assert!(res.headers().get("vary").is_none());
    }
}
