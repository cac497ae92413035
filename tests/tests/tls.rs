//! HTTPS on the web port: a CA-issued chain presented whole, a self-signed certificate
//! made once and kept, certificate files reloaded when they change, plain HTTP redirected,
//! HSTS, sessions over `wss://`, and TURN over TLS on the same port (what a network that
//! lets only that port out needs).

use quad_server::turn::credentials;
use quad_tests::tls_client::{connect, get_over, pem_certificate, served_certificate};
use quad_tests::turn_client::{TcpClientConn, client, turn_credentials};
use quad_tests::{Bot, TestServer, temp_dir};
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpStream, UdpSocket};
use webrtc_util::Conn;

fn make_pair(dir: &Path, label: &str) -> anyhow::Result<(CertificateDer<'static>, String)> {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    std::fs::write(dir.join(format!("{label}-cert.pem")), made.cert.pem())?;
    std::fs::write(
        dir.join(format!("{label}-key.pem")),
        made.signing_key.serialize_pem(),
    )?;
    Ok((made.cert.der().clone(), made.signing_key.serialize_pem()))
}

/// Installs `label`'s pair as the served files, the way a renewal does: written aside,
/// then renamed over the old ones.
fn install(dir: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
    std::fs::copy(
        dir.join(format!("{cert}-cert.pem")),
        dir.join("next-cert.pem"),
    )?;
    std::fs::copy(dir.join(format!("{key}-key.pem")), dir.join("next-key.pem"))?;
    std::fs::rename(dir.join("next-cert.pem"), dir.join("cert.pem"))?;
    std::fs::rename(dir.join("next-key.pem"), dir.join("key.pem"))?;
    Ok(())
}

async fn served(
    addr: SocketAddr,
    trust: &CertificateDer<'static>,
) -> Option<CertificateDer<'static>> {
    let stream = connect(addr, trust, "127.0.0.1").await.ok()?;
    served_certificate(&stream)
}

#[tokio::test]
async fn a_self_signed_campus_serves_https_redirects_http_and_keeps_its_certificate()
-> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.tls_self_signed = true).await?;
    let addr = server.addr();
    let cert = pem_certificate(&server.data_dir.join(quad_server::tls::SELF_SIGNED_CERT))?;
    let tls = server.server.tls().expect("TLS is on");
    assert_eq!(tls.fingerprint(), quad_server::tls::fingerprint(&cert));
    assert!(
        tls.spki_hash().is_some_and(|h| h.len() == 44),
        "base64 of 32 bytes"
    );

    // HTTPS: the page and /healthz, with HSTS and the security headers.
    let res = get_over(
        connect(addr, &cert, "127.0.0.1").await?,
        &addr.to_string(),
        "/healthz",
    )
    .await?;
    assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    assert_eq!(
        res.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert!(res.header("content-security-policy").is_some());
    let page = get_over(
        connect(addr, &cert, "127.0.0.1").await?,
        &addr.to_string(),
        "/",
    )
    .await?;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("lobby-insecure"),
        "the page carries its http warning"
    );

    // Plain HTTP on the same port: sent to the same place over HTTPS, without HSTS.
    let plain = get_over(
        TcpStream::connect(addr).await?,
        &addr.to_string(),
        "/?room=Library",
    )
    .await?;
    assert_eq!(plain.status, 308, "{}", plain.head);
    let location = format!("https://{addr}/?room=Library");
    assert_eq!(plain.header("location"), Some(location.as_str()));
    assert_eq!(plain.header("strict-transport-security"), None);

    // A session over wss://, offered TURN over TLS on this very port.
    let bot = Bot::join_tls(addr, &cert, "Ada").await?;
    let urls: Vec<String> = bot
        .welcome
        .as_ref()
        .map(|w| w.ice_servers.iter().flat_map(|s| s.urls.clone()).collect())
        .unwrap_or_default();
    let turns = format!("turns:127.0.0.1:{}?transport=tcp", addr.port());
    assert!(urls.contains(&turns), "{urls:?}");

    // The certificate is kept for the next start on the same data directory.
    let print = tls.fingerprint();
    let data = server.stop_keeping_data().await;
    let again = TestServer::start_in(data, |c| c.tls_self_signed = true).await?;
    assert_eq!(again.server.tls().map(|t| t.fingerprint()), Some(print));
    again.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() -> anyhow::Result<()> {
    let dir = temp_dir("tls-files");
    std::fs::create_dir_all(&dir)?;
    let (first, _) = make_pair(&dir, "first")?;
    let (second, _) = make_pair(&dir, "second")?;
    install(&dir, "first", "first")?;
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
    })
    .await?;
    let addr = server.addr();
    assert_eq!(served(addr, &first).await, Some(first.clone()));

    // A renewal caught half way (the new certificate, the old key) is not used: the old
    // pair goes on serving. Two checks of the files pass first.
    install(&dir, "second", "first")?;
    tokio::time::sleep(quad_server::tls::RELOAD_CHECK * 2 + Duration::from_secs(1)).await;
    assert_eq!(
        served(addr, &first).await,
        Some(first.clone()),
        "the old pair stays"
    );

    // With its key, the new certificate is served to new connections.
    install(&dir, "second", "second")?;
    let start = Instant::now();
    loop {
        if served(addr, &second).await == Some(second.clone()) {
            break;
        }
        assert!(
            start.elapsed() < quad_server::tls::RELOAD_CHECK * 4,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn turn_over_tls_on_the_web_port_relays() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.tls_self_signed = true;
        // The relay's peer in this test is on another loopback address.
        c.allowed_peer_ranges = vec!["127.0.0.2".into()];
        c.turn_secret = Some("tls-test-secret-long-enough".into());
    })
    .await?;
    let addr = server.addr();
    let cert = pem_certificate(&server.data_dir.join(quad_server::tls::SELF_SIGNED_CERT))?;
    let bot = Bot::join_tls(addr, &cert, "Ada").await?;
    let servers = bot
        .welcome
        .as_ref()
        .map(|w| w.ice_servers.clone())
        .unwrap_or_default();
    let (username, password) = turn_credentials(&servers)?;
    assert_eq!(
        password,
        credentials::password("tls-test-secret-long-enough", &username)
    );

    // TURN over TLS to the web port: allocate, permit a peer, and relay both ways.
    let stream = connect(addr, &cert, "127.0.0.1").await?;
    let local = stream.get_ref().0.local_addr()?;
    let conn = Arc::new(TcpClientConn::over(stream, addr, local));
    let c = client(conn, addr, &username, &password).await?;
    let relay = tokio::time::timeout(Duration::from_secs(5), c.allocate()).await??;
    let peer = UdpSocket::bind("127.0.0.2:0").await?;
    relay.send_to(b"through TLS", peer.local_addr()?).await?;
    let mut buf = [0u8; 64];
    let (n, from) =
        tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"through TLS");
    peer.send_to(b"and back", from).await?;
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"and back");

    // The web port still serves HTTPS beside it.
    let res = get_over(
        connect(addr, &cert, "127.0.0.1").await?,
        &addr.to_string(),
        "/healthz",
    )
    .await?;
    assert_eq!(res.status, 200);
    let _ = relay.close().await;
    let _ = c.close().await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_certificate_settings_stop_the_server_with_the_file_named() -> anyhow::Result<()> {
    let dir = temp_dir("tls-bad");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), "not a certificate")?;
    let (_, key) = make_pair(&dir, "k")?;
    std::fs::write(dir.join("key.pem"), key)?;
    let err = TestServer::start_with(|c| {
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
    })
    .await
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        err.contains("tls_cert") && err.contains("cert.pem"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // A silent TLS client does not hold the port: the handshake has the header timeout.
    let server = TestServer::start_with(|c| {
        c.tls_self_signed = true;
        c.http_header_timeout_secs = 1;
    })
    .await?;
    let mut silent = TcpStream::connect(server.addr()).await?;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut byte),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_plain_http_port_sends_browsers_to_https() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.tls_self_signed = true;
        c.http_redirect_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await?;
    let (web, plain) = (
        server.addr(),
        server.server.redirect_addr().expect("listening"),
    );
    // A bare name typed into a browser (port 80, no port in Host): the same name on the
    // TLS port, path and query kept.
    let res = get_over(
        TcpStream::connect(plain).await?,
        "campus.example.org",
        "/pkg/x.js?v=2",
    )
    .await?;
    assert_eq!(res.status, 308, "{}", res.head);
    let location = format!("https://campus.example.org:{}/pkg/x.js?v=2", web.port());
    assert_eq!(res.header("location"), Some(location.as_str()));
    assert!(res.header("content-security-policy").is_some());
    assert_eq!(res.header("strict-transport-security"), None);
    // The listener serves only redirects: no page, no session, no metrics.
    for path in ["/healthz", "/ws", "/metrics"] {
        let res = get_over(TcpStream::connect(plain).await?, "h", path).await?;
        assert_eq!(res.status, 308, "{path}: {}", res.head);
    }
    server.stop().await;

    // Without TLS there is nothing to redirect to: a clear error names the setting.
    let err = TestServer::start_with(|c| {
        c.http_redirect_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(err.contains("http_redirect_listen"), "{err}");
    Ok(())
}

/// A certificate from a CA, as certbot and most CAs issue one: the leaf signed by an
/// intermediate, both in `tls_cert` (certbot's `fullchain.pem`), the root only in the
/// browser's store. The server presents the whole chain, so a client that trusts only the
/// root accepts it. The same leaf without its intermediate (certbot's `cert.pem`, a common
/// mistake) is refused by that client: the test can tell a chain served from one not.
#[tokio::test]
async fn a_ca_issued_chain_is_served_whole() -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = temp_dir("tls-chain");
    std::fs::create_dir_all(&dir)?;
    let ca = |name: &str| -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ok(params)
    };
    let root = CertifiedIssuer::self_signed(ca("Quad test root")?, KeyPair::generate()?)?;
    let intermediate =
        CertifiedIssuer::signed_by(ca("Quad test intermediate")?, KeyPair::generate()?, &root)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?
        .signed_by(&leaf_key, &intermediate)?;
    std::fs::write(
        dir.join("fullchain.pem"),
        format!("{}{}", leaf.pem(), intermediate.pem()),
    )?;
    std::fs::write(dir.join("cert.pem"), leaf.pem())?;
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem())?;
    let root_der = root.der().clone();

    for (file, whole) in [("fullchain.pem", true), ("cert.pem", false)] {
        let server = TestServer::start_with(|c| {
            c.tls_cert = Some(dir.join(file));
            c.tls_key = Some(dir.join("key.pem"));
        })
        .await?;
        let connected = connect(server.addr(), &root_der, "127.0.0.1").await;
        if whole {
            let stream = connected?;
            let (_, session) = stream.get_ref();
            let presented = session.peer_certificates().map_or(0, <[_]>::len);
            assert_eq!(presented, 2, "the leaf and its intermediate");
            assert_eq!(served_certificate(&stream).as_ref(), Some(leaf.der()));
            let page = get_over(stream, "127.0.0.1", "/").await?;
            assert_eq!(page.status, 200);
        } else {
            let refused = connected.expect_err("a leaf without its intermediate");
            assert!(
                format!("{refused:#}").contains("UnknownIssuer"),
                "refused for its unknown issuer: {refused:#}"
            );
        }
        server.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
