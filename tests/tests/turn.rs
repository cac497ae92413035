//! The embedded STUN/TURN server, as a TURN client uses it: `Welcome` offers it with
//! credentials; those credentials allocate a relay over UDP and over TCP and the relay
//! carries data; a forged password, an expired user name and junk on the TCP port are
//! refused while the server goes on serving.

use quad_server::turn::credentials;
use quad_shared::protocol::IceServer;
use quad_tests::turn_client::TcpClientConn;
use quad_tests::{Bot, TestServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const SECRET: &str = "test-secret-0123456789";

async fn server() -> anyhow::Result<(TestServer, SocketAddr)> {
    let server = TestServer::start_with(|c| c.turn_secret = Some(SECRET.into())).await?;
    let turn = server
        .server
        .turn_addr()
        .ok_or_else(|| anyhow::anyhow!("no embedded TURN server"))?;
    Ok((server, turn))
}

async fn client(
    conn: Arc<dyn Conn + Send + Sync>,
    turn: SocketAddr,
    username: &str,
    password: &str,
) -> anyhow::Result<Client> {
    let client = Client::new(ClientConfig {
        stun_serv_addr: turn.to_string(),
        turn_serv_addr: turn.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "quad".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await?;
    client.listen().await?;
    Ok(client)
}

/// Allocates a relay, sends through it to a plain UDP socket, and checks that the datagram
/// arrives from the relay's address.
async fn relay_round_trip(client: &Client, turn: SocketAddr) -> anyhow::Result<()> {
    let relay = tokio::time::timeout(Duration::from_secs(5), client.allocate()).await??;
    let relayed = relay.local_addr()?;
    assert_eq!(
        relayed.ip(),
        turn.ip(),
        "relay not on the TURN server's address"
    );
    let peer = UdpSocket::bind("127.0.0.1:0").await?;
    relay
        .send_to(b"through the relay", peer.local_addr()?)
        .await?;
    let mut buf = [0u8; 64];
    let (n, from) =
        tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"through the relay");
    assert_eq!(from, relayed);
    relay.close().await?;
    Ok(())
}

/// Connects a TURN client over `conn` with these credentials, relays one datagram through
/// a fresh allocation, and closes.
async fn relays(
    conn: Arc<dyn Conn + Send + Sync>,
    turn: SocketAddr,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    let c = client(conn, turn, username, password).await?;
    relay_round_trip(&c, turn).await?;
    c.close().await?;
    Ok(())
}

fn turn_credentials(servers: &[IceServer]) -> (String, String) {
    let turn = servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .expect("a TURN entry");
    (
        turn.username.clone().expect("a user name"),
        turn.credential.clone().expect("a password"),
    )
}

#[tokio::test]
async fn welcome_offers_the_embedded_server_with_working_credentials() -> anyhow::Result<()> {
    let (server, turn) = server().await?;
    let bot = Bot::join(server.addr(), "Ada", None).await?;
    let servers = bot.welcome.as_ref().map(|w| w.ice_servers.clone());
    let servers = servers.unwrap_or_default();
    let host = format!("{}:{}", turn.ip(), turn.port());
    let urls: Vec<&str> = servers
        .iter()
        .flat_map(|s| s.urls.iter().map(String::as_str))
        .collect();
    assert!(urls.contains(&format!("stun:{host}").as_str()), "{urls:?}");
    assert!(
        urls.contains(&format!("turn:{host}?transport=udp").as_str()),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("turn:{host}?transport=tcp").as_str()),
        "{urls:?}"
    );
    let (username, password) = turn_credentials(&servers);
    // `expiry:user`, valid for about the configured day.
    let expiry: u64 = username.split(':').next().unwrap_or_default().parse()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    assert!(
        (now + 23 * 3600..=now + 25 * 3600).contains(&expiry),
        "{username}"
    );
    assert_eq!(password, credentials::password(SECRET, &username));

    // Over UDP.
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let c = client(udp, turn, &username, &password).await?;
    let mapped = c.send_binding_request().await?;
    assert_eq!(
        mapped.ip(),
        turn.ip(),
        "STUN binding answers with our address"
    );
    relay_round_trip(&c, turn).await?;
    c.close().await?;

    // Over TCP, on the same port.
    let tcp = Arc::new(TcpClientConn::connect(turn).await?);
    relays(tcp, turn, &username, &password).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn forged_and_expired_credentials_are_refused() -> anyhow::Result<()> {
    let (server, turn) = server().await?;
    let now = SystemTime::now();
    let (username, _) = credentials::issue(SECRET, "eve", Duration::from_secs(600), now);
    let wrong = credentials::password("not-the-secret-at-all", &username);
    let (expired, expired_pass) = credentials::issue(
        SECRET,
        "eve",
        Duration::from_secs(60),
        now - Duration::from_secs(3600),
    );
    for (user, pass, what) in [
        (username.as_str(), wrong.as_str(), "a forged password"),
        (
            expired.as_str(),
            expired_pass.as_str(),
            "an expired user name",
        ),
        ("eve", "anything", "a user name without an expiry"),
    ] {
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let c = client(udp, turn, user, pass).await?;
        let allocated = tokio::time::timeout(Duration::from_secs(10), c.allocate()).await?;
        assert!(allocated.is_err(), "{what} got a relay");
        c.close().await?;
    }
    // The server still relays for good credentials.
    let (good_user, good_pass) = credentials::issue(SECRET, "ada", Duration::from_secs(600), now);
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    relays(udp, turn, &good_user, &good_pass).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn junk_on_the_tcp_port_is_cut_off_and_others_are_served() -> anyhow::Result<()> {
    let (server, turn) = server().await?;
    let mut junk = TcpStream::connect(turn).await?;
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf)).await??;
    assert_eq!(n, 0, "the server should hang up on a non-TURN client");

    let (user, pass) =
        credentials::issue(SECRET, "ada", Duration::from_secs(600), SystemTime::now());
    let tcp = Arc::new(TcpClientConn::connect(turn).await?);
    relays(tcp, turn, &user, &pass).await?;
    server.stop().await;
    Ok(())
}
