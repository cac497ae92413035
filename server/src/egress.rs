//! The egress policy: which addresses a client may make the server send to on its behalf.
//! Two paths take an address from a client: a TURN relay's peers (`CreatePermission`,
//! `ChannelBind`, `Send`) and the SFU's ICE checks towards a member's candidates. Without
//! this policy either one lets a browser reach services that only the server can reach:
//! loopback, the school's private network, the cloud's metadata address, the server's own
//! ports.
//!
//! By default only public unicast addresses are allowed. Loopback, private (RFC 1918,
//! CGNAT, IPv6 unique-local), link-local, multicast, broadcast, unspecified, documentation
//! and reserved addresses are refused, and so is every address of this machine. An
//! operator allows a range with `allowed_peer_ranges` (for a campus served on a LAN, say);
//! the machine's own addresses stay refused even inside an allowed range.
//!
//! One exception to "never the machine's own": the server's own media port (the SFU's
//! one UDP socket), opened with [`EgressPolicy::open_service`]. A browser that reaches
//! the server only through TURN (a firewall that lets out nothing but TCP 443) must have
//! its relay send to the SFU; that exact address and port is allowed, nothing else of the
//! machine ([`EgressPolicy::check_peer`]).
//!
//! This module decides; it sends nothing and owns no socket.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is an address of this server")]
    OwnAddress(IpAddr),
    #[error("{0} is a {1} address")]
    Special(IpAddr, &'static str),
}

/// The addresses clients may have the server send to.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Ranges the operator allows although they are special (not the machine's own).
    allowed: Vec<IpNet>,
    /// This machine's addresses: never a peer.
    own: Vec<IpAddr>,
    /// The server's own services a relay may send to (the SFU's media port).
    services: Arc<RwLock<Vec<SocketAddr>>>,
}

impl EgressPolicy {
    /// A policy allowing `allowed` besides public addresses, refusing `own`.
    pub fn new(allowed: Vec<IpNet>, own: Vec<IpAddr>) -> EgressPolicy {
        let own = own.into_iter().map(canonical).collect();
        EgressPolicy {
            allowed,
            own,
            services: Arc::default(),
        }
    }

    /// Lets relays send to `addr`, a service of this server itself (the SFU's media port),
    /// although its address is the machine's own. Every copy of the policy sees it.
    pub fn open_service(&self, addr: SocketAddr) {
        let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        // Only whole entries are pushed under the lock: a panic cannot leave it torn.
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        if !services.contains(&addr) {
            services.push(addr);
        }
    }

    /// Whether a client may have the server send to `addr`: [`Self::check`] on its
    /// address, except that an opened service of this server is allowed.
    pub fn check_peer(&self, addr: SocketAddr) -> Result<(), Refused> {
        let canonical_addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        if self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&canonical_addr)
        {
            return Ok(());
        }
        self.check(addr.ip())
    }

    /// The addresses of this machine's interfaces plus `extra` (the addresses the server is
    /// configured to listen on or to be reached at).
    pub fn own_addresses(extra: &[IpAddr]) -> Vec<IpAddr> {
        let mut own: Vec<IpAddr> = webrtc_util::ifaces::ifaces()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .collect();
        own.extend(extra.iter().copied().filter(|ip| !ip.is_unspecified()));
        own.sort();
        own.dedup();
        own
    }

    /// Whether a client may have the server send to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        if self.own.contains(&ip) {
            return Err(Refused::OwnAddress(ip));
        }
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match special(ip) {
            Some(kind) => Err(Refused::Special(ip, kind)),
            None => Ok(()),
        }
    }
}

/// Parses `allowed_peer_ranges` entries: CIDR ranges (`10.0.0.0/8`) or single addresses.
pub fn parse_ranges(ranges: &[String]) -> Result<Vec<IpNet>, String> {
    ranges
        .iter()
        .map(|r| {
            r.parse::<IpNet>()
                .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("{r:?} is not an address or a CIDR range like 10.0.0.0/8"))
        })
        .collect()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified (\"this network\")",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_multicast() => "multicast",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xfc00..=0xfdff => "unique-local (private)",
        0x2001 if s[1] == 0x0db8 => "documentation",
        // IPv4-compatible (deprecated) and NAT64 addresses embed an IPv4 address.
        0 if s[..6] == [0; 6] => "IPv4-compatible",
        0x64 if s[1] == 0xff9b => "NAT64",
        // 6to4 embeds an IPv4 address that may be private.
        0x2002 => "6to4",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test address")
    }

    #[test]
    fn an_opened_service_of_the_server_is_the_one_own_address_allowed() {
        let policy = EgressPolicy::new(Vec::new(), vec![ip("203.0.113.5")]);
        let media: SocketAddr = "203.0.113.5:7882".parse().unwrap();
        assert!(policy.check_peer(media).is_err(), "not before it is opened");
        let copy = policy.clone();
        policy.open_service(media);
        assert_eq!(copy.check_peer(media), Ok(()), "every copy sees it");
        // The same address as IPv4-mapped IPv6.
        assert_eq!(
            copy.check_peer("[::ffff:203.0.113.5]:7882".parse().unwrap()),
            Ok(())
        );
        // Any other port of the machine stays refused, and so does the address alone.
        assert!(copy.check_peer("203.0.113.5:22".parse().unwrap()).is_err());
        assert!(copy.check(ip("203.0.113.5")).is_err());
        // Other peers are judged as before.
        assert!(copy.check_peer("10.0.0.1:7882".parse().unwrap()).is_err());
        assert_eq!(copy.check_peer("8.8.8.8:53".parse().unwrap()), Ok(()));
    }

    #[test]
    fn only_public_unicast_is_allowed_by_default() {
        let policy = EgressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.10",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(policy.check(ip(refused)).is_err(), "{refused} was allowed");
        }
        for allowed in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1"] {
            assert_eq!(policy.check(ip(allowed)), Ok(()), "{allowed} was refused");
        }
    }

    #[test]
    fn an_allowed_range_opens_only_itself_and_never_the_servers_own_addresses() {
        let allowed = parse_ranges(&["10.0.0.0/8".into(), "127.0.0.2".into()]).expect("ranges");
        let policy = EgressPolicy::new(allowed, vec![ip("10.0.0.5"), ip("::ffff:127.0.0.1")]);
        assert_eq!(policy.check(ip("10.9.9.9")), Ok(()));
        assert_eq!(policy.check(ip("127.0.0.2")), Ok(()));
        assert!(matches!(
            policy.check(ip("10.0.0.5")),
            Err(Refused::OwnAddress(_))
        ));
        assert!(matches!(
            policy.check(ip("127.0.0.1")),
            Err(Refused::OwnAddress(_))
        ));
        assert!(matches!(
            policy.check(ip("192.168.0.1")),
            Err(Refused::Special(_, "private"))
        ));
    }

    #[test]
    fn bad_ranges_are_named() {
        let err = parse_ranges(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(parse_ranges(&["campus".into()]).is_err());
    }
}
