//! Which room member's connection a datagram that reached the media port belongs to: the
//! routing decisions of [`super::media_port`], as a plain state machine with no I/O.
//!
//! Every member's connection shares one UDP socket, so each datagram is told apart by what
//! it says and where it came from, as LiveKit's UDP mux and str0m do:
//! 1. A STUN binding request (a client's ICE connectivity check) names the server's ICE
//!    username fragment: its USERNAME is `server-ufrag:client-ufrag`. The fragment says
//!    which connection it is for, and the source address is remembered for that
//!    connection (a *proven* address).
//! 2. Anything else (DTLS, SRTP, STUN responses and consent checks) goes by its source
//!    address.
//! 3. The rest is nobody's: the caller drops it and counts it.
//!
//! The server is a full ICE agent and sends checks of its own; the address it sends a
//! check to is remembered too (an *assumed* address), so that the answer finds its way
//! back even if the client's own check from that address was lost. An assumed address
//! never takes an address from another connection; a proven one does (a client that
//! reconnected from the same port).
//!
//! 4. RTP and RTCP from an SSRC beyond the connection's allowance are refused (see
//!    [`super::ssrc_quota`]): the caller drops them and counts them.
//!
//! Bounded: a connection has one username fragment and at most [`MAX_ADDRS_PER_CONN`]
//! addresses; a new one beyond that replaces the one that routed a datagram least
//! recently (so a flood of checks from new addresses cannot push out the path media
//! flows on). Everything a connection had is forgotten when it closes. A fragment that
//! changes (an ICE restart) replaces the old one; the addresses stay, since media may
//! still be flowing on them while the restart completes.
//!
//! Owns no socket and no connection: only ids.

use super::ssrc_quota::SsrcQuota;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::net::SocketAddr;

/// Addresses one connection may be reached from at once: a browser checks from each of its
/// candidates (a few per interface, its TURN relays), and one pair wins.
pub const MAX_ADDRS_PER_CONN: usize = 8;

/// The longest ICE username fragment taken (RFC 8839: 4 to 256 characters).
const MAX_UFRAG_LEN: usize = 256;

/// One connection on the media port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What is known about one connection.
#[derive(Debug, Default)]
struct Conn {
    ufrag: Option<Box<str>>,
    addrs: SmallVec<[SocketAddr; MAX_ADDRS_PER_CONN]>,
    ssrcs: SsrcQuota,
}

/// Where datagrams from one address go.
#[derive(Clone, Copy, Debug)]
struct AddrRoute {
    conn: ConnId,
    /// When it last routed a datagram (a count of routing decisions, not a time).
    used: u64,
}

/// The routing table of the media port. See the module docs.
#[derive(Debug, Default)]
pub struct Routes {
    conns: FxHashMap<ConnId, Conn>,
    by_ufrag: FxHashMap<Box<str>, ConnId>,
    by_addr: FxHashMap<SocketAddr, AddrRoute>,
    /// Counts routing decisions, for [`AddrRoute::used`].
    clock: u64,
}

impl Routes {
    /// A new connection, which nothing routes to yet.
    pub fn open(&mut self, conn: ConnId) {
        self.conns.entry(conn).or_default();
    }

    /// Forgets `conn`: its username fragment and its addresses.
    pub fn close(&mut self, conn: ConnId) {
        let Some(old) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(ufrag) = old.ufrag {
            self.by_ufrag.remove(&ufrag);
        }
        for addr in old.addrs {
            self.by_addr.remove(&addr);
        }
    }

    /// `conn`'s username fragment is now `ufrag` (it applied a local description); a
    /// previous one is forgotten. Returns false (and changes nothing) if `conn` is not open,
    /// the fragment is empty or too long, or another connection has it.
    pub fn set_ufrag(&mut self, conn: ConnId, ufrag: &str) -> bool {
        if ufrag.is_empty() || ufrag.len() > MAX_UFRAG_LEN {
            return false;
        }
        if let Some(&owner) = self.by_ufrag.get(ufrag) {
            return owner == conn;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let ufrag: Box<str> = ufrag.into();
        if let Some(old) = c.ufrag.replace(ufrag.clone()) {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(ufrag, conn);
        true
    }

    /// The connection `datagram` from `from` is for, if any. A client's check for a known
    /// username fragment proves its source address for that connection.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<ConnId> {
        self.clock += 1;
        if let Some(ufrag) = binding_request_ufrag(datagram)
            && let Some(&conn) = self.by_ufrag.get(ufrag)
        {
            self.learn(conn, from, true);
            return Some(conn);
        }
        let route = self.by_addr.get_mut(&from)?;
        route.used = self.clock;
        Some(route.conn)
    }

    /// Whether `datagram`, routed to `conn`, may reach it: not RTP or RTCP from an SSRC
    /// beyond the connection's allowance.
    pub fn admit(&mut self, conn: ConnId, datagram: &[u8]) -> bool {
        self.conns
            .get_mut(&conn)
            .is_some_and(|c| c.ssrcs.admit(datagram))
    }

    /// `conn` sent `datagram` to `to`: if it is a connectivity check, answers from `to`
    /// are assumed to be for `conn` (unless `to` already routes somewhere).
    pub fn sent(&mut self, conn: ConnId, to: SocketAddr, datagram: &[u8]) {
        if is_binding_request(datagram) {
            self.learn(conn, to, false);
        }
    }

    /// Datagrams from `addr` go to `conn` from now on (an assumed address only if `addr`
    /// routes nowhere yet).
    fn learn(&mut self, conn: ConnId, addr: SocketAddr, proven: bool) {
        let now = self.clock;
        if let Some(route) = self.by_addr.get_mut(&addr) {
            if route.conn == conn {
                route.used = now;
                return;
            }
            if !proven {
                return;
            }
            let previous = route.conn;
            self.by_addr.remove(&addr);
            if let Some(c) = self.conns.get_mut(&previous) {
                c.addrs.retain(|a| *a != addr);
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.addrs.len() >= MAX_ADDRS_PER_CONN {
            let by_addr = &self.by_addr;
            let stalest = c
                .addrs
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| by_addr.get(a).map_or(0, |r| r.used))
                .map(|(i, _)| i);
            if let Some(i) = stalest {
                let gone = c.addrs.swap_remove(i);
                self.by_addr.remove(&gone);
            }
        }
        c.addrs.push(addr);
        self.by_addr.insert(addr, AddrRoute { conn, used: now });
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Addresses that route somewhere, over all connections.
    pub fn addrs(&self) -> usize {
        self.by_addr.len()
    }

    /// The addresses that route to `conn`.
    pub fn addrs_of(&self, conn: ConnId) -> &[SocketAddr] {
        self.conns.get(&conn).map_or(&[], |c| &c.addrs[..])
    }
}

/// The STUN magic cookie (RFC 5389), in every STUN message's bytes 4 to 8.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// The type of a binding request, and of the USERNAME attribute.
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const USERNAME: [u8; 2] = [0x00, 0x06];

/// Whether `datagram` is a STUN binding request (an ICE connectivity check).
pub fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[..2] == BINDING_REQUEST && datagram[4..8] == MAGIC_COOKIE
}

/// The server's username fragment named by a connectivity check: the part of its USERNAME
/// before the colon. `None` for anything else, including a malformed message.
pub fn binding_request_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_binding_request(datagram) {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let attrs = datagram.get(20..20 + declared)?;
    let mut rest = attrs;
    while rest.len() >= 4 {
        let kind = [rest[0], rest[1]];
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (server, _client) = username.split_once(':')?;
            return Some(server);
        }
        // Attributes are padded to four bytes; the last one's padding may be missing.
        rest = rest.get(4 + len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A connectivity check whose USERNAME is `username`, with another attribute before it.
    pub(crate) fn check(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY (4 bytes), then USERNAME, padded.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&USERNAME);
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&BINDING_REQUEST);
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    /// A binding success response: no USERNAME.
    fn response() -> Vec<u8> {
        let mut msg = vec![0x01, 0x01, 0, 0];
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 7], port))
    }

    const RTP: &[u8] = &[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn the_username_names_the_servers_fragment() {
        assert_eq!(binding_request_ufrag(&check("srv1:cli1")), Some("srv1"));
        assert_eq!(binding_request_ufrag(&check("no-colon")), None);
        assert_eq!(binding_request_ufrag(&response()), None);
        assert_eq!(binding_request_ufrag(RTP), None);
        // Truncated anywhere, or lying about its length: no answer, no panic.
        let full = check("srv1:cli1");
        for end in 0..full.len() {
            assert_eq!(binding_request_ufrag(&full[..end]), None, "cut at {end}");
        }
        let mut lying = full.clone();
        lying[2..4].copy_from_slice(&0xFFFFu16.to_be_bytes());
        assert_eq!(binding_request_ufrag(&lying), None);
        let mut attr_lying = full;
        attr_lying[22..24].copy_from_slice(&0xFFF0u16.to_be_bytes());
        assert_eq!(binding_request_ufrag(&attr_lying), None);
    }

    #[test]
    fn checks_route_by_fragment_and_teach_the_address() {
        let mut routes = Routes::default();
        let (a, b) = (ConnId(1), ConnId(2));
        routes.open(a);
        routes.open(b);
        assert!(routes.set_ufrag(a, "ufragA"));
        assert!(routes.set_ufrag(b, "ufragB"));
        // Media from an address nobody checked from goes nowhere.
        assert_eq!(routes.route(addr(1000), RTP), None);
        assert_eq!(routes.route(addr(1000), &check("ufragA:x")), Some(a));
        assert_eq!(routes.route(addr(1000), RTP), Some(a));
        assert_eq!(routes.route(addr(2000), &check("ufragB:y")), Some(b));
        assert_eq!(routes.route(addr(2000), &response()), Some(b));
        assert_eq!(routes.route(addr(1000), RTP), Some(a));
        // An unknown fragment from a known address still goes by the address (a consent
        // check with the fragment an ICE restart replaced); from elsewhere, nowhere.
        assert_eq!(routes.route(addr(1000), &check("old:x")), Some(a));
        assert_eq!(routes.route(addr(3000), &check("old:x")), None);
        assert_eq!(routes.addrs_of(a), &[addr(1000)]);
    }

    #[test]
    fn a_fragment_belongs_to_one_connection() {
        let mut routes = Routes::default();
        routes.open(ConnId(1));
        routes.open(ConnId(2));
        assert!(routes.set_ufrag(ConnId(1), "same"));
        assert!(!routes.set_ufrag(ConnId(2), "same"));
        assert!(
            routes.set_ufrag(ConnId(1), "same"),
            "setting it again is fine"
        );
        assert!(!routes.set_ufrag(ConnId(3), "other"), "not open");
        assert!(!routes.set_ufrag(ConnId(2), ""));
        assert!(!routes.set_ufrag(ConnId(2), &"x".repeat(MAX_UFRAG_LEN + 1)));
        assert_eq!(routes.route(addr(1), &check("same:c")), Some(ConnId(1)));
    }

    #[test]
    fn an_ice_restart_replaces_the_fragment_and_keeps_the_addresses() {
        let mut routes = Routes::default();
        let a = ConnId(1);
        routes.open(a);
        routes.set_ufrag(a, "first");
        routes.route(addr(1000), &check("first:c"));
        assert!(routes.set_ufrag(a, "second"));
        assert_eq!(routes.route(addr(5000), &check("first:c")), None);
        assert_eq!(routes.route(addr(5000), &check("second:c")), Some(a));
        assert_eq!(routes.route(addr(1000), RTP), Some(a), "media goes on");
        // The old fragment is free for another connection.
        routes.open(ConnId(2));
        assert!(routes.set_ufrag(ConnId(2), "first"));
    }

    #[test]
    fn each_connection_has_its_own_ssrc_allowance_and_a_new_one_starts_afresh() {
        use super::super::ssrc_quota::MAX_SSRCS_PER_KIND;
        let rtp = |ssrc: u32| {
            let mut p = RTP.to_vec();
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            p
        };
        let mut routes = Routes::default();
        let (a, b) = (ConnId(1), ConnId(2));
        routes.open(a);
        routes.open(b);
        for ssrc in 0..MAX_SSRCS_PER_KIND as u32 {
            assert!(routes.admit(a, &rtp(ssrc)));
        }
        assert!(!routes.admit(a, &rtp(u32::MAX)), "a's allowance is spent");
        assert!(routes.admit(b, &rtp(u32::MAX)), "b's is its own");
        assert!(
            !routes.admit(ConnId(3), &rtp(1)),
            "not open: nothing is admitted"
        );
        routes.close(a);
        routes.open(a);
        assert!(
            routes.admit(a, &rtp(u32::MAX)),
            "closing forgot a's sources"
        );
    }

    #[test]
    fn closing_forgets_the_fragment_and_every_address() {
        let mut routes = Routes::default();
        let (a, b) = (ConnId(1), ConnId(2));
        routes.open(a);
        routes.open(b);
        routes.set_ufrag(a, "ufragA");
        routes.set_ufrag(b, "ufragB");
        for port in 1..=3 {
            routes.route(addr(port), &check("ufragA:c"));
        }
        routes.sent(a, addr(9), &check("c:ufragA"));
        routes.route(addr(100), &check("ufragB:c"));
        assert_eq!(routes.addrs(), 5);
        routes.close(a);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes.addrs(), 1);
        for port in [1, 2, 3, 9] {
            assert_eq!(routes.route(addr(port), RTP), None);
        }
        assert_eq!(routes.route(addr(4), &check("ufragA:c")), None);
        assert_eq!(routes.route(addr(100), RTP), Some(b));
        routes.close(b);
        assert!(routes.is_empty());
        assert_eq!(routes.addrs(), 0);
        routes.close(b);
    }

    /// Checks from ever more addresses keep a connection at its bound, and the address
    /// media flows on is never the one pushed out.
    #[test]
    fn addresses_per_connection_are_bounded_and_the_busiest_stays() {
        let mut routes = Routes::default();
        let a = ConnId(1);
        routes.open(a);
        routes.set_ufrag(a, "ufragA");
        routes.route(addr(1), &check("ufragA:c"));
        for port in 2..1000 {
            routes.route(addr(port), &check("ufragA:c"));
            // Media keeps flowing on the first address.
            assert_eq!(routes.route(addr(1), RTP), Some(a));
            assert!(routes.addrs_of(a).len() <= MAX_ADDRS_PER_CONN);
        }
        assert_eq!(routes.addrs(), MAX_ADDRS_PER_CONN);
        assert!(routes.addrs_of(a).contains(&addr(1)));
        assert!(routes.addrs_of(a).contains(&addr(999)));
        assert_eq!(routes.route(addr(2), RTP), None, "pushed out long ago");
        // The server's own checks are bounded the same way.
        for port in 2000..3000 {
            routes.sent(a, addr(port), &check("c:ufragA"));
        }
        assert_eq!(routes.addrs(), MAX_ADDRS_PER_CONN);
    }

    #[test]
    fn the_servers_checks_teach_where_answers_come_from_without_stealing() {
        let mut routes = Routes::default();
        let (a, b) = (ConnId(1), ConnId(2));
        routes.open(a);
        routes.open(b);
        routes.set_ufrag(a, "ufragA");
        routes.set_ufrag(b, "ufragB");
        // Media sent somewhere teaches nothing; a check does.
        routes.sent(a, addr(1), RTP);
        assert_eq!(routes.route(addr(1), &response()), None);
        routes.sent(a, addr(1), &check("c:ufragA"));
        assert_eq!(routes.route(addr(1), &response()), Some(a));
        // b's client named an address a already uses: b's checks there do not take it.
        routes.sent(b, addr(1), &check("c:ufragB"));
        assert_eq!(routes.route(addr(1), RTP), Some(a));
        // A check from the address proving it is b's does (a client that reconnected).
        assert_eq!(routes.route(addr(1), &check("ufragB:c")), Some(b));
        assert_eq!(routes.route(addr(1), RTP), Some(b));
        assert!(routes.addrs_of(a).is_empty());
        assert_eq!(routes.addrs_of(b), &[addr(1)]);
        // An assumed address is proven by a check from it, and stays.
        routes.sent(a, addr(2), &check("c:ufragA"));
        routes.route(addr(2), &check("ufragA:c"));
        routes.sent(b, addr(2), &check("c:ufragB"));
        assert_eq!(routes.route(addr(2), RTP), Some(a));
    }
}
