//! Per-address session quotas: how many sessions one address may hold at once
//! (`max_sessions_per_ip`) and how fast it may open new ones (`session_joins_per_ip_per_minute`,
//! a token bucket holding half a minute's worth, so a class arriving together gets in).
//!
//! IPv6 addresses count by their /64 prefix (one subscriber's network, which can hold
//! billions of addresses); IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! The table is bounded: an address is remembered while it holds a session, and after its
//! last session only until its bucket has filled again (then forgetting it changes nothing).
//! Those idle entries are swept when the table grows; if there are still more than
//! [`MAX_IDLE_ENTRIES`] (someone cycling through very many addresses), the idle ones are
//! all dropped: forgetting join rates lets some joins through, whereas refusing unknown
//! addresses would lock everyone out.

use super::rate_limit::RateLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Idle entries (no session, bucket still refilling) the table keeps at most.
pub const MAX_IDLE_ENTRIES: usize = 16 * 1024;

/// Why a new session from an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address holds `max_sessions_per_ip` sessions already.
    TooMany(usize),
    /// The address opens sessions faster than `session_joins_per_ip_per_minute`.
    TooFast(u32),
}

#[derive(Debug)]
struct Entry {
    sessions: usize,
    joins: RateLimit,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// Table size at which idle entries are next swept.
    sweep_at: usize,
}

/// The quotas of every address, shared by all sessions.
#[derive(Debug)]
pub struct IpQuotas {
    /// 0: no limit.
    max_sessions: usize,
    /// 0: no limit.
    joins_per_minute: u32,
    table: Arc<Mutex<Table>>,
}

/// A session's place in its address's quota, given back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    key: IpAddr,
    table: Arc<Mutex<Table>>,
}

/// The address quotas count by: IPv4 as is, IPv6 by its /64.
pub fn quota_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic while holding the lock cannot leave the table inconsistent (every change is
    // one insert, remove or counter step), so a poisoned lock is used as is.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

impl IpQuotas {
    pub fn new(max_sessions: usize, joins_per_minute: u32) -> Self {
        IpQuotas {
            max_sessions,
            joins_per_minute,
            table: Arc::new(Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: 1024,
            })),
        }
    }

    /// Takes a session slot for `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<IpSlot, Refusal> {
        let key = quota_key(ip);
        let now = Instant::now();
        let mut table = lock(&self.table);
        if table.entries.len() >= table.sweep_at {
            sweep(&mut table, now);
        }
        let per_minute = self.joins_per_minute;
        let entry = table.entries.entry(key).or_insert_with(|| Entry {
            sessions: 0,
            joins: RateLimit::new(
                f64::from(per_minute) / 60.0,
                (f64::from(per_minute) / 2.0).max(1.0),
            ),
        });
        if self.max_sessions > 0 && entry.sessions >= self.max_sessions {
            return Err(Refusal::TooMany(self.max_sessions));
        }
        if per_minute > 0 && !entry.joins.allow_at(now) {
            return Err(Refusal::TooFast(per_minute));
        }
        entry.sessions += 1;
        Ok(IpSlot {
            key,
            table: self.table.clone(),
        })
    }

    /// Addresses remembered now (tests, metrics).
    pub fn tracked(&self) -> usize {
        lock(&self.table).entries.len()
    }
}

/// Forgets idle addresses whose bucket has filled again; if too many idle ones are left,
/// forgets them all. The next sweep comes when the table has doubled.
fn sweep(table: &mut Table, now: Instant) {
    table
        .entries
        .retain(|_, e| e.sessions > 0 || !e.joins.is_full_at(now));
    let idle = table.entries.values().filter(|e| e.sessions == 0).count();
    if idle > MAX_IDLE_ENTRIES {
        tracing::warn!(
            idle,
            "per-address join rates forgotten: too many addresses joined recently"
        );
        table.entries.retain(|_, e| e.sessions > 0);
    }
    table.sweep_at = (table.entries.len() * 2).max(1024);
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        if let Some(entry) = table.entries.get_mut(&self.key) {
            entry.sessions = entry.sessions.saturating_sub(1);
            if entry.sessions == 0 && entry.joins.is_full_at(Instant::now()) {
                table.entries.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a literal address")
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(quota_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            quota_key(ip("2001:db8:1:2:aaaa::1")),
            quota_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(quota_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(quota_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn concurrent_sessions_are_capped_and_given_back() {
        let quotas = IpQuotas::new(2, 0);
        let a = quotas.admit(ip("192.0.2.1")).expect("first");
        let _b = quotas.admit(ip("192.0.2.1")).expect("second");
        assert_eq!(
            quotas.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::TooMany(2)
        );
        assert!(
            quotas.admit(ip("192.0.2.2")).is_ok(),
            "other addresses go on"
        );
        drop(a);
        assert!(quotas.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn joins_are_rate_limited_per_address() {
        let quotas = IpQuotas::new(0, 6);
        let slots: Vec<IpSlot> = (0..3)
            .map(|_| quotas.admit(ip("192.0.2.1")).expect("within the burst"))
            .collect();
        assert_eq!(
            quotas.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::TooFast(6)
        );
        drop(slots);
        // Closing sessions does not give joins back.
        assert!(quotas.admit(ip("192.0.2.1")).is_err());
        assert!(quotas.admit(ip("192.0.2.9")).is_ok());
    }

    #[test]
    fn the_table_forgets_idle_addresses() {
        // Many addresses joining once each, faster than their buckets refill: the table
        // stays bounded all the same.
        let quotas = IpQuotas::new(0, 60);
        for i in 0..(3 * MAX_IDLE_ENTRIES as u32) {
            drop(quotas.admit(IpAddr::from(i.to_be_bytes())));
            assert!(quotas.tracked() <= 2 * MAX_IDLE_ENTRIES);
        }
        // With no joins limit, an idle address is forgotten at once.
        let quotas = IpQuotas::new(10, 0);
        for i in 0..5000u32 {
            drop(quotas.admit(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(quotas.tracked(), 0);
        let held: Vec<IpSlot> = (0..3000u32)
            .filter_map(|i| quotas.admit(IpAddr::from(i.to_be_bytes())).ok())
            .collect();
        assert_eq!(quotas.tracked(), 3000);
        drop(held);
        assert_eq!(quotas.tracked(), 0);
    }
}
