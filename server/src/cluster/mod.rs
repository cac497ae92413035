//! Cluster mode (`cluster = "redis://..."`): several nodes running the same binary serve one
//! campus, coordinated through Redis, with the store in PostgreSQL.
//!
//! - Every node writes its [`NodeInfo`] (where it is reached, its load: CPU, forwarded
//!   packets, sessions) to Redis every second, with a 3 s expiry: a node that stops
//!   beating drops out of the cluster by itself.
//! - One node owns the space's world (walking, proximity, chat, classes and, for now, its
//!   rooms' media): it holds the space lease ([`lease`]). Any node accepts a client; a node
//!   that does not own the space relays the client's WebSocket to the owner ([`route`]).
//! - When the owner dies its lease runs out, another node takes the space over (chat ids
//!   go on after the shared store's), and the relayed clients reconnect to it.
//! - The nodes prove themselves to each other with `cluster_secret`, which is also the
//!   bearer token of the cluster view (`/cluster`, [`ClusterView`]).
//!
//! Nothing here holds what a person did: that is in the store. Redis holds only who is up,
//! their load, and who owns the space, all re-written every second.

pub mod lease;
pub mod media;
pub mod route;

use crate::config::Config;
use anyhow::Context;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;

/// How often a node beats (writes its load, renews or claims the lease).
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a node's entry and the space lease live without a beat.
pub const EXPIRY: Duration = Duration::from_secs(3);
/// How long a Redis command may take before the beat counts it failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node waits at start-up for a name a dead node held to expire.
const NAME_WAIT: Duration = Duration::from_secs(5);

const KEY_NODES: &str = "quad:nodes";
const KEY_SPACE: &str = "quad:space";

fn node_key(name: &str) -> String {
    format!("quad:node:{name}")
}

/// Claims the space lease for ARGV[1] for ARGV[2] ms: renews it when ARGV[1] holds it,
/// takes it when it is vacant and ARGV[3] is "take"; returns the holder afterwards (nil
/// when vacant).
const CLAIM: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return v
elseif not v then
  if ARGV[3] == 'take' then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return ARGV[1]
  end
  return false
end
return v
"#;

/// Lets the lease go if ARGV[1] holds it (a clean shutdown: another node takes over at once).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// WebSocket settings of the connections a node opens to another (relayed sessions and
/// media links): frames as large as a session's, and the few bytes a media link adds.
pub(crate) fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    let max = quad_shared::codec::MAX_FRAME_BYTES + 2048;
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * max)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// An accepted WebSocket, as the cluster's relays and media links take it (the HTTP layer's
/// upgraded connection).
pub trait Socket:
    futures_util::Stream<Item = Result<WsMessage, WsError>>
    + futures_util::Sink<WsMessage, Error = WsError>
    + Unpin
    + Send
    + 'static
{
}

impl<S> Socket for S where
    S: futures_util::Stream<Item = Result<WsMessage, WsError>>
        + futures_util::Sink<WsMessage, Error = WsError>
        + Unpin
        + Send
        + 'static
{
}

/// A node as the others see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Where the other nodes reach its web port.
    pub url: String,
    /// Its media port (UDP): where the browsers of the rooms it runs send their media.
    pub media: String,
    pub started_ms: u64,
    /// CPU it used over the last beat, in cores.
    pub cpu: f64,
    /// RTP packets its SFU forwarded per second over the last beat.
    pub forwarded_per_sec: u64,
    pub rooms: u64,
    pub room_members: u64,
    /// Sessions it holds (its own, and clients it relays to the owner).
    pub sessions: u64,
    /// Whether it owns the space.
    pub owns_space: bool,
}

/// The cluster as `/cluster` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    /// The node owning the space, if any does now.
    pub space_owner: Option<String>,
    pub nodes: Vec<NodeInfo>,
}

/// What a node knows of the cluster, updated at every beat.
#[derive(Debug, Default)]
struct Known {
    owner: Option<NodeInfo>,
    nodes: Vec<NodeInfo>,
}

/// This node's membership of the cluster.
pub struct Cluster {
    pub name: String,
    pub url: String,
    secret: String,
    redis: ConnectionManager,
    owns: AtomicBool,
    known: Mutex<Known>,
    started_ms: u64,
    /// This node's media port, once bound.
    media: std::sync::OnceLock<SocketAddr>,
    /// Set when this node lost the space to another (see [`lease::Step::Lost`]).
    pub lost: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

impl Cluster {
    /// Connects to Redis, takes this node's name and, if nobody owns the space, the space.
    /// Fails with a clear error when Redis cannot be reached or the name is taken.
    pub async fn join(config: &Config, listen: SocketAddr) -> anyhow::Result<Arc<Cluster>> {
        let url = config
            .cluster
            .as_deref()
            .context("cluster mode without a Redis URL")?;
        let secret = config
            .cluster_secret
            .clone()
            .context("cluster mode without cluster_secret")?;
        let name = config
            .node_name
            .clone()
            .unwrap_or_else(|| default_name(listen));
        let node_url = config
            .node_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let client = redis::Client::open(url)
            .with_context(|| format!("cluster: {url} is not a Redis URL"))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let redis = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| {
            format!("cluster: cannot reach Redis at {url}; is redis-server running there?")
        })?;
        let cluster = Arc::new(Cluster {
            name,
            url: node_url,
            secret,
            redis,
            owns: AtomicBool::new(false),
            known: Mutex::new(Known::default()),
            started_ms: crate::store::now_ms(),
            media: std::sync::OnceLock::new(),
            lost: CancellationToken::new(),
        });
        cluster.take_name().await?;
        Ok(cluster)
    }

    /// Writes this node's entry, unless a live node has the name (waits a little for a
    /// dead one's to expire).
    async fn take_name(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + NAME_WAIT;
        let info = serde_json::to_string(&self.info(Load::default()))?;
        loop {
            let mut redis = self.redis.clone();
            let taken: Option<String> = redis::cmd("SET")
                .arg(node_key(&self.name))
                .arg(&info)
                .arg("NX")
                .arg("PX")
                .arg(EXPIRY.as_millis() as u64)
                .query_async(&mut redis)
                .await
                .context("cluster: writing this node's entry to Redis")?;
            if taken.is_some() {
                let _: () = redis::cmd("SADD")
                    .arg(KEY_NODES)
                    .arg(&self.name)
                    .query_async(&mut redis)
                    .await?;
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "cluster: another running node is named {:?}; give this one another name \
                     (--node NAME)",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Tells the others where this node's media port is (once).
    pub fn set_media_addr(&self, addr: SocketAddr) {
        let _ = self.media.set(addr);
    }

    /// Whether this node owns the space now.
    pub fn owns_space(&self) -> bool {
        self.owns.load(Ordering::Acquire)
    }

    /// The owner's web address, when another node owns the space.
    pub fn owner_url(&self) -> Option<String> {
        if self.owns_space() {
            return None;
        }
        self.lock().owner.as_ref().map(|o| o.url.clone())
    }

    /// Whether `token` is the cluster's secret (constant time).
    pub fn is_secret(&self, token: &[u8]) -> bool {
        let want = self.secret.as_bytes();
        token.len() == want.len()
            && token
                .iter()
                .zip(want)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `ip` is the address of a known node (relayed connections come from there).
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.lock().nodes.iter().any(|n| url_ip(&n.url) == Some(ip))
    }

    /// The cluster as this node knows it.
    pub fn view(&self) -> ClusterView {
        let known = self.lock();
        ClusterView {
            node: self.name.clone(),
            space_owner: if self.owns_space() {
                Some(self.name.clone())
            } else {
                known.owner.as_ref().map(|o| o.name.clone())
            },
            nodes: known.nodes.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // A panic while holding this lock would be a bug; the view stays usable either way.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info(&self, load: Load) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            url: self.url.clone(),
            media: self.media.get().map(|a| a.to_string()).unwrap_or_default(),
            started_ms: self.started_ms,
            cpu: load.cpu,
            forwarded_per_sec: load.forwarded_per_sec,
            rooms: load.rooms,
            room_members: load.room_members,
            sessions: load.sessions,
            owns_space: self.owns_space(),
        }
    }

    /// One beat: writes this node's entry, claims the lease, reads the others. The lease's
    /// step, or the Redis error (the beat is tried again at the next).
    async fn beat(
        &self,
        lease: &mut lease::Lease,
        first: bool,
        load: Load,
    ) -> anyhow::Result<lease::Step> {
        let mut redis = self.redis.clone();
        let holder: Option<String> = redis::Script::new(CLAIM)
            .key(KEY_SPACE)
            .arg(&self.name)
            .arg(EXPIRY.as_millis() as u64)
            .arg(if lease.should_take(first) {
                "take"
            } else {
                "wait"
            })
            .invoke_async(&mut redis)
            .await?;
        let step = lease.observe(&self.name, holder.as_deref());
        self.owns.store(lease.owns(), Ordering::Release);
        let info = serde_json::to_string(&self.info(load))?;
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(node_key(&self.name))
            .arg(info)
            .arg("PX")
            .arg(EXPIRY.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(KEY_NODES)
            .arg(&self.name)
            .ignore()
            .query_async(&mut redis)
            .await?;
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(KEY_NODES)
            .query_async(&mut redis)
            .await?;
        let mut nodes = Vec::with_capacity(names.len());
        if !names.is_empty() {
            let keys: Vec<String> = names.iter().map(|n| node_key(n)).collect();
            let entries: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut redis)
                .await?;
            for (name, entry) in names.iter().zip(entries) {
                match entry.and_then(|e| serde_json::from_str::<NodeInfo>(&e).ok()) {
                    Some(info) => nodes.push(info),
                    None => {
                        // Its entry expired: it is gone.
                        let _: () = redis::cmd("SREM")
                            .arg(KEY_NODES)
                            .arg(name)
                            .query_async(&mut redis)
                            .await?;
                    }
                }
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut known = self.lock();
        known.owner = holder.and_then(|h| nodes.iter().find(|n| n.name == h).cloned());
        known.nodes = nodes;
        Ok(step)
    }

    /// Lets the lease go and removes this node's entry (a clean shutdown).
    async fn leave(&self) {
        let mut redis = self.redis.clone();
        let _: Result<i64, _> = redis::Script::new(RELEASE)
            .key(KEY_SPACE)
            .arg(&self.name)
            .invoke_async(&mut redis)
            .await;
        let _: Result<(), _> = redis::pipe()
            .cmd("DEL")
            .arg(node_key(&self.name))
            .ignore()
            .cmd("SREM")
            .arg(KEY_NODES)
            .arg(&self.name)
            .ignore()
            .query_async(&mut redis)
            .await;
    }
}

/// A node's load over one beat.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub cpu: f64,
    pub forwarded_per_sec: u64,
    pub rooms: u64,
    pub room_members: u64,
    pub sessions: u64,
}

fn default_name(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(50)
        .collect();
    format!("{host}-{}", listen.port())
}

fn url_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split('/').next()?;
    host_port
        .parse::<SocketAddr>()
        .map(|a| a.ip().to_canonical())
        .ok()
        .or_else(|| host_port.parse::<IpAddr>().ok())
}

/// CPU time this process has used, from `/proc/self/stat` (Linux; 0 elsewhere).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Beats until `shutdown`; on a takeover, hands the space its chat ids; on a lost lease,
/// stops the server (see [`Cluster::lost`]). Leaves the cluster cleanly at the end.
pub async fn run(cluster: Arc<Cluster>, state: Arc<crate::AppState>, shutdown: CancellationToken) {
    let mut lease = lease::Lease::default();
    let mut first = true;
    let mut every = tokio::time::interval(BEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_cpu, mut last_forwarded, mut last_at) = (
        process_cpu(),
        state
            .sfu
            .metrics()
            .forwarded_packets
            .load(Ordering::Relaxed),
        Instant::now(),
    );
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        let (cpu, forwarded, now) = (
            process_cpu(),
            state
                .sfu
                .metrics()
                .forwarded_packets
                .load(Ordering::Relaxed),
            Instant::now(),
        );
        let secs = now.duration_since(last_at).as_secs_f64().max(0.001);
        let metrics = state.sfu.metrics();
        let load = Load {
            cpu: cpu.saturating_sub(last_cpu).as_secs_f64() / secs,
            forwarded_per_sec: (forwarded.saturating_sub(last_forwarded) as f64 / secs) as u64,
            rooms: metrics.rooms.load(Ordering::Relaxed),
            room_members: metrics.members.load(Ordering::Relaxed),
            sessions: state.sessions.len() as u64 + route::relayed(),
        };
        (last_cpu, last_forwarded, last_at) = (cpu, forwarded, now);
        let step =
            match tokio::time::timeout(REDIS_TIMEOUT * 2, cluster.beat(&mut lease, first, load))
                .await
            {
                Ok(Ok(step)) => {
                    if failing {
                        tracing::info!("cluster: Redis is reachable again");
                        failing = false;
                    }
                    first = false;
                    step
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::error!(
                            "cluster: Redis beat failed (tried again every second): {e:#}"
                        );
                        failing = true;
                    }
                    continue;
                }
                Err(_) => {
                    if !failing {
                        tracing::error!("cluster: Redis did not answer the beat in time");
                        failing = true;
                    }
                    continue;
                }
            };
        match step {
            lease::Step::Stay => {}
            lease::Step::TookOver => take_over(&cluster, &state).await,
            lease::Step::Follow(owner) => {
                tracing::info!(node = %cluster.name, %owner, "cluster: the space is on another node; clients entering here are relayed to it");
            }
            lease::Step::Lost(owner) => {
                tracing::error!(
                    node = %cluster.name, %owner,
                    "cluster: this node lost the space to another (it was cut off from Redis \
                     for longer than the lease); it stops so that one node serves the campus"
                );
                cluster.lost.cancel();
                shutdown.cancel();
                return;
            }
        }
    }
    cluster.leave().await;
}

/// This node has just become the space's owner: its chat ids go on after the store's, and
/// it knows the names reserved meanwhile.
async fn take_over(cluster: &Cluster, state: &Arc<crate::AppState>) {
    let storage = state.records.storage.clone();
    let read = tokio::task::spawn_blocking(move || {
        let last = storage.blocking().last_chat_id()?;
        let names = storage.blocking().reserved_names()?;
        anyhow::Ok((last, names))
    })
    .await;
    match read {
        Ok(Ok((last_chat_id, names))) => {
            state.reserved_names.extend(names);
            state
                .space
                .send(crate::space::SpaceCommand::TakeOver { last_chat_id })
                .await;
            tracing::info!(node = %cluster.name, "cluster: this node owns the space now");
        }
        Ok(Err(e)) => tracing::error!("cluster: taking the space over: reading the store: {e:#}"),
        Err(e) => tracing::error!("cluster: taking the space over: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_gives_its_ip() {
        assert_eq!(
            url_ip("http://10.0.0.5:8080"),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(url_ip("http://[::1]:80/x"), Some("::1".parse().unwrap()));
        assert_eq!(url_ip("http://campus.lan:80"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu() > Duration::ZERO);
    }
}
