//! The embedded TURN server's relays: each allocation's UDP socket, bound here (the `turn`
//! crate asks through [`RelayAddressGenerator`]) and wrapped so that it never sends to an
//! address the egress policy refuses. The [`Ledger`] counts allocations against their
//! quotas (per session credential and in all), knows which relay addresses are live (one
//! relay may send to another: two browsers that both relay) and which TURN user names hold
//! them, so that a session's end can delete them.

use crate::egress::EgressPolicy;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::UdpSocket;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

/// The session a TURN user name was issued to: `expiry:user` names `user`.
pub fn user_of(username: &str) -> &str {
    username.split_once(':').map_or(username, |(_, user)| user)
}

/// Why an allocation was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaFull {
    #[error("this session holds {0} relays, the most it may")]
    PerSession(usize),
    #[error("the server holds {0} relays, the most it may")]
    Total(usize),
}

#[derive(Default)]
struct Held {
    /// Live allocations per session (the user part of the TURN user name).
    per_user: HashMap<String, (usize, HashSet<String>)>,
    /// Relay addresses of live allocations, as clients see them.
    live: HashSet<SocketAddr>,
    total: usize,
}

/// The live allocations and their quotas.
pub struct Ledger {
    held: Mutex<Held>,
    per_session: usize,
    total: usize,
}

impl Ledger {
    pub fn new(per_session: usize, total: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            held: Mutex::new(Held::default()),
            per_session,
            total,
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic while holding this lock cannot leave the counts half-written (each
        // change is one statement), so a poisoned lock is still good.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `username` may make one more allocation now.
    pub fn admit(&self, username: &str) -> Result<(), QuotaFull> {
        let held = self.held();
        if held.total >= self.total {
            return Err(QuotaFull::Total(self.total));
        }
        let n = held.per_user.get(user_of(username)).map_or(0, |(n, _)| *n);
        if n >= self.per_session {
            return Err(QuotaFull::PerSession(self.per_session));
        }
        Ok(())
    }

    /// Counts a new allocation of `username` at `relay`; the slot gives it back.
    fn open(self: &Arc<Self>, username: &str, relay: SocketAddr) -> Result<Slot, QuotaFull> {
        self.admit(username)?;
        let mut held = self.held();
        held.total += 1;
        held.live.insert(relay);
        let entry = held
            .per_user
            .entry(user_of(username).to_owned())
            .or_default();
        entry.0 += 1;
        entry.1.insert(username.to_owned());
        Ok(Slot {
            ledger: self.clone(),
            username: username.to_owned(),
            relay,
            released: AtomicBool::new(false),
        })
    }

    /// Whether `addr` is the relay address of a live allocation.
    pub fn is_relay(&self, addr: SocketAddr) -> bool {
        self.held().live.contains(&addr)
    }

    /// The TURN user names `user`'s live allocations were made with.
    pub fn usernames_of(&self, user: &str) -> Vec<String> {
        self.held()
            .per_user
            .get(user)
            .map(|(_, names)| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Live allocations in all.
    pub fn total(&self) -> usize {
        self.held().total
    }
}

/// One counted allocation; released once, when its relay closes or is dropped.
struct Slot {
    ledger: Arc<Ledger>,
    username: String,
    relay: SocketAddr,
    released: AtomicBool,
}

impl Slot {
    fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut held = self.ledger.held();
        held.total = held.total.saturating_sub(1);
        held.live.remove(&self.relay);
        let user = user_of(&self.username);
        if let Some((n, _)) = held.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.per_user.remove(user);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// The user name of the `Allocate` request being handled on one listener. The `turn`
/// crate handles a listener's requests one at a time, so the gate sets it just before it
/// hands the request on, and the relay generator takes it.
#[derive(Default)]
pub struct PendingAllocate(Mutex<Option<String>>);

impl PendingAllocate {
    pub fn set(&self, username: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = username;
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Binds relays on `bind_ip`, on a free port of `ports`, offered to clients at `public_ip`.
pub struct Relays {
    pub bind_ip: IpAddr,
    pub public_ip: IpAddr,
    pub ports: RangeInclusive<u16>,
    pub ledger: Arc<Ledger>,
    pub policy: Arc<EgressPolicy>,
    pub pending: Arc<PendingAllocate>,
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        _use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let Some(username) = self.pending.take() else {
            return Err(turn::Error::Other(
                "an allocation without a user name".into(),
            ));
        };
        self.ledger
            .admit(&username)
            .map_err(|full| turn::Error::Other(full.to_string()))?;
        let socket = bind_in(self.bind_ip, &self.ports, requested_port).await?;
        let relay = SocketAddr::new(self.public_ip, socket.local_addr()?.port());
        let slot = self
            .ledger
            .open(&username, relay)
            .map_err(|full| turn::Error::Other(full.to_string()))?;
        tracing::debug!(%relay, user = user_of(&username), "TURN relay allocated");
        let conn = GuardedRelay {
            socket,
            policy: self.policy.clone(),
            slot,
        };
        Ok((Arc::new(conn), relay))
    }
}

/// A UDP socket on `ip` and a free port of `ports` (the one asked for, if it is in the
/// range), tried from a random place in the range so that relays do not pile up at its
/// start and a freed port is not handed out again at once.
async fn bind_in(
    ip: IpAddr,
    ports: &RangeInclusive<u16>,
    requested: u16,
) -> Result<UdpSocket, turn::Error> {
    if requested != 0 {
        if !ports.contains(&requested) {
            return Err(turn::Error::Other(format!(
                "port {requested} is outside turn_relay_ports"
            )));
        }
        return Ok(UdpSocket::bind(SocketAddr::new(ip, requested)).await?);
    }
    let (first, count) = (*ports.start(), ports.len());
    let start = rand::random_range(0..count);
    for i in 0..count {
        // `i + start < 2 * count` and `count <= 65536`: no overflow, and the sum is a port.
        let Ok(port) = u16::try_from(usize::from(first) + (start + i) % count) else {
            continue;
        };
        match UdpSocket::bind(SocketAddr::new(ip, port)).await {
            Ok(socket) => return Ok(socket),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(turn::Error::Other(
        "no free port left in turn_relay_ports".into(),
    ))
}

/// A relay's socket that sends only where the egress policy allows (or to another live
/// relay of this server).
struct GuardedRelay {
    socket: UdpSocket,
    policy: Arc<EgressPolicy>,
    slot: Slot,
}

#[async_trait]
impl Conn for GuardedRelay {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok(self.socket.recv_from(buf).await?)
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "a relay sends only to a peer".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        // The gate refuses such peers before a permission exists; this is the last line.
        if !self.slot.ledger.is_relay(target)
            && let Err(refused) = self.policy.check_peer(target)
        {
            tracing::debug!(%target, "TURN relay: datagram dropped: {refused}");
            return Ok(buf.len());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.slot.release();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn quotas_count_per_session_and_in_all_and_slots_give_back() {
        let ledger = Ledger::new(2, 3);
        let a1 = ledger.open("100:avatar1", addr(1)).expect("first");
        let a2 = ledger
            .open("200:avatar1", addr(2))
            .expect("second, renewed name");
        assert_eq!(
            ledger.open("300:avatar1", addr(3)).err(),
            Some(QuotaFull::PerSession(2))
        );
        let b1 = ledger
            .open("100:avatar2", addr(4))
            .expect("another session");
        assert_eq!(
            ledger.open("100:avatar3", addr(5)).err(),
            Some(QuotaFull::Total(3))
        );
        assert!(ledger.is_relay(addr(2)));
        let mut names = ledger.usernames_of("avatar1");
        names.sort();
        assert_eq!(names, ["100:avatar1", "200:avatar1"]);
        a2.release();
        a2.release();
        drop(a2);
        assert!(!ledger.is_relay(addr(2)));
        assert_eq!(ledger.usernames_of("avatar1").len(), 2, "names, not relays");
        assert!(
            ledger.admit("300:avatar1").is_ok(),
            "one of two places free again"
        );
        assert_eq!(ledger.total(), 2);
        drop((a1, b1));
        assert_eq!(ledger.total(), 0);
        assert!(ledger.usernames_of("avatar1").is_empty());
    }
}
