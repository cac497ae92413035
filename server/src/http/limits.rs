//! What connections may hold: the open-file limit (raised at start-up), the budget of
//! connections derived from it, and the count of connections per client IP.
//!
//! The arithmetic ([`ConnectionBudget::new`]): of the soft `RLIMIT_NOFILE` limit `N`,
//! - `reserve = clamp(N / 8, 32, 256)` files stay for the process itself: SQLite and its
//!   WAL, the listeners (HTTP, metrics, TURN's UDP and TCP), epoll, the runtime, logs;
//! - `http = clamp(N / 8, 16, 256)` for plain HTTP connections (page loads, `/healthz`,
//!   and WebSockets until their upgrade), a pool of its own so that sessions can never
//!   take the last connection `/healthz` needs;
//! - the rest, divided by [`FILES_PER_SESSION`], for sessions: one session may hold its
//!   WebSocket, an SFU peer connection's UDP socket, a TURN allocation's relay socket and
//!   the TCP connection it reaches TURN over: four files.
//!
//! Sessions are capped at `max_sessions + 16 + max_sessions / 16` (the few over
//! `max_sessions` can still be told `Unavailable` after Hello), or what the files allow if
//! that is less. With N = 1,024: 128 + 128 reserved, 192 sessions. With N = 20,000: 256 +
//! 256, 4,872 sessions (fewer than the default `max_sessions` of 5,000 plus slack, which
//! the log says at start-up).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The most files one session may hold (see the module doc).
pub const FILES_PER_SESSION: u64 = 4;

/// How many connections of each kind may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// Upgraded WebSocket sessions (each holds its place until the session ends).
    pub sessions: usize,
    /// Plain HTTP connections (and WebSockets until their upgrade).
    pub http: usize,
    /// Files left for the process itself.
    pub reserve: u64,
    /// The open-file limit this was derived from.
    pub open_files: u64,
}

impl ConnectionBudget {
    /// The budget for an open-file limit of `open_files` and `max_sessions`.
    pub fn new(open_files: u64, max_sessions: usize) -> ConnectionBudget {
        let reserve = (open_files / 8).clamp(32, 256);
        let http = (open_files / 8).clamp(16, 256);
        let for_sessions = open_files.saturating_sub(reserve + http) / FILES_PER_SESSION;
        let wanted = max_sessions.saturating_add(16 + max_sessions / 16);
        let sessions = usize::try_from(for_sessions)
            .unwrap_or(usize::MAX)
            .min(wanted)
            .max(1);
        ConnectionBudget {
            sessions,
            http: http as usize,
            reserve,
            open_files,
        }
    }

    /// The budget under this process's current soft open-file limit (1,024 if it cannot be
    /// read; no limit counts as 1,048,576).
    pub fn current(max_sessions: usize) -> ConnectionBudget {
        let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024)
            .min(MOST_OPEN_FILES);
        ConnectionBudget::new(soft, max_sessions)
    }
}

/// What happened to the open-file limit at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenFiles {
    /// The soft limit was raised from `from` to `to` (the hard limit).
    Raised { from: u64, to: u64 },
    /// The soft limit already was the hard limit.
    AtHard(u64),
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and logs what it did.
pub fn raise_open_file_limit() -> std::io::Result<OpenFiles> {
    let result = raise();
    match &result {
        Ok(OpenFiles::Raised { from, to }) => {
            tracing::info!("open-file limit raised from {from} to {to} (the hard limit)")
        }
        Ok(OpenFiles::AtHard(n)) => tracing::info!("open-file limit is {n} (the hard limit)"),
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
    result
}

/// Linux's default ceiling for open files (`fs.nr_open`): an unlimited hard limit cannot be
/// set as the soft one, this can.
const MOST_OPEN_FILES: u64 = 1 << 20;

fn raise() -> std::io::Result<OpenFiles> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let target = hard.min(MOST_OPEN_FILES);
    if soft >= target {
        return Ok(OpenFiles::AtHard(soft));
    }
    rlimit::setrlimit(rlimit::Resource::NOFILE, target, hard)?;
    let (now, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok(OpenFiles::Raised {
        from: soft,
        to: now,
    })
}

/// Counts open connections per client IP.
#[derive(Debug)]
pub struct PerIp {
    max: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its IP's count; dropping the last clone gives it back. The
/// connection task holds one, and so does the session task after an upgrade.
#[derive(Debug)]
pub struct IpSlot {
    counted: Option<(Arc<PerIp>, IpAddr)>,
}

impl PerIp {
    pub fn new(max: usize, exempt: Vec<IpAddr>) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            exempt: exempt.into_iter().map(|ip| ip.to_canonical()).collect(),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` if it has `max` open already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<IpSlot>> {
        let ip = ip.to_canonical();
        if self.exempt.contains(&ip) {
            return Some(Arc::new(IpSlot { counted: None }));
        }
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Arc::new(IpSlot {
            counted: Some((self.clone(), ip)),
        }))
    }

    /// A place that is not counted (a connection from another node of the cluster, which
    /// carries many clients' sessions).
    pub fn uncounted() -> Arc<IpSlot> {
        Arc::new(IpSlot { counted: None })
    }

    /// How many connections `ip` has open (exempt IPs: 0).
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is only counted up and down under the lock: a panic cannot leave it torn.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = &self.counted {
            let mut open = per_ip.lock();
            if let Some(n) = open.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_leaves_room_for_the_process_and_http() {
        let b = ConnectionBudget::new(1024, 5000);
        assert_eq!((b.reserve, b.http, b.sessions), (128, 128, 192));
        assert!(b.reserve + b.http as u64 + b.sessions as u64 * FILES_PER_SESSION <= 1024);
        let b = ConnectionBudget::new(256, 5000);
        assert_eq!((b.reserve, b.http, b.sessions), (32, 32, 48));
        let b = ConnectionBudget::new(20_000, 5000);
        assert_eq!((b.reserve, b.http, b.sessions), (256, 256, 4872));
    }

    #[test]
    fn a_large_limit_gives_max_sessions_and_some_slack() {
        let b = ConnectionBudget::new(1 << 20, 5000);
        assert_eq!(b.sessions, 5000 + 16 + 312);
        assert_eq!(b.http, 256);
        assert_eq!(ConnectionBudget::new(1 << 20, 2).sessions, 18);
    }

    #[test]
    fn a_tiny_limit_still_allows_one_session() {
        let b = ConnectionBudget::new(16, 5000);
        assert_eq!(b.sessions, 1);
        assert_eq!(b.http, 16);
    }

    #[test]
    fn per_ip_counts_until_the_last_holder_lets_go() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let per_ip = PerIp::new(2, vec!["127.0.0.1".parse().unwrap()]);
        let a = per_ip.take(ip).unwrap();
        let b = per_ip.take(ip).unwrap();
        assert!(per_ip.take(ip).is_none());
        assert!(per_ip.take("192.0.2.2".parse().unwrap()).is_some());
        let a2 = a.clone();
        drop(a);
        assert_eq!(per_ip.open(ip), 2, "a clone still holds the place");
        drop(a2);
        assert_eq!(per_ip.open(ip), 1);
        assert!(per_ip.take(ip).is_some());
        drop(b);
    }

    #[test]
    fn exempt_ips_are_not_counted_even_when_mapped() {
        let per_ip = PerIp::new(1, vec!["127.0.0.1".parse().unwrap()]);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| per_ip.take(mapped).unwrap()).collect();
        assert_eq!(held.len(), 10);
        assert_eq!(per_ip.open(mapped), 0);
    }
}
