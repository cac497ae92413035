//! Where finished recordings are kept: the recordings folder, or, when a bucket is
//! configured, S3-compatible object storage (through the `object_store` crate: AWS S3,
//! MinIO, Garage, Ceph, …). A recording's file is made in the folder; [`Archive::keep`]
//! uploads it (in parts, so a long class never sits in memory), retrying, checks that the
//! stored object has the file's size, and only then deletes the local copy. A file whose
//! upload does not succeed stays in the folder and is served from there.
//!
//! [`Archive::open`] reads a recording back, whole or a byte range, as a stream, from
//! wherever it is ([`Location`]).

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Where a recording's file is (the store's `location`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Local,
    S3,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Local => "local",
            Location::S3 => "s3",
        }
    }

    pub fn parse(s: &str) -> Location {
        if s == "s3" {
            Location::S3
        } else {
            Location::Local
        }
    }
}

/// An S3-compatible bucket's settings (from the configuration; keys may come from the
/// usual `AWS_*` environment variables instead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Object names start with this (e.g. `recordings/`).
    pub prefix: String,
    /// Another service than AWS (e.g. `http://minio.campus.lan:9000`).
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain `http://` endpoints are allowed (a LAN service).
    pub allow_http: bool,
}

/// Upload attempts at most (each with the object store's own retries inside).
const ATTEMPTS: u32 = 3;

/// The recordings' home.
pub struct Archive {
    dir: PathBuf,
    s3: Option<(Arc<dyn ObjectStore>, String)>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("dir", &self.dir)
            .field("s3", &self.s3.as_ref().map(|(_, prefix)| prefix))
            .finish()
    }
}

/// A recording read back: its total size, the range sent, and the bytes of that range.
pub struct Opened {
    pub total: u64,
    /// A range was asked for (the answer is partial content, or none could be met).
    pub asked: bool,
    pub range: std::ops::Range<u64>,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl Opened {
    /// No bytes: the range asked for cannot be met, or the file is empty.
    fn nothing(total: u64, asked: bool) -> Opened {
        Opened {
            total,
            asked,
            range: 0..0,
            body: futures_util::stream::empty().boxed(),
        }
    }
}

impl Archive {
    /// Recordings in `dir`, and in a bucket if `s3` is given.
    pub fn new(dir: PathBuf, s3: Option<&S3Settings>) -> anyhow::Result<Archive> {
        let s3 = match s3 {
            None => None,
            Some(settings) => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&settings.bucket)
                    .with_region(&settings.region)
                    .with_allow_http(settings.allow_http)
                    .with_retry(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig {
                            init_backoff: Duration::from_millis(200),
                            max_backoff: Duration::from_secs(10),
                            base: 2.0,
                        },
                        max_retries: 5,
                        retry_timeout: Duration::from_secs(120),
                    });
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &settings.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &settings.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
                Some((store, settings.prefix.clone()))
            }
        };
        Ok(Archive { dir, s3 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.webm"))
    }

    fn object(prefix: &str, id: &str) -> ObjectPath {
        ObjectPath::from(format!("{prefix}{id}.webm"))
    }

    /// Keeps recording `id`'s file (made in the folder): uploaded and checked, then the
    /// local copy deleted, when a bucket is configured. Where it is now, and why the
    /// upload failed if it did (the file then stays in the folder).
    pub async fn keep(&self, id: &str) -> (Location, Option<String>) {
        let Some((store, prefix)) = &self.s3 else {
            return (Location::Local, None);
        };
        let file = self.file(id);
        let object = Self::object(prefix, id);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match upload(store.as_ref(), &file, &object).await {
                Ok(()) => {
                    if let Err(e) = tokio::fs::remove_file(&file).await {
                        tracing::warn!(file = %file.display(), "uploaded, but the local copy could not be deleted: {e}");
                    }
                    tracing::info!(id, %object, attempt, "recording uploaded");
                    return (Location::S3, None);
                }
                Err(e) => {
                    last = format!("{e:#}");
                    tracing::warn!(id, attempt, "uploading a recording failed: {last}");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
                }
            }
        }
        (
            Location::Local,
            Some(format!(
                "the upload to the object store failed ({last}); the file is kept on the server"
            )),
        )
    }

    /// Reads recording `id` from `location`: the range `range` picks once the size is known
    /// (first byte, last byte if given), or all of it. `Ok(None)`: there is no such file.
    pub async fn open(
        &self,
        id: &str,
        location: Location,
        range: impl FnOnce(u64) -> Option<(u64, Option<u64>)>,
    ) -> anyhow::Result<Option<Opened>> {
        match (location, &self.s3) {
            (Location::S3, Some((store, prefix))) => {
                let object = Self::object(prefix, id);
                let total = match store.head(&object).await {
                    Ok(meta) => meta.size,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let asked = range(total);
                let Some(range) = clamp(asked, total) else {
                    return Ok(Some(Opened::nothing(total, asked.is_some())));
                };
                let got = store
                    .get_opts(
                        &object,
                        object_store::GetOptions {
                            range: Some(object_store::GetRange::Bounded(range.clone())),
                            ..Default::default()
                        },
                    )
                    .await?;
                let body = got
                    .into_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed();
                Ok(Some(Opened {
                    total,
                    asked: asked.is_some(),
                    range,
                    body,
                }))
            }
            _ => {
                let path = self.file(id);
                let mut file = match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let total = file.metadata().await?.len();
                let asked = range(total);
                let Some(range) = clamp(asked, total) else {
                    return Ok(Some(Opened::nothing(total, asked.is_some())));
                };
                file.seek(std::io::SeekFrom::Start(range.start)).await?;
                let body = tokio_util::io::ReaderStream::with_capacity(
                    file.take(range.end - range.start),
                    64 * 1024,
                )
                .boxed();
                Ok(Some(Opened {
                    total,
                    asked: asked.is_some(),
                    range,
                    body,
                }))
            }
        }
    }

    /// Deletes recording `id` wherever it is (a missing file is no error).
    pub async fn delete(&self, id: &str) {
        if let Some((store, prefix)) = &self.s3 {
            match store.delete(&Self::object(prefix, id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(
                    id,
                    "an old recording could not be deleted from the object store: {e}"
                ),
            }
        }
        let file = self.file(id);
        if let Err(e) = tokio::fs::remove_file(&file).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file.display(), "an old recording could not be deleted: {e}");
        }
        let _ = tokio::fs::remove_dir_all(self.dir.join(id)).await;
    }
}

/// The byte range to send of an object of `total` bytes, end exclusive; `None` when the
/// request cannot be met (past the end, or an empty object).
pub fn clamp(range: Option<(u64, Option<u64>)>, total: u64) -> Option<std::ops::Range<u64>> {
    match range {
        None if total > 0 => Some(0..total),
        None => None,
        Some((start, _)) if start >= total => None,
        Some((start, end)) => {
            let end = end.map_or(total, |e| e.saturating_add(1).min(total));
            (start < end).then_some(start..end)
        }
    }
}

/// Uploads `file` to `object` in parts, then checks the stored size.
async fn upload(store: &dyn ObjectStore, file: &Path, object: &ObjectPath) -> anyhow::Result<()> {
    let mut local = tokio::fs::File::open(file).await?;
    let size = local.metadata().await?.len();
    let mut upload = object_store::WriteMultipart::new_with_chunk_size(
        store.put_multipart(object).await?,
        8 << 20,
    );
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = local.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        upload.wait_for_capacity(4).await?;
        upload.write(&buf[..n]);
    }
    upload.finish().await?;
    let stored = store.head(object).await?.size;
    anyhow::ensure!(
        stored == size,
        "the stored object has {stored} bytes, the file {size}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_to_the_object() {
        assert_eq!(clamp(None, 10), Some(0..10));
        assert_eq!(clamp(Some((2, Some(4))), 10), Some(2..5));
        assert_eq!(clamp(Some((2, None)), 10), Some(2..10));
        assert_eq!(clamp(Some((2, Some(99))), 10), Some(2..10));
        assert_eq!(clamp(Some((10, None)), 10), None);
        assert_eq!(clamp(None, 0), None);
    }

    #[tokio::test]
    async fn a_local_recording_reads_back_whole_and_by_range() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("quad-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("x.webm"), b"0123456789")?;
        let archive = Archive::new(dir.clone(), None)?;
        assert_eq!(archive.keep("x").await, (Location::Local, None));
        let read = |r| {
            let archive = &archive;
            async move {
                let opened = archive
                    .open("x", Location::Local, |_| r)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("missing"))?;
                let chunks: Vec<_> = opened.body.collect().await;
                let mut bytes = Vec::new();
                for c in chunks {
                    bytes.extend_from_slice(&c?);
                }
                anyhow::Ok((opened.range, bytes))
            }
        };
        assert_eq!(read(None).await?, (0..10, b"0123456789".to_vec()));
        assert_eq!(read(Some((3, Some(5)))).await?, (3..6, b"345".to_vec()));
        assert!(
            archive
                .open("y", Location::Local, |_| None)
                .await?
                .is_none()
        );
        archive.delete("x").await;
        assert!(!dir.join("x.webm").exists());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
