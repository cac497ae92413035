//! STUN and TURN for peer connections, so people on different networks still connect:
//! an embedded STUN/TURN server (the `turn` crate, on UDP and TCP on one port, and with
//! HTTPS on, over TLS on the web port: a `turns:` URL) or external
//! TURN servers, and the per-session ICE server list with time-limited credentials that
//! goes out in `Welcome`.

pub mod credentials;
pub mod gate;
pub mod relays;
pub mod tcp;

use crate::Config;
use anyhow::Context;
use quad_shared::AvatarId;
use quad_shared::protocol::IceServer;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The port of the embedded TURN server when `turn_listen` does not say.
pub const DEFAULT_PORT: u16 = 3478;
const REALM: &str = "quad";

/// What the server tells browsers about STUN and TURN, and the sessions' TURN credentials.
pub struct Ice {
    /// Offered without credentials.
    stun_urls: Vec<String>,
    /// Offered with credentials derived from `secret`.
    turn_urls: Vec<String>,
    secret: String,
    ttl: Duration,
    /// The embedded server, to end a finished session's relays.
    embedded: Option<Embedded>,
}

/// The embedded server's state that outlives a session.
struct Embedded {
    server: Arc<turn::server::Server>,
    ledger: Arc<relays::Ledger>,
    revoked: Arc<credentials::Revocations>,
}

impl Ice {
    /// No STUN or TURN: peers use host candidates only.
    pub fn none() -> Ice {
        Ice {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            secret: String::new(),
            ttl: Duration::ZERO,
            embedded: None,
        }
    }

    /// How often a session's credentials are renewed: at half their lifetime, so the
    /// client always holds ones that are good for new relays. `None` without TURN.
    pub fn renew_every(&self) -> Option<Duration> {
        (!self.turn_urls.is_empty()).then(|| self.ttl / 2)
    }

    /// Ends `user`'s TURN access: its credentials are refused from now on and its relays
    /// on the embedded server are deleted. (An external TURN server honours them until
    /// they expire, which is why they are short-lived.)
    pub async fn revoke(&self, user: AvatarId) {
        let Some(embedded) = &self.embedded else {
            return;
        };
        let name = turn_user(user);
        embedded.revoked.revoke(&name, SystemTime::now() + self.ttl);
        for username in embedded.ledger.usernames_of(&name) {
            if let Err(e) = embedded
                .server
                .delete_allocations_by_username(username)
                .await
            {
                tracing::debug!("TURN relays of {name} not deleted: {e}");
            }
        }
    }

    /// Live relays on the embedded server (for `/metrics`).
    pub fn relays(&self) -> usize {
        self.embedded.as_ref().map_or(0, |e| e.ledger.total())
    }

    /// The ICE servers for one session, with TURN credentials issued to it now.
    pub fn servers_for(&self, user: AvatarId) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn_urls.is_empty() {
            let (username, password) =
                credentials::issue(&self.secret, &turn_user(user), self.ttl, SystemTime::now());
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(username),
                credential: Some(password),
            });
        }
        servers
    }
}

/// The user part of a session's TURN user names.
fn turn_user(user: AvatarId) -> String {
    format!("avatar{}", user.0)
}

/// The embedded STUN/TURN server; it stops when the server's shutdown token is cancelled.
pub struct EmbeddedTurn {
    /// Where it listens (UDP and TCP share the port).
    pub addr: SocketAddr,
    /// The address put in URLs and relay candidates.
    pub public_ip: IpAddr,
    /// TURN over TCP; with TLS on, the web port hands it TURN-over-TLS streams.
    pub tcp: Arc<tcp::TcpTurnConn>,
    /// Where relays may send; the SFU's media port is opened in it once it is bound.
    pub policy: Arc<crate::egress::EgressPolicy>,
}

/// Sets up STUN/TURN as the config says: external servers, the embedded one, or none.
/// `web` is the web port's address: with TLS on, the embedded server is also offered
/// there, as `turns:`.
pub async fn start(
    config: &Config,
    web: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(Ice, Option<EmbeddedTurn>)> {
    let ttl = Duration::from_secs(config.turn_credential_ttl_secs);
    if !config.turn_urls.is_empty() {
        let (stun_urls, turn_urls) = config
            .turn_urls
            .iter()
            .cloned()
            .partition(|u| u.starts_with("stun:"));
        let ice = Ice {
            stun_urls,
            turn_urls,
            // `validate` requires the secret with `turn_urls`.
            secret: config.turn_secret.clone().unwrap_or_default(),
            ttl,
            embedded: None,
        };
        return Ok((ice, None));
    }
    if !config.turn {
        return Ok((Ice::none(), None));
    }
    // By default beside the web server: its IP, port 3478 (or any free port when the web
    // server also asked for one, as tests do).
    let listen = config.turn_listen.unwrap_or_else(|| {
        let port = if config.listen.port() == 0 {
            0
        } else {
            DEFAULT_PORT
        };
        SocketAddr::new(config.listen.ip(), port)
    });
    let public_ip = config.turn_public_ip.unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            let guess = local_ip_guess().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            tracing::warn!(
                "TURN listens on {listen}; offering it at {guess} (set turn_public_ip if \
                 browsers reach this machine at another address)"
            );
            guess
        } else {
            listen.ip()
        }
    });
    let secret = match &config.turn_secret {
        Some(secret) => secret.clone(),
        None => random_secret()?,
    };
    let (udp, tcp) = bind_pair(listen)
        .await
        .with_context(|| format!("cannot listen for TURN on {listen} (setting turn_listen)"))?;
    let addr = udp.local_addr()?;
    let tcp_conn = tcp::TcpTurnConn::start(tcp, config.turn_tcp_limits(), shutdown.child_token())?;
    let tcp_conn_handle = tcp_conn.clone();
    let mut own = config.own_ips();
    own.extend([listen.ip(), public_ip]);
    let policy = Arc::new(crate::egress::EgressPolicy::new(
        config.allowed_peer_networks(),
        crate::egress::EgressPolicy::own_addresses(&own),
    ));
    // `validate` checked the range.
    let ports = config
        .relay_ports()
        .map_err(|e| anyhow::anyhow!("turn_relay_ports: {e}"))?;
    if ports.len() < config.turn_max_relays {
        tracing::warn!(
            "turn_relay_ports ({}) has fewer ports than turn_max_relays ({}): relays beyond \
             the range's size are refused",
            config.turn_relay_ports,
            config.turn_max_relays
        );
    }
    let ledger = relays::Ledger::new(config.turn_relays_per_session, config.turn_max_relays);
    let revoked = Arc::new(credentials::Revocations::default());
    let rules = Arc::new(gate::GateRules {
        policy: policy.clone(),
        ledger: ledger.clone(),
        revoked: revoked.clone(),
        challenges_per_sec: f64::from(config.turn_challenges_per_sec),
    });
    let listener = |conn: Arc<dyn webrtc_util::Conn + Send + Sync>| {
        let pending = Arc::new(relays::PendingAllocate::default());
        turn::server::config::ConnConfig {
            conn: Arc::new(gate::TurnGate::new(conn, rules.clone(), pending.clone())),
            relay_addr_generator: Box::new(relays::Relays {
                bind_ip: listen.ip(),
                public_ip,
                ports: ports.clone(),
                ledger: ledger.clone(),
                policy: policy.clone(),
                pending,
            }),
        }
    };
    let server = turn::server::Server::new(turn::server::config::ServerConfig {
        conn_configs: vec![listener(Arc::new(udp)), listener(tcp_conn)],
        realm: REALM.to_owned(),
        auth_handler: Arc::new(credentials::RestAuth::new(secret.clone(), revoked.clone())),
        channel_bind_timeout: Duration::ZERO,
        alloc_close_notify: None,
    })
    .await
    .context("cannot start the TURN server")?;
    let server = Arc::new(server);
    let closing = server.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        if let Err(e) = closing.close().await {
            tracing::warn!("TURN server did not close cleanly: {e}");
        }
    });
    let host = match public_ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let port = addr.port();
    let mut turn_urls = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if config.tls_enabled() {
        // The certificate's name: public_url's host, else the address it was made for.
        let tls_host = config
            .public_url
            .as_deref()
            .and_then(|u| u.strip_prefix("https://"))
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .map(|authority| match authority.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
                _ => authority.to_owned(),
            })
            .unwrap_or_else(|| {
                let ip = if web.ip().is_unspecified() {
                    public_ip
                } else {
                    web.ip()
                };
                match ip {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                }
            });
        // Firefox takes a `turns:` server's TLS name from its host name, and passes over
        // one given by address: behind a firewall that lets only this port out, a Firefox
        // user is relayed only when the server is reached by name.
        if tls_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        {
            tracing::warn!(
                "TURN over TLS is offered at the address {tls_host}: Firefox uses it only by host name; set public_url to https://<the server's name> so Firefox users behind strict firewalls are relayed"
            );
        }
        turn_urls.push(format!("turns:{tls_host}:{}?transport=tcp", web.port()));
    }
    let ice = Ice {
        stun_urls: vec![format!("stun:{host}:{port}")],
        turn_urls,
        secret,
        ttl,
        embedded: Some(Embedded {
            server,
            ledger,
            revoked,
        }),
    };
    Ok((
        ice,
        Some(EmbeddedTurn {
            addr,
            public_ip,
            tcp: tcp_conn_handle,
            policy: policy.clone(),
        }),
    ))
}

/// A UDP socket and a TCP listener on the same port (with port 0, a free one for both).
async fn bind_pair(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen).await?;
        let mut at = listen;
        at.set_port(udp.local_addr()?.port());
        match TcpListener::bind(at).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // With port 0 the UDP port may be taken for TCP: try another.
            Err(e) if listen.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}

/// The address of the interface that routes outward (no packet is sent).
pub fn local_ip_guess() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:3478").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

fn random_secret() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no OS randomness for the TURN secret"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
