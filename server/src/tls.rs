//! TLS for the web port: where the certificate comes from, and keeping it current.
//!
//! - [`CertSource::Files`]: PEM files (`tls_cert`, `tls_key`), as certbot and most CAs
//!   write them. They are read at start (a bad pair stops the server with the file's name)
//!   and looked at again every [`RELOAD_CHECK`]: when either file changed, the new pair is
//!   loaded and used for every new connection, without a restart. A pair that does not
//!   load (a renewal half written, a key that does not match) is logged and the old one
//!   is kept.
//! - [`CertSource::SelfSigned`]: a certificate for a trial on a LAN, made at the first
//!   start for the listen address and the configured host names (`rcgen`), kept in the
//!   data directory (the key private, 0600) and used again on later starts while it still
//!   covers those names.
//!
//! [`Tls`] is what the accept loop uses: a rustls acceptor (TLS 1.2 and 1.3, `ring`)
//! whose certificate resolver reads the current pair, and the fingerprints people and
//! browsers check a self-signed certificate by. What arrives on the port (TLS or plain
//! HTTP, then HTTP or TURN inside TLS) is told apart by [`crate::http::sniff`].

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The self-signed certificate's files, in the data directory.
pub const SELF_SIGNED_CERT: &str = "tls-self-signed-cert.pem";
pub const SELF_SIGNED_KEY: &str = "tls-self-signed-key.pem";

/// Where the certificate comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

/// The TLS side of the web port.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The server configuration behind the acceptor (shared with TURN over TLS).
    pub config: Arc<rustls::ServerConfig>,
    current: Arc<Current>,
}

impl Tls {
    /// Loads (or makes) the certificate; with files, starts watching them until `stop`.
    pub fn start(source: &CertSource, stop: CancellationToken) -> anyhow::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, files) = match source {
            CertSource::Files { cert, key } => {
                let pair = load_pair(cert, key, &provider)?;
                (pair, Some((cert.clone(), key.clone())))
            }
            CertSource::SelfSigned { dir, names } => (self_signed(dir, names, &provider)?, None),
        };
        let current = Arc::new(Current {
            key: RwLock::new(Arc::new(key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS: the crypto provider supports no protocol version")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // Browsers ask for HTTP/1.1 (or h2, which is not offered); TURN clients may ask for
        // `stun.turn` (RFC 7443). Either is served on this port.
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"stun.turn".to_vec()];
        let config = Arc::new(config);
        if let Some((cert, key)) = files {
            tokio::spawn(watch(cert, key, provider, current.clone(), stop));
        }
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(config.clone()),
            config,
            current,
        })
    }

    /// The certificate served now.
    pub fn certificate(&self) -> CertificateDer<'static> {
        let key = self.current.get();
        // `load_pair` and `self_signed` never make a pair without a certificate.
        key.cert
            .first()
            .cloned()
            .unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }

    /// SHA-256 of the certificate, as browsers show it (`AB:CD:...`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certificate())
    }

    /// Base64 SHA-256 of the certificate's public key, the form Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub fn spki_hash(&self) -> Option<String> {
        let key = self.current.get();
        let spki = key.key.public_key()?;
        use base64::Engine;
        Some(base64::engine::general_purpose::STANDARD.encode(sha256(spki.as_ref())))
    }
}

/// `AB:CD:...` SHA-256 of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> String {
    sha256(cert)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// The pair in use; swapped whole when the files change.
#[derive(Debug)]
struct Current {
    key: RwLock<Arc<CertifiedKey>>,
}

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        // Only whole `Arc`s are stored under the lock: a panic cannot leave it torn.
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Reads a PEM certificate chain and its key, and checks that they belong together.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls_cert {}: cannot read it", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls_cert {}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("tls_cert {}: no certificate in the file", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls_key {}: no PEM private key in it", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "tls_key {} does not fit tls_cert {} (or its kind of key is not supported)",
            key.display(),
            cert.display()
        )
    })
}

/// What identifies a file's version without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Loads the pair again whenever either file changes, until `stop`.
async fn watch(
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    stop: CancellationToken,
) {
    let mut seen = (stamp(&cert), stamp(&key));
    let mut ticks = tokio::time::interval(RELOAD_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = (stamp(&cert), stamp(&key));
        if now == seen {
            continue;
        }
        seen = now;
        match load_pair(&cert, &key, &provider) {
            Ok(pair) => {
                let print = pair
                    .cert
                    .first()
                    .map(|c| fingerprint(c))
                    .unwrap_or_default();
                current.set(pair);
                tracing::info!(
                    "TLS certificate reloaded from {}: SHA-256 {print}",
                    cert.display()
                );
            }
            // Tried again at the next change of either file (a renewal writes both).
            Err(e) => tracing::warn!("TLS certificate not reloaded, the old one stays: {e:#}"),
        }
    }
}

/// The self-signed pair in `dir`, made (again) when missing or when it does not cover
/// `names`.
fn self_signed(
    dir: &Path,
    names: &[String],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let (cert_path, key_path) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
    if cert_path.is_file() && key_path.is_file() {
        match load_pair(&cert_path, &key_path, provider) {
            Ok(pair) if covers(&pair, names) => return Ok(pair),
            Ok(_) => tracing::info!(
                "the self-signed certificate does not cover {}: making a new one",
                names.join(", ")
            ),
            Err(e) => {
                tracing::warn!("the self-signed certificate is unusable ({e:#}): making a new one")
            }
        }
    }
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .context("cannot make a self-signed certificate")?;
    // Made 0600 before the key is written into it.
    let _ = std::fs::remove_file(&key_path);
    crate::store::private::create_private_file(&key_path)?;
    std::fs::write(&key_path, made.signing_key.serialize_pem())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&cert_path, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    load_pair(&cert_path, &key_path, provider)
}

/// Whether a certificate is valid for every one of `names` (DNS names and IP
/// addresses), as a browser would check it.
fn covers(pair: &CertifiedKey, names: &[String]) -> bool {
    let Some(Ok(cert)) = pair.cert.first().map(webpki::EndEntityCert::try_from) else {
        return false;
    };
    names.iter().all(|name| {
        rustls_pki_types::ServerName::try_from(name.as_str())
            .is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "quad-tls-{label}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_pair(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, String) {
        let made = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key, fingerprint(made.cert.der()))
    }

    #[test]
    fn a_pair_loads_and_a_mismatched_or_broken_one_is_refused_by_name() {
        let provider = rustls::crypto::ring::default_provider();
        let dir = temp("pairs");
        let (cert, key, print) = write_pair(&dir, &["campus.example"]);
        let pair = load_pair(&cert, &key, &provider).unwrap();
        assert_eq!(fingerprint(&pair.cert[0]), print);

        // Another certificate's key does not fit.
        let other = temp("other");
        let (_, other_key, _) = write_pair(&other, &["campus.example"]);
        let err = format!("{:#}", load_pair(&cert, &other_key, &provider).unwrap_err());
        assert!(err.contains("does not fit"), "{err}");

        std::fs::write(&cert, "not a certificate").unwrap();
        let err = format!("{:#}", load_pair(&cert, &key, &provider).unwrap_err());
        assert!(
            err.contains("tls_cert") && err.contains("no certificate"),
            "{err}"
        );
        let missing = dir.join("missing.pem");
        let err = format!("{:#}", load_pair(&missing, &key, &provider).unwrap_err());
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[test]
    fn the_self_signed_certificate_is_kept_and_made_again_for_new_names() {
        let provider = rustls::crypto::ring::default_provider();
        let dir = temp("self");
        let names = vec!["10.1.2.3".to_string(), "campus.lan".to_string()];
        let first = self_signed(&dir, &names, &provider).unwrap();
        assert!(covers(&first, &names));
        let again = self_signed(&dir, &names, &provider).unwrap();
        assert_eq!(first.cert[0], again.cert[0], "kept between starts");
        let more = vec!["campus.lan".to_string(), "quad.lan".to_string()];
        let renamed = self_signed(&dir, &more, &provider).unwrap();
        assert_ne!(first.cert[0], renamed.cert[0]);
        assert!(covers(&renamed, &more));
    }
}
