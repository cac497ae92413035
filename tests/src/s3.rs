//! A real S3-compatible server for tests: `s3s-fs` (the s3s project's file-system backend,
//! from crates.io) in this process, on `127.0.0.1:0`, with one bucket in a temporary
//! folder and access keys. It can refuse the first few writes with 503, as a busy or
//! restarting service would, to prove that uploads are retried.

use anyhow::Result;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub const ACCESS_KEY: &str = "quad-test-access";
pub const SECRET_KEY: &str = "quad-test-secret-key";

/// The running server; stopped when dropped.
pub struct S3Server {
    pub addr: SocketAddr,
    /// The folder holding its buckets (a bucket is a folder, an object a file).
    pub root: PathBuf,
    pub bucket: String,
    /// Writes (PUT and POST) refused so far.
    pub refused_writes: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Starts it with `bucket`, refusing the first `refuse_writes` writes with 503.
    pub async fn start(bucket: &str, refuse_writes: u32) -> Result<S3Server> {
        let root = crate::temp_dir("s3");
        std::fs::create_dir_all(root.join(bucket))?;
        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| anyhow::anyhow!("the S3 server's folder: {e:?}"))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(AtomicU32::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    break;
                };
                let (service, counter) = (service.clone(), counter.clone());
                let handler = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (service, counter) = (service.clone(), counter.clone());
                        async move {
                            let write =
                                matches!(*req.method(), hyper::Method::PUT | hyper::Method::POST);
                            if write
                                && counter
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                        (n < refuse_writes).then_some(n + 1)
                                    })
                                    .is_ok()
                            {
                                let mut res = hyper::Response::new(s3s::Body::empty());
                                *res.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok(res);
                            }
                            hyper::service::Service::call(&service, req).await
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), handler)
                    .await;
                });
            }
        });
        Ok(S3Server {
            addr,
            root,
            bucket: bucket.to_owned(),
            refused_writes: refused,
            task,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the bucket, as any S3 tool would be.
    pub fn client(&self) -> Result<object_store::aws::AmazonS3> {
        Ok(object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()?)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
