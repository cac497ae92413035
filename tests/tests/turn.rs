//! The embedded STUN/TURN server, as a TURN client uses it: `Welcome` offers it with
//! credentials; those credentials allocate a relay over UDP and over TCP and the relay
//! carries data; a forged password, an expired user name and junk on the TCP port are
//! refused while the server goes on serving.
//!
//! And as a hostile client would use it: relays to loopback, private and the server's own
//! addresses are refused; an ended session's credentials and relays stop working; a
//! session's relays, TURN/TCP connections from one address and unauthenticated requests
//! are bounded.
//!
//! The relays' peers here listen on 127.0.0.2, which the tests' servers allow
//! (`allowed_peer_ranges`): by default loopback is refused, and 127.0.0.1 is the server's
//! own address.

use quad_server::turn::credentials;
use quad_tests::turn_client::{TcpClientConn, client, turn_credentials};
use quad_tests::{Bot, TestServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::client::Client;
use webrtc_util::Conn;

const SECRET: &str = "test-secret-0123456789";

/// Where the relays' peers listen: allowed by [`server`], loopback but not the server's.
const PEER_IP: &str = "127.0.0.2";

async fn server() -> anyhow::Result<(TestServer, SocketAddr)> {
    server_with(|_| {}).await
}

async fn server_with(
    tweak: impl FnOnce(&mut quad_server::Config),
) -> anyhow::Result<(TestServer, SocketAddr)> {
    let server = TestServer::start_with(|c| {
        c.turn_secret = Some(SECRET.into());
        c.allowed_peer_ranges = vec![PEER_IP.into()];
        tweak(c);
    })
    .await?;
    let turn = server
        .server
        .turn_addr()
        .ok_or_else(|| anyhow::anyhow!("no embedded TURN server"))?;
    Ok((server, turn))
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
    let peer = UdpSocket::bind((PEER_IP, 0)).await?;
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
    let (username, password) = turn_credentials(&servers)?;
    // `expiry:user`, valid for about the configured day.
    let expiry: u64 = username.split(':').next().unwrap_or_default().parse()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    // Short-lived: ten minutes by default, renewed over the WebSocket.
    assert!((now + 500..=now + 700).contains(&expiry), "{username}");
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

/// A fresh UDP TURN client with `Welcome`-style credentials for `user`.
async fn udp_client(turn: SocketAddr, user: &str) -> anyhow::Result<Client> {
    let (name, pass) =
        credentials::issue(SECRET, user, Duration::from_secs(600), SystemTime::now());
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    client(udp, turn, &name, &pass).await
}

/// Whether `service` receives anything within `wait` (a refused relay sends nothing).
async fn hears_anything(service: &UdpSocket, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(wait, service.recv_from(&mut buf))
        .await
        .is_ok()
}

#[tokio::test]
async fn relays_to_loopback_private_and_the_servers_own_ports_are_refused() -> anyhow::Result<()> {
    // The default policy: nothing but public addresses.
    let (server, turn) = server_with(|c| c.allowed_peer_ranges.clear()).await?;
    let c = udp_client(turn, "avatar1").await?;
    let relay = tokio::time::timeout(Duration::from_secs(5), c.allocate()).await??;
    let service = UdpSocket::bind("127.0.0.1:0").await?;
    let other_loopback = UdpSocket::bind((PEER_IP, 0)).await?;
    for target in [
        service.local_addr()?,
        other_loopback.local_addr()?,
        "10.1.2.3:53".parse()?,
        "192.168.0.1:53".parse()?,
        "169.254.169.254:80".parse()?,
        turn,
        server.addr(),
    ] {
        assert!(
            relay.send_to(b"probe", target).await.is_err(),
            "a permission for {target} was granted"
        );
    }
    assert!(!hears_anything(&service, Duration::from_millis(300)).await);
    assert!(!hears_anything(&other_loopback, Duration::from_millis(300)).await);
    relay.close().await?;
    c.close().await?;
    server.stop().await;

    // An operator's range opens itself, never the server's own address.
    let (server, turn) =
        server_with(|c| c.allowed_peer_ranges = vec!["127.0.0.0/8".into()]).await?;
    let c = udp_client(turn, "avatar1").await?;
    let relay = tokio::time::timeout(Duration::from_secs(5), c.allocate()).await??;
    assert!(relay.send_to(b"nested", turn).await.is_err(), "TURN port");
    assert!(
        relay
            .send_to(b"probe", service.local_addr()?)
            .await
            .is_err()
    );
    relay
        .send_to(b"allowed", other_loopback.local_addr()?)
        .await?;
    assert!(hears_anything(&other_loopback, Duration::from_secs(5)).await);
    assert!(!hears_anything(&service, Duration::from_millis(300)).await);
    relay.close().await?;
    c.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn two_relays_of_the_server_reach_each_other() -> anyhow::Result<()> {
    // Two browsers that both relay: each relay's peer is the other relay, on the server's
    // own address. That stays allowed, since the traffic never leaves the TURN server.
    let (server, turn) = server_with(|c| c.allowed_peer_ranges.clear()).await?;
    let (a, b) = (
        udp_client(turn, "avatar1").await?,
        udp_client(turn, "avatar2").await?,
    );
    let ra = tokio::time::timeout(Duration::from_secs(5), a.allocate()).await??;
    let rb = tokio::time::timeout(Duration::from_secs(5), b.allocate()).await??;
    // b lets a's relay in, then a sends to b's relay.
    rb.send_to(b"hello a", ra.local_addr()?).await?;
    ra.send_to(b"hello b", rb.local_addr()?).await?;
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), rb.recv_from(&mut buf)).await??;
    assert_eq!((&buf[..n], from), (&b"hello b"[..], ra.local_addr()?));
    for c in [ra, rb] {
        c.close().await?;
    }
    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_ended_sessions_credentials_and_relays_stop_working() -> anyhow::Result<()> {
    let (server, turn) = server().await?;
    let mut bot = Bot::join(server.addr(), "Eve", None).await?;
    let servers = bot.welcome.as_ref().map(|w| w.ice_servers.clone());
    let (user, pass) = turn_credentials(&servers.unwrap_or_default())?;
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let c = client(udp, turn, &user, &pass).await?;
    let relay = tokio::time::timeout(Duration::from_secs(5), c.allocate()).await??;
    let peer = UdpSocket::bind((PEER_IP, 0)).await?;
    relay
        .send_to(b"while in session", peer.local_addr()?)
        .await?;
    assert!(hears_anything(&peer, Duration::from_secs(5)).await);

    bot.close().await;
    // The session's end deletes its relay: a datagram from the peer no longer comes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let other = client(
        Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
        turn,
        &user,
        &pass,
    )
    .await?;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), other.allocate()).await?;
        match attempt {
            Err(_) => break,
            Ok(extra) => {
                // The session's end had not been handled yet: give that relay back, retry.
                extra.close().await?;
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "an ended session's credentials still allocate relays"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    peer.send_to(b"after the end", relay.local_addr()?).await?;
    let mut buf = [0u8; 64];
    let late = tokio::time::timeout(Duration::from_millis(500), relay.recv_from(&mut buf)).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "the ended session's relay still carries data"
    );
    other.close().await?;
    c.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn relays_are_bound_inside_the_configured_port_range() -> anyhow::Result<()> {
    // Two ports a firewall would open; any other test's relays on this machine may take
    // one of them, so the test finds a free pair first.
    let base = loop {
        let probe = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?.port();
        if probe < 65000
            && std::net::UdpSocket::bind(("127.0.0.1", probe + 1)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", probe + 2)).is_ok()
        {
            break probe + 1;
        }
    };
    let range = base..=base + 1;
    let (server, turn) =
        server_with(|c| c.turn_relay_ports = format!("{}-{}", base, base + 1)).await?;
    let (a, b) = (
        udp_client(turn, "avatar1").await?,
        udp_client(turn, "avatar2").await?,
    );
    let first = tokio::time::timeout(Duration::from_secs(5), a.allocate()).await??;
    let second = tokio::time::timeout(Duration::from_secs(5), b.allocate()).await??;
    let ports = [first.local_addr()?.port(), second.local_addr()?.port()];
    assert!(
        ports.iter().all(|p| range.contains(p)),
        "{ports:?} outside {range:?}"
    );
    assert_ne!(ports[0], ports[1]);

    // The range is full: a third relay is refused, not bound elsewhere.
    let c = udp_client(turn, "avatar3").await?;
    let third = tokio::time::timeout(Duration::from_secs(5), c.allocate()).await?;
    assert!(
        third.is_err(),
        "a relay outside the range: {:?}",
        third.map(|r| r.local_addr())
    );

    // A freed port is used again.
    first.close().await?;
    a.close().await?;
    let d = udp_client(turn, "avatar4").await?;
    let start = std::time::Instant::now();
    let again = loop {
        match tokio::time::timeout(Duration::from_secs(5), d.allocate()).await? {
            Ok(relay) => break relay,
            // The server frees the port when it has handled the close.
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert!(range.contains(&again.local_addr()?.port()));
    relay_round_trip_on(&again).await?;
    for r in [second, again] {
        r.close().await?;
    }
    for c in [b, c, d] {
        c.close().await?;
    }
    server.stop().await;
    Ok(())
}

/// Sends through an allocated relay to a plain UDP socket and checks it arrives.
async fn relay_round_trip_on(relay: &impl Conn) -> anyhow::Result<()> {
    let peer = UdpSocket::bind((PEER_IP, 0)).await?;
    relay.send_to(b"in range", peer.local_addr()?).await?;
    let mut buf = [0u8; 64];
    let (n, from) =
        tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"in range");
    assert_eq!(from, relay.local_addr()?);
    Ok(())
}

#[tokio::test]
async fn a_session_holds_at_most_its_quota_of_relays() -> anyhow::Result<()> {
    let (server, turn) = server_with(|c| c.turn_relays_per_session = 3).await?;
    let mut clients = Vec::new();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let c = udp_client(turn, "avatar9").await?;
        relays.push(tokio::time::timeout(Duration::from_secs(5), c.allocate()).await??);
        clients.push(c);
    }
    let fourth = udp_client(turn, "avatar9").await?;
    let refused = tokio::time::timeout(Duration::from_secs(5), fourth.allocate()).await?;
    assert!(refused.is_err(), "a fourth relay was allocated");
    // Another session is not affected.
    let other = udp_client(turn, "avatar10").await?;
    let theirs = tokio::time::timeout(Duration::from_secs(5), other.allocate()).await??;
    let (_, page) = quad_tests::http_get(server.addr(), "/metrics").await?;
    assert_eq!(
        quad_tests::metric(&page, "quad_turn_relays"),
        Some(4.0),
        "{page}"
    );
    // Giving one back makes room again.
    if let Some(r) = relays.pop() {
        r.close().await?;
    }
    let again = udp_client(turn, "avatar9").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        match tokio::time::timeout(Duration::from_secs(5), again.allocate()).await? {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() > deadline => {
                anyhow::bail!("no relay after one was given back: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for r in relays.into_iter().chain([theirs, fresh]) {
        r.close().await?;
    }
    for c in clients.into_iter().chain([fourth, other, again]) {
        c.close().await?;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn tcp_connections_are_bounded_per_address_and_in_time() -> anyhow::Result<()> {
    let (server, turn) = server_with(|c| {
        c.turn_tcp_per_ip = 3;
        c.turn_tcp_first_frame_secs = 1;
    })
    .await?;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(turn).await?);
    }
    // The fourth from this address is closed at once.
    let mut extra = TcpStream::connect(turn).await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await??;
    assert_eq!(n, 0, "a fourth connection from one address was kept");
    // The idle ones are closed once their first frame is overdue.
    for s in &mut idle {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        assert_eq!(
            n, 0,
            "an idle connection was kept past the first-frame timeout"
        );
    }
    // Then TURN over TCP works again, also after an allocation has ended (which once
    // closed the whole TCP listener).
    for _ in 0..2 {
        let (user, pass) =
            credentials::issue(SECRET, "ada", Duration::from_secs(600), SystemTime::now());
        let tcp = Arc::new(TcpClientConn::connect(turn).await?);
        relays(tcp, turn, &user, &pass).await?;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn unauthenticated_requests_from_one_source_are_metered() -> anyhow::Result<()> {
    use stun::agent::TransactionId;
    use stun::message::{CLASS_REQUEST, METHOD_ALLOCATE, Message, MessageType};
    let (server, turn) = server().await?;
    let flood = UdpSocket::bind("127.0.0.1:0").await?;
    // Each request without a nonce would make the server remember a new one for an hour.
    for _ in 0..400 {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        ])?;
        flood.send_to(&m.raw, turn).await?;
    }
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), flood.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    println!("unauthenticated Allocate requests answered: {answered} of 400");
    // 60 at once from one source, then 5 a second.
    assert!((1..=80).contains(&answered), "{answered} of 400 answered");
    // Someone else is still served.
    let (user, pass) =
        credentials::issue(SECRET, "ada", Duration::from_secs(600), SystemTime::now());
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    relays(udp, turn, &user, &pass).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_live_session_gets_fresh_credentials_before_its_last_ones_expire() -> anyhow::Result<()> {
    let (server, turn) = server_with(|c| c.turn_credential_ttl_secs = 10).await?;
    let mut bot = Bot::join(server.addr(), "Ada", None).await?;
    let first = bot.welcome.as_ref().map(|w| w.ice_servers.clone());
    let (first_user, _) = turn_credentials(&first.unwrap_or_default())?;
    // Renewed at half the lifetime: about 5 s.
    bot.wait_until(Duration::from_secs(9), |b| !b.ice_renewals.is_empty())
        .await?;
    let (user, pass) = turn_credentials(&bot.ice_renewals[0])?;
    let expiry = |u: &str| u.split(':').next().and_then(|e| e.parse::<u64>().ok());
    assert!(
        expiry(&user) > expiry(&first_user),
        "{user} after {first_user}"
    );
    // The fresh ones allocate relays.
    relays(
        Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
        turn,
        &user,
        &pass,
    )
    .await?;
    server.stop().await;
    Ok(())
}
