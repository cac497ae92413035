//! TLS clients for tests: connections to a Quad server's HTTPS port that trust exactly
//! one certificate (the server's self-signed one, or one a test made), an HTTPS GET that
//! returns the response's head, and a WebSocket session over TLS.

use anyhow::{Context, Result, anyhow};
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const PATIENCE: Duration = Duration::from_secs(10);

/// A TLS connection to `addr` that accepts only `trust` (for the name `name`).
pub async fn connect(
    addr: SocketAddr,
    trust: &CertificateDer<'static>,
    name: &str,
) -> Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned())?;
    Ok(tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??)
}

/// The certificate the server presented on `stream`.
pub fn served_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    let (_, session) = stream.get_ref();
    session.peer_certificates()?.first().cloned()
}

/// The first certificate of a PEM file.
pub fn pem_certificate(path: &std::path::Path) -> Result<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)?
        .next()
        .ok_or_else(|| anyhow!("no certificate in {}", path.display()))?
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// A response's status, its head (lowercased header lines) and its body.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(&name)).then(|| v.trim())
        })
    }
}

/// A GET over any stream (plain TCP or TLS), `Connection: close`.
pub async fn get_over(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: &str,
    path: &str,
) -> Result<Response> {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    // A TLS peer may end without close_notify after `Connection: close`: what was read counts.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    Ok(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}
