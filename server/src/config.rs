//! Server configuration: defaults, an optional TOML file, then environment and command line,
//! and validation with errors that say which setting is wrong and why.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Everything the server can be told. Every field has a default, so an empty file is valid.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen for HTTP and WebSocket connections (and, with TLS, for TURN over
    /// TLS: one port for everything a strict firewall lets through).
    pub listen: SocketAddr,
    /// HTTPS: a PEM certificate chain (with `tls_key`). Looked at every few seconds; a
    /// renewed certificate is used without a restart.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// HTTPS with a self-signed certificate (a trial on a LAN): made at the first start
    /// for the listen address, `public_url`'s host and `tls_names`, and kept in `data_dir`.
    pub tls_self_signed: bool,
    /// More host names (or IPs) the self-signed certificate covers.
    pub tls_names: Vec<String>,
    /// With TLS, a plain-HTTP listener that only redirects to HTTPS (e.g. `0.0.0.0:80`), so
    /// a campus's bare name typed into a browser lands on HTTPS.
    pub http_redirect_listen: Option<SocketAddr>,
    /// With TLS, how long browsers are told to come back only over HTTPS (HSTS), seconds;
    /// 0 sends no HSTS header.
    pub hsts_max_age_secs: u64,
    /// The Tiled map of the space.
    pub map: PathBuf,
    /// Static files of the page (index.html, CSS).
    pub assets_dir: PathBuf,
    /// The built wasm client (`quad_client.js`, `quad_client_bg.wasm`).
    pub client_dir: PathBuf,
    /// Where the server keeps its data.
    pub data_dir: PathBuf,
    /// Development mode: pages may choose their spawn point (`?spawn=X,Y`).
    pub dev: bool,
    /// World ticks per second.
    pub tick_hz: u16,
    /// Most concurrent sessions; more are refused with `Unavailable`.
    pub max_sessions: usize,
    /// Radius, in pixels, of the area in which a client is sent other avatars.
    pub area_of_interest: f32,
    /// Bytes per second of position updates a client is sent at most.
    pub replication_bytes_per_sec: u32,
    /// Most other avatars a client is sent at once: the nearest ones in its area of interest.
    pub max_visible_avatars: usize,
    /// Outside rooms, avatars closer than this (pixels) are linked peer-to-peer.
    pub connect_radius: f32,
    /// A proximity link breaks only beyond this distance (larger: hysteresis).
    pub disconnect_radius: f32,
    /// Most proximity links per avatar (the nearest win).
    pub max_peers: u8,
    /// Run the embedded STUN/TURN server (UDP and TCP on `turn_listen`).
    pub turn: bool,
    /// Where the embedded TURN server listens; by default the `listen` address's IP,
    /// port 3478 (port 0 if `listen` has port 0). Port 0 picks a free port, the same for
    /// UDP and TCP.
    pub turn_listen: Option<SocketAddr>,
    /// The address browsers reach the TURN server and its relays at; by default the IP of
    /// `turn_listen` (set it when that is 0.0.0.0 or behind NAT).
    pub turn_public_ip: Option<IpAddr>,
    /// The shared secret of the coturn REST credential scheme. Required with `turn_urls`
    /// (it must match coturn's `static-auth-secret`); generated at each start otherwise.
    pub turn_secret: Option<String>,
    /// External TURN servers (e.g. coturn with `use-auth-secret`) to offer instead of the
    /// embedded one, as `turn:host:port?transport=udp` URLs.
    pub turn_urls: Vec<String>,
    /// How long issued TURN credentials stay valid, seconds.
    pub turn_credential_ttl_secs: u64,
    /// The local IP the SFU's media port is bound to; by default the `listen` address's IP
    /// (when that is 0.0.0.0, connections offer each interface's address, not loopback).
    pub media_ip: Option<IpAddr>,
    /// The UDP port every room member's media connection shares (the SFU's one socket);
    /// by default 7882 (port 0 if `listen` has port 0). Port 0 picks a free port.
    pub media_port: Option<u16>,
    /// The address browsers reach the SFU's media port at, when the server is behind a
    /// 1:1 NAT (a cloud VM's public IP).
    pub media_public_ip: Option<IpAddr>,
    /// In a room, only this many of the loudest microphones are forwarded.
    pub room_max_speakers: usize,
    /// A room member whose media connection stays disconnected this long is removed from
    /// the room's media (and asked to reconnect), seconds.
    pub room_member_timeout_secs: u64,
    /// People may join with just a name (as guests); when false, only with a join link.
    pub allow_guests: bool,
    /// The secret join links are signed with (at least 32 characters). By default one is
    /// generated at first start and kept in the data directory.
    pub join_secret: Option<String>,
    /// The address people open, for the links the server prints (e.g.
    /// `https://campus.example.org`); by default `http://` and the `listen` address.
    pub public_url: Option<String>,

    // Egress and TURN limits (see docs/security.md).
    /// Address ranges (CIDR, or single addresses) that TURN relays and the SFU may send to
    /// although they are loopback, private or otherwise not public, e.g. a campus LAN.
    /// The server's own addresses stay refused.
    pub allowed_peer_ranges: Vec<String>,
    /// Relays one session may hold on the embedded TURN server at once.
    pub turn_relays_per_session: usize,
    /// Relays the embedded TURN server holds at once, in all.
    pub turn_max_relays: usize,
    /// New TURN nonces the server hands out per second, in all (bursts of ten times that).
    pub turn_challenges_per_sec: u32,
    /// Open TURN/TCP connections at most.
    pub turn_tcp_connections: usize,
    /// Open TURN/TCP connections from one IP address at most.
    pub turn_tcp_per_ip: usize,
    /// Seconds a new TURN/TCP connection may take to send its first frame.
    pub turn_tcp_first_frame_secs: u64,
    /// Seconds a TURN/TCP connection may send nothing before it is closed.
    pub turn_tcp_idle_secs: u64,
    /// The UDP ports TURN relays are bound to, `FIRST-LAST` (a firewall opens this range).
    pub turn_relay_ports: String,

    // --- The web surface: origins, metrics access, connection limits. ---
    /// Origins besides the server's own (the request's `Host`, and `public_url`) whose
    /// pages may open `/ws`, as `scheme://host[:port]` (e.g. `https://campus.example.org`).
    /// A WebSocket upgrade without an `Origin` header (bots, tools) is always accepted.
    pub allowed_origins: Vec<String>,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer TOKEN`
    /// (at least 16 characters). Without it, and without `metrics_listen`, `/metrics` on the
    /// main listener answers only loopback clients that came through no proxy.
    pub metrics_token: Option<String>,
    /// When set, `/metrics` is served only on this address (its own listener; the main one
    /// answers 404 there), to everyone who reaches it unless `metrics_token` is set.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a connection may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open waiting for the next request, seconds.
    pub http_header_timeout_secs: u64,
    /// Most connections (HTTP and WebSocket sessions) open at once from one client IP.
    pub max_connections_per_ip: usize,
    /// Client IPs not held to `max_connections_per_ip`: a reverse proxy's (every connection
    /// through it comes from its address). By default loopback, `127.0.0.1` and `::1`.
    pub connection_limit_exempt: Vec<IpAddr>,

    // Session limits (see `session`): what one client or one address may hold and send.
    /// Bytes of frames that may wait for one client before it counts as not keeping up and
    /// is disconnected. Legitimate bursts must fit: the chat history on joining (up to 300
    /// lines), the roster, and a lecture hall's session description (about 150 kB).
    pub session_outbox_bytes: usize,
    /// A connection that has not sent a valid `Hello` within this many seconds is closed.
    pub hello_timeout_secs: u64,
    /// A session that sends nothing at all for this many seconds is closed. The browser
    /// client pings every 15 s, but a long-hidden tab's timers may fire only once a minute
    /// (Chrome's intensive throttling): keep it above 60.
    pub idle_timeout_secs: u64,
    /// How long the avatar of a session whose connection dropped (not closed by its client)
    /// is kept for the client to resume it with its token; 0 to remove it at once.
    pub resume_grace_secs: u64,
    /// On shutdown (SIGTERM) clients are told to come back after a random delay of 1 s up
    /// to this many more seconds, so that they do not all return in the same second.
    pub restart_spread_secs: u64,
    /// Most sessions (open WebSockets) one address may hold at once (IPv6: one /64); 0 for
    /// no limit. A school whose students join from its own network shares one address.
    pub max_sessions_per_ip: usize,
    /// New sessions one address may open per minute, in bursts of half a minute's worth;
    /// 0 for no limit.
    pub session_joins_per_ip_per_minute: u32,

    // --- Storage: how long chat and the audit log are kept, how large the store may grow
    // (see docs/security.md, "Storage"). ---
    /// Days chat lines are kept; older ones are deleted at start-up and every hour. 0 keeps
    /// them forever.
    pub chat_retention_days: u32,
    /// Most chat lines kept (the newest); 0 for no limit. Checked at start-up, every hour,
    /// and whenever a tenth of it was added since the last check.
    pub chat_max_lines: u64,
    /// Days teacher-action audit records are kept; 0 keeps them forever. Separate from chat:
    /// the audit log is a record of what teachers did, kept longer.
    pub audit_retention_days: u32,
    /// Most megabytes the database may grow to; past it, writes fail as on a full disk (the
    /// senders of chat lines are told, the log says so once). 0: no limit but the disk's.
    pub store_max_mb: u64,

    // --- Class recordings (see the README, "Recording a class"). ---
    /// Teachers may record their classes.
    pub recordings: bool,
    /// Where recordings are kept; by default `recordings` in `data_dir`.
    pub recordings_dir: Option<PathBuf>,
    /// The media tool that makes a recording's file after class (a name on the `PATH`, or
    /// a path).
    pub ffmpeg: PathBuf,
    /// A recording stops by itself after this many minutes.
    pub recording_max_minutes: u32,
    /// Days recordings and class registers (attendance, engagement) are kept; older ones
    /// are deleted at start-up and every hour. 0 keeps them forever.
    pub records_retention_days: u32,
    /// Keep finished recordings in this S3-compatible bucket instead of the recordings
    /// folder (uploaded after the mixdown; the local copy is deleted once the upload is
    /// checked).
    pub s3_bucket: Option<String>,
    /// Object names in the bucket start with this.
    pub s3_prefix: String,
    /// The object storage's address when it is not AWS (e.g. `https://minio.campus.lan:9000`).
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// The bucket's keys (or the `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// environment variables).
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint (a service on a trusted LAN).
    pub s3_allow_http: bool,
    /// Cluster mode: the Redis server the nodes coordinate through (`redis://HOST:PORT`).
    /// Without it, this one process does everything.
    pub cluster: Option<String>,
    /// This node's name in the cluster (unique; by default the host name and the port).
    pub node_name: Option<String>,
    /// Where the other nodes reach this one's web port (`http://10.0.0.5:8080`); by default
    /// `http://` and the listen address.
    pub node_url: Option<String>,
    /// Cluster mode: the secret the nodes prove themselves to each other with, and the
    /// bearer token of the cluster view (`/cluster`). The same on every node; at least 32
    /// characters.
    pub cluster_secret: Option<String>,
    /// The shared store, PostgreSQL (`postgres://USER:PASSWORD@HOST:PORT/DB`): needed in
    /// cluster mode, where a node's own SQLite file would die with the node.
    pub database_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            tls_names: Vec::new(),
            http_redirect_listen: None,
            hsts_max_age_secs: 365 * 24 * 3600,
            map: PathBuf::from("assets/maps/campus.tmj"),
            assets_dir: PathBuf::from("assets"),
            client_dir: PathBuf::from("target/web/pkg"),
            data_dir: PathBuf::from("data"),
            dev: false,
            tick_hz: 20,
            max_sessions: 5_000,
            area_of_interest: 800.0,
            replication_bytes_per_sec: 2_000,
            max_visible_avatars: 48,
            connect_radius: quad_shared::proximity::ProximityRules::default().connect_radius,
            disconnect_radius: quad_shared::proximity::ProximityRules::default().disconnect_radius,
            max_peers: quad_shared::proximity::ProximityRules::default().max_peers,
            turn: true,
            turn_listen: None,
            turn_public_ip: None,
            turn_secret: None,
            turn_urls: Vec::new(),
            turn_credential_ttl_secs: 600,
            media_ip: None,
            media_port: None,
            media_public_ip: None,
            room_max_speakers: 3,
            room_member_timeout_secs: 10,
            allow_guests: true,
            join_secret: None,
            public_url: None,

            allowed_peer_ranges: Vec::new(),
            turn_relays_per_session: 32,
            turn_max_relays: 2048,
            turn_challenges_per_sec: 20,
            turn_tcp_connections: 1024,
            turn_tcp_per_ip: 64,
            turn_tcp_first_frame_secs: 10,
            turn_tcp_idle_secs: 900,
            turn_relay_ports: "49152-51199".into(),

            // --- The web surface. ---
            allowed_origins: Vec::new(),
            metrics_token: None,
            metrics_listen: None,
            http_header_timeout_secs: 10,
            max_connections_per_ip: 64,
            connection_limit_exempt: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],

            session_outbox_bytes: 1024 * 1024,
            hello_timeout_secs: 10,
            idle_timeout_secs: 120,
            resume_grace_secs: 20,
            restart_spread_secs: 5,
            max_sessions_per_ip: 60,
            session_joins_per_ip_per_minute: 120,

            // --- Storage. ---
            chat_retention_days: 90,
            chat_max_lines: 500_000,
            audit_retention_days: 365,
            store_max_mb: 4096,

            // --- Class recordings. ---
            recordings: true,
            recordings_dir: None,
            ffmpeg: PathBuf::from("ffmpeg"),
            recording_max_minutes: 240,
            records_retention_days: 365,
            s3_bucket: None,
            s3_prefix: "recordings/".into(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,

            // --- Cluster. ---
            cluster: None,
            node_name: None,
            node_url: None,
            cluster_secret: None,
            database_url: None,
        }
    }
}

/// The media port when `media_port` is not set (LiveKit's default for its UDP mux).
pub const DEFAULT_MEDIA_PORT: u16 = 7882;

/// The longest `chat_retention_days` and `audit_retention_days`.
const MAX_RETENTION_DAYS: u32 = 36_500;
/// The largest `store_max_mb` (SQLite's page count limit at 4 KB pages).
const MAX_STORE_MB: u64 = 16_000_000;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("setting `{setting}`: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Defaults, overlaid by the TOML file at `path` if given.
    pub fn from_file(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let file_err = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_err(e.to_string()))
    }

    /// The proximity rules these settings describe.
    pub fn proximity(&self) -> quad_shared::proximity::ProximityRules {
        quad_shared::proximity::ProximityRules {
            connect_radius: self.connect_radius,
            disconnect_radius: self.disconnect_radius,
            max_peers: self.max_peers,
        }
    }

    /// The SFU's settings.
    pub fn sfu(&self) -> crate::media::sfu::SfuConfig {
        crate::media::sfu::SfuConfig {
            bind_ip: self.media_ip.unwrap_or(self.listen.ip()),
            media_port: self.media_port.unwrap_or(if self.listen.port() == 0 {
                0
            } else {
                DEFAULT_MEDIA_PORT
            }),
            public_ip: self.media_public_ip,
            max_speakers: self.room_max_speakers,
            member_timeout: std::time::Duration::from_secs(self.room_member_timeout_secs),
            egress: crate::egress::EgressPolicy::new(
                self.allowed_peer_networks(),
                crate::egress::EgressPolicy::own_addresses(&self.own_ips()),
            ),
        }
    }

    /// The addresses this server is configured to listen on or be reached at.
    pub fn own_ips(&self) -> Vec<IpAddr> {
        let mut own = vec![self.listen.ip()];
        own.extend(self.turn_listen.map(|a| a.ip()));
        own.extend(self.turn_public_ip);
        own.extend(self.media_ip);
        own.extend(self.media_public_ip);
        own
    }

    /// The ranges in `allowed_peer_ranges` (checked by `validate`).
    pub fn allowed_peer_networks(&self) -> Vec<ipnet::IpNet> {
        crate::egress::parse_ranges(&self.allowed_peer_ranges).unwrap_or_default()
    }

    /// The bounds on TURN/TCP connections.
    pub fn turn_tcp_limits(&self) -> crate::turn::tcp::TcpLimits {
        crate::turn::tcp::TcpLimits {
            max_clients: self.turn_tcp_connections,
            per_ip: self.turn_tcp_per_ip,
            first_frame: std::time::Duration::from_secs(self.turn_tcp_first_frame_secs),
            idle: std::time::Duration::from_secs(self.turn_tcp_idle_secs),
        }
    }

    /// The address the server's links start with (no trailing slash).
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = self.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(IpAddr::from([127, 0, 0, 1]));
                }
                let scheme = if self.tls_enabled() { "https" } else { "http" };
                format!("{scheme}://{addr}")
            }
        }
    }

    /// `turn_relay_ports` as a range of ports.
    pub fn relay_ports(&self) -> Result<std::ops::RangeInclusive<u16>, String> {
        let bad = || {
            format!(
                "must be FIRST-LAST, two ports from 1024 to 65535 with FIRST <= LAST, not `{}`",
                self.turn_relay_ports
            )
        };
        let (first, last) = self.turn_relay_ports.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first < 1024 || first > last {
            return Err(bad());
        }
        Ok(first..=last)
    }

    /// Whether the web port speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }

    /// Where the TLS certificate comes from, if TLS is on.
    pub fn tls_source(&self) -> Option<crate::tls::CertSource> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.tls_self_signed => Some(crate::tls::CertSource::SelfSigned {
                dir: self.data_dir.clone(),
                names: self.self_signed_names(),
            }),
            _ => None,
        }
    }

    /// What a self-signed certificate names: the listen IP (every local one, and
    /// `localhost`, when listening on all of them), `public_url`'s host and `tls_names`.
    fn self_signed_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let ip = self.listen.ip();
        if ip.is_unspecified() || ip.is_loopback() {
            names.push("localhost".to_owned());
            names.push("127.0.0.1".to_owned());
        }
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        } else if let Some(lan) = crate::turn::local_ip_guess() {
            names.push(lan.to_string());
        }
        if let Some(host) = self
            .public_url
            .as_deref()
            .and_then(|u| u.split_once("://"))
            .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        {
            // Without the port; an IPv6 literal keeps no brackets.
            let host = match host.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => host,
            };
            names.push(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            );
        }
        names.extend(self.tls_names.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| !n.is_empty() && seen.insert(n.to_ascii_lowercase()));
        names
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_owned(),
            })
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls_key", "is needed with tls_cert"),
            (None, Some(_)) => return invalid("tls_cert", "is needed with tls_key"),
            (Some(_), Some(_)) if self.tls_self_signed => {
                return invalid(
                    "tls_self_signed",
                    "cannot be used with tls_cert and tls_key: choose one",
                );
            }
            _ => {}
        }
        if self.http_redirect_listen.is_some() && !self.tls_enabled() {
            return invalid(
                "http_redirect_listen",
                "redirects to HTTPS, so it needs TLS (tls_cert and tls_key, or tls_self_signed)",
            );
        }
        if !(1..=120).contains(&self.tick_hz) {
            return invalid("tick_hz", "must be between 1 and 120");
        }
        if self.max_sessions == 0 {
            return invalid("max_sessions", "must be at least 1");
        }
        if !(self.area_of_interest.is_finite() && self.area_of_interest >= 64.0) {
            return invalid(
                "area_of_interest",
                "must be a number of pixels, at least 64",
            );
        }
        if self.replication_bytes_per_sec < 200 {
            return invalid(
                "replication_bytes_per_sec",
                "must be at least 200, or clients cannot follow anyone",
            );
        }
        if let Err(message) = self.proximity().validate() {
            return Err(ConfigError::Invalid {
                setting: "proximity",
                message,
            });
        }
        if !(1..=500).contains(&self.max_visible_avatars) {
            return invalid("max_visible_avatars", "must be between 1 and 500");
        }
        if !(10..=7 * 24 * 3600).contains(&self.turn_credential_ttl_secs) {
            return invalid(
                "turn_credential_ttl_secs",
                "must be between 10 seconds and 7 days",
            );
        }
        if self.turn_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return invalid("turn_secret", "must be at least 16 characters");
        }
        for url in &self.turn_urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:") || url.starts_with("stun:"))
            {
                return Err(ConfigError::Invalid {
                    setting: "turn_urls",
                    message: format!("{url:?} is not a stun:, turn: or turns: URL"),
                });
            }
        }
        if !(1..=128).contains(&self.room_max_speakers) {
            return invalid("room_max_speakers", "must be between 1 and 128");
        }
        if !(1..=600).contains(&self.room_member_timeout_secs) {
            return invalid(
                "room_member_timeout_secs",
                "must be between 1 and 600 seconds",
            );
        }
        if let Some(url) = &self.cluster {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return invalid("cluster", "must be a Redis URL: redis://HOST:PORT");
            }
            if self.database_url.is_none() {
                return invalid(
                    "database_url",
                    "is needed in cluster mode (a PostgreSQL URL): a node's own SQLite file \
                     would die with the node",
                );
            }
            if self.cluster_secret.as_ref().is_none_or(|s| s.len() < 32) {
                return invalid(
                    "cluster_secret",
                    "is needed in cluster mode, the same on every node, at least 32 characters",
                );
            }
        }
        if let Some(name) = &self.node_name
            && (name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return invalid(
                "node_name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            );
        }
        if let Some(url) = &self.node_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("node_url", "must start with http:// or https://");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid(
                "database_url",
                "must be a PostgreSQL URL: postgres://USER:PASSWORD@HOST:PORT/DB",
            );
        }
        if self.join_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return invalid("join_secret", "must be at least 32 characters");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("public_url", "must start with http:// or https://");
        }
        if !self.turn_urls.is_empty() && self.turn_secret.is_none() {
            return invalid(
                "turn_secret",
                "is required with turn_urls (coturn's static-auth-secret)",
            );
        }

        if let Err(message) = crate::egress::parse_ranges(&self.allowed_peer_ranges) {
            return Err(ConfigError::Invalid {
                setting: "allowed_peer_ranges",
                message,
            });
        }
        if !(1..=1024).contains(&self.turn_relays_per_session) {
            return invalid("turn_relays_per_session", "must be between 1 and 1024");
        }
        if self.turn_max_relays < self.turn_relays_per_session {
            return invalid(
                "turn_max_relays",
                "must be at least turn_relays_per_session",
            );
        }
        if self.turn_challenges_per_sec == 0 {
            return invalid("turn_challenges_per_sec", "must be at least 1");
        }
        if self.turn_tcp_connections == 0 || self.turn_tcp_per_ip == 0 {
            return invalid(
                "turn_tcp_per_ip",
                "turn_tcp_connections and turn_tcp_per_ip must be at least 1",
            );
        }
        if !(1..=600).contains(&self.turn_tcp_first_frame_secs) {
            return invalid("turn_tcp_first_frame_secs", "must be between 1 and 600");
        }
        if let Err(message) = self.relay_ports() {
            return invalid("turn_relay_ports", &message);
        }
        if self.turn_tcp_idle_secs < 60 {
            return invalid(
                "turn_tcp_idle_secs",
                "must be at least 60, or idle relays over TCP are cut between refreshes",
            );
        }

        // --- The web surface. ---
        for origin in &self.allowed_origins {
            if let Err(why) = crate::http::origin::Origin::parse_setting(origin) {
                return Err(ConfigError::Invalid {
                    setting: "allowed_origins",
                    message: format!("{origin:?} {why}"),
                });
            }
        }
        if let Some(token) = &self.metrics_token
            && (token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return invalid(
                "metrics_token",
                "must be at least 16 characters, printable ASCII without spaces",
            );
        }
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return invalid(
                "metrics_listen",
                "must differ from `listen` (leave it unset to serve /metrics there)",
            );
        }
        if !(1..=300).contains(&self.http_header_timeout_secs) {
            return invalid(
                "http_header_timeout_secs",
                "must be between 1 and 300 seconds",
            );
        }
        if self.max_connections_per_ip == 0 {
            return invalid(
                "max_connections_per_ip",
                "must be at least 1 (list a proxy's address in connection_limit_exempt instead)",
            );
        }
        let frame = quad_shared::codec::MAX_FRAME_BYTES;
        if !(2 * frame..=256 * 1024 * 1024).contains(&self.session_outbox_bytes) {
            return Err(ConfigError::Invalid {
                setting: "session_outbox_bytes",
                message: format!(
                    "must be between {} (two of the largest frames) and {} bytes",
                    2 * frame,
                    256 * 1024 * 1024
                ),
            });
        }
        if !(1..=600).contains(&self.hello_timeout_secs) {
            return invalid("hello_timeout_secs", "must be between 1 and 600 seconds");
        }
        if !(1..=24 * 3600).contains(&self.idle_timeout_secs) {
            return invalid(
                "idle_timeout_secs",
                "must be between 1 second and 24 hours (hidden browser tabs may ping only once a minute: use more than 60)",
            );
        }
        if self.resume_grace_secs > 3600 {
            return invalid(
                "resume_grace_secs",
                "must be at most 3600 seconds (0 removes an avatar as soon as its connection drops)",
            );
        }
        if self.restart_spread_secs > 600 {
            return invalid("restart_spread_secs", "must be at most 600 seconds");
        }
        if self.max_sessions_per_ip > self.max_sessions {
            return invalid(
                "max_sessions_per_ip",
                "must be at most max_sessions (0 for no per-address limit)",
            );
        }
        if self.session_joins_per_ip_per_minute > 60_000 {
            return invalid(
                "session_joins_per_ip_per_minute",
                "must be at most 60000 (0 for no limit)",
            );
        }

        // --- Storage. ---
        if self.chat_retention_days > MAX_RETENTION_DAYS {
            return invalid(
                "chat_retention_days",
                "must be at most 36500 (100 years; 0 keeps chat forever)",
            );
        }
        if self.chat_max_lines != 0
            && self.chat_max_lines < quad_shared::protocol::CHAT_HISTORY as u64
        {
            return invalid(
                "chat_max_lines",
                "must be 0 (no limit) or at least 100, a history's worth",
            );
        }
        if self.audit_retention_days > MAX_RETENTION_DAYS {
            return invalid(
                "audit_retention_days",
                "must be at most 36500 (100 years; 0 keeps the audit log forever)",
            );
        }
        if self.store_max_mb > MAX_STORE_MB {
            return invalid(
                "store_max_mb",
                "must be at most 16000000 (16 TB; 0 for no limit but the disk's)",
            );
        }

        // --- Class recordings. ---
        if !(1..=24 * 60).contains(&self.recording_max_minutes) {
            return invalid(
                "recording_max_minutes",
                "must be between 1 and 1440 (a day)",
            );
        }
        if self.records_retention_days > MAX_RETENTION_DAYS {
            return invalid(
                "records_retention_days",
                "must be at most 36500 (100 years; 0 keeps recordings and registers forever)",
            );
        }
        if let Some(bucket) = &self.s3_bucket
            && (bucket.is_empty()
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b)))
        {
            return invalid(
                "s3_bucket",
                "must be a bucket name: lower-case letters, digits, dots and hyphens",
            );
        }
        if let Some(endpoint) = &self.s3_endpoint {
            let http = endpoint.starts_with("http://");
            if !http && !endpoint.starts_with("https://") {
                return invalid("s3_endpoint", "must start with https:// (or http://)");
            }
            if http && !self.s3_allow_http {
                return invalid(
                    "s3_endpoint",
                    "is plain http: set s3_allow_http = true for a service on a trusted LAN",
                );
            }
        }
        if self.s3_prefix.starts_with('/') || self.s3_prefix.contains("..") {
            return invalid("s3_prefix", "must not start with / or hold ..");
        }
        if self.ffmpeg.as_os_str().is_empty() {
            return invalid("ffmpeg", "must name the media tool (e.g. \"ffmpeg\")");
        }
        Ok(())
    }

    /// Where recordings are kept: `recordings_dir`, else `recordings` in the data directory.
    pub fn recordings_dir(&self) -> PathBuf {
        self.recordings_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("recordings"))
    }

    /// The bucket finished recordings go to, if one is set.
    pub fn s3(&self) -> Option<crate::records::archive::S3Settings> {
        self.s3_bucket
            .as_ref()
            .map(|bucket| crate::records::archive::S3Settings {
                bucket: bucket.clone(),
                prefix: self.s3_prefix.clone(),
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                access_key_id: self.s3_access_key_id.clone(),
                secret_access_key: self.s3_secret_access_key.clone(),
                allow_http: self.s3_allow_http,
            })
    }

    /// Where and how classes are recorded, if they may be.
    pub fn recording_setup(
        &self,
        storage: Option<crate::store::Storage>,
        archive: std::sync::Arc<crate::records::archive::Archive>,
    ) -> Option<crate::media::recording::RecordingSetup> {
        self.recordings
            .then(|| crate::media::recording::RecordingSetup {
                dir: self.recordings_dir(),
                ffmpeg: self.ffmpeg.clone(),
                archive,
                max_length: std::time::Duration::from_secs(
                    u64::from(self.recording_max_minutes) * 60,
                ),
                // A mixdown runs at many times real time; this only stops one that hangs.
                mixdown_timeout: std::time::Duration::from_secs(
                    600 + u64::from(self.recording_max_minutes) * 60 / 4,
                ),
                storage,
            })
    }

    /// How long chat and the audit log are kept.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            chat_days: self.chat_retention_days,
            chat_max_lines: self.chat_max_lines,
            audit_days: self.audit_retention_days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let cfg: Config = toml::from_str("").unwrap();
        assert_eq!(cfg, Config::default());
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = toml::from_str::<Config>("tick_rate = 5").unwrap_err();
        assert!(err.to_string().contains("tick_rate"), "{err}");
    }

    #[test]
    fn nonsense_values_are_refused_by_name() {
        let cfg = Config {
            tick_hz: 0,
            ..Config::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("tick_hz"));
        let cfg = Config {
            area_of_interest: f32::NAN,
            ..Config::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("area_of_interest")
        );
    }

    #[test]
    fn relay_ports_are_a_range_of_unprivileged_ports() {
        assert_eq!(Config::default().relay_ports(), Ok(49152..=51199));
        for bad in ["", "5000", "60000-50000", "80-90", "1024-70000", "a-b"] {
            let cfg = Config {
                turn_relay_ports: bad.into(),
                ..Config::default()
            };
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("turn_relay_ports"), "{bad}: {err}");
        }
    }

    #[test]
    fn tls_settings_come_in_pairs_and_name_the_campus() {
        let half: Config = toml::from_str(r#"tls_cert = "/etc/quad/cert.pem""#).unwrap();
        assert!(half.validate().unwrap_err().to_string().contains("tls_key"));
        let both = Config {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_self_signed: true,
            ..Config::default()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("tls_self_signed")
        );
        let trial = Config {
            listen: "10.0.0.5:8443".parse().unwrap(),
            tls_self_signed: true,
            public_url: Some("https://campus.lan:8443/".into()),
            tls_names: vec!["quad.lan".into(), "CAMPUS.lan".into()],
            ..Config::default()
        };
        assert!(trial.validate().is_ok());
        assert_eq!(
            trial.self_signed_names(),
            ["10.0.0.5", "campus.lan", "quad.lan"],
            "the listen IP, public_url's host and tls_names, each once"
        );
        let local = Config {
            tls_self_signed: true,
            ..Config::default()
        };
        assert_eq!(local.public_url(), "https://127.0.0.1:8080");
        assert_eq!(Config::default().public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn external_turn_needs_a_secret_and_real_urls() {
        let cfg: Config = toml::from_str(r#"turn_urls = ["turn:turn.example.org:3478"]"#).unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("turn_secret")
        );
        let cfg = Config {
            turn_urls: vec!["http://turn.example.org".into()],
            turn_secret: Some("0123456789abcdef".into()),
            ..Config::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("turn_urls")
        );
    }

    #[test]
    fn web_surface_settings_are_checked_by_name() {
        let refused = |cfg: Config, setting: &str| {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(setting), "{err}");
        };
        for bad in [
            "campus.example.org",
            "ftp://campus.example.org",
            "https://campus.example.org/path",
            "https://",
            "https://user@campus.example.org",
            "null",
        ] {
            refused(
                Config {
                    allowed_origins: vec![bad.into()],
                    ..Config::default()
                },
                "allowed_origins",
            );
        }
        let ok = Config {
            allowed_origins: vec![
                "https://campus.example.org".into(),
                "http://127.0.0.1:8080".into(),
                "https://[::1]:8443".into(),
            ],
            ..Config::default()
        };
        assert!(ok.validate().is_ok());
        refused(
            Config {
                metrics_token: Some("short".into()),
                ..Config::default()
            },
            "metrics_token",
        );
        refused(
            Config {
                metrics_token: Some("has a space in the middle".into()),
                ..Config::default()
            },
            "metrics_token",
        );
        refused(
            Config {
                metrics_listen: Some(Config::default().listen),
                ..Config::default()
            },
            "metrics_listen",
        );
        refused(
            Config {
                http_header_timeout_secs: 0,
                ..Config::default()
            },
            "http_header_timeout_secs",
        );
        refused(
            Config {
                max_connections_per_ip: 0,
                ..Config::default()
            },
            "max_connections_per_ip",
        );
        let cfg: Config = toml::from_str(
            r#"
            allowed_origins = ["https://campus.example.org"]
            metrics_token = "0123456789abcdef"
            metrics_listen = "127.0.0.1:9090"
            http_header_timeout_secs = 5
            max_connections_per_ip = 32
            connection_limit_exempt = ["10.0.0.5"]
            "#,
        )
        .unwrap();
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn session_limits_are_checked_by_name() {
        for (cfg, name) in [
            (
                Config {
                    session_outbox_bytes: 1000,
                    ..Config::default()
                },
                "session_outbox_bytes",
            ),
            (
                Config {
                    hello_timeout_secs: 0,
                    ..Config::default()
                },
                "hello_timeout_secs",
            ),
            (
                Config {
                    idle_timeout_secs: 0,
                    ..Config::default()
                },
                "idle_timeout_secs",
            ),
            (
                Config {
                    resume_grace_secs: 7200,
                    ..Config::default()
                },
                "resume_grace_secs",
            ),
            (
                Config {
                    restart_spread_secs: 601,
                    ..Config::default()
                },
                "restart_spread_secs",
            ),
            (
                Config {
                    max_sessions_per_ip: 6000,
                    ..Config::default()
                },
                "max_sessions_per_ip",
            ),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let cfg: Config =
            toml::from_str("max_sessions_per_ip = 0\nsession_joins_per_ip_per_minute = 0").unwrap();
        assert!(cfg.validate().is_ok(), "0 turns the per-address limits off");
    }

    #[test]
    fn storage_settings_are_checked_by_name() {
        let refused = |cfg: Config, setting: &str| {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(setting), "{err}");
        };
        refused(
            Config {
                chat_retention_days: 40_000,
                ..Config::default()
            },
            "chat_retention_days",
        );
        refused(
            Config {
                chat_max_lines: 99,
                ..Config::default()
            },
            "chat_max_lines",
        );
        refused(
            Config {
                audit_retention_days: 40_000,
                ..Config::default()
            },
            "audit_retention_days",
        );
        refused(
            Config {
                store_max_mb: 20_000_000,
                ..Config::default()
            },
            "store_max_mb",
        );
        let cfg: Config = toml::from_str(
            r#"
            chat_retention_days = 0
            chat_max_lines = 0
            audit_retention_days = 0
            store_max_mb = 0
            "#,
        )
        .unwrap();
        assert!(cfg.validate().is_ok(), "0 means no limit everywhere");
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = Config::from_file(Some(Path::new("/nope/quad.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nope/quad.toml"));
    }
}
