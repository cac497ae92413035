//! The gate in front of the embedded TURN server: every datagram a client sends to the
//! TURN port (over UDP, or framed over TCP) passes here before the `turn` crate sees it,
//! and every answer on its way out. The crate has no hook for these rules, so the gate
//! reads the STUN messages itself and answers the refused ones:
//!
//! - `CreatePermission` and `ChannelBind` for a peer the egress policy refuses get
//!   403 Forbidden; a `Send` indication to one is dropped. A relay thus never gets a
//!   permission for loopback, private or the server's own addresses.
//! - `Allocate` with a user name whose expiry has passed gets 401: credentials are short
//!   lived for new relays (live ones are refreshed with the name they were made with).
//!   One over the session's or the server's quota gets 486 Allocation Quota Reached.
//! - A TURN request without a nonce the server handed out makes the crate remember a new
//!   nonce for an hour, and UDP sources can be spoofed; such requests are metered per
//!   source address and in all, beyond which they are dropped (a client retransmits).
//!   The nonces the crate hands out are seen on the way out, so the gate knows them.

use super::credentials::{self, Revocations};
use super::relays::{Ledger, PendingAllocate, user_of};
use crate::egress::EgressPolicy;
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use stun::attributes::{ATTR_NONCE, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, MAGIC_COOKIE, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND, Message,
    MessageType, Method, Setter,
};
use webrtc_util::Conn;

/// How long the `turn` crate keeps a nonce it handed out.
const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// New nonces one source address may cause: a burst (a browser opening a few peer
/// connections, each asking over UDP and TCP), then a steady rate.
const CHALLENGES_PER_SOURCE: (f64, f64) = (60.0, 5.0);
/// Source addresses metered at once; beyond, unknown sources share the global budget only.
const MAX_SOURCES: usize = 16 * 1024;

/// What the gate does with one datagram from a client.
#[derive(Debug, PartialEq)]
enum Verdict {
    Pass,
    Drop,
    Answer(Vec<u8>),
}

/// A token bucket on a caller's clock.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, (burst, per_sec): (f64, f64), now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The nonces handed out, and the budgets for new ones.
struct Challenges {
    known: HashMap<String, Instant>,
    per_source: HashMap<IpAddr, Bucket>,
    global: Bucket,
    global_rate: (f64, f64),
    pruned: Instant,
}

impl Challenges {
    fn new(per_sec: f64, now: Instant) -> Challenges {
        let global_rate = (per_sec * 10.0, per_sec);
        Challenges {
            known: HashMap::new(),
            per_source: HashMap::new(),
            global: Bucket::full(global_rate.0, now),
            global_rate,
            pruned: now,
        }
    }

    fn is_known(&self, nonce: &str, now: Instant) -> bool {
        self.known
            .get(nonce)
            .is_some_and(|at| now.saturating_duration_since(*at) < NONCE_LIFETIME)
    }

    /// Whether a request from `source` may make the server hand out a new nonce.
    fn admit_new(&mut self, source: IpAddr, now: Instant) -> bool {
        self.prune(now);
        if !self.per_source.contains_key(&source) && self.per_source.len() < MAX_SOURCES {
            self.per_source
                .insert(source, Bucket::full(CHALLENGES_PER_SOURCE.0, now));
        }
        let source_ok = self
            .per_source
            .get_mut(&source)
            .is_none_or(|b| b.take(CHALLENGES_PER_SOURCE, now));
        source_ok && self.global.take(self.global_rate, now)
    }

    fn handed_out(&mut self, nonce: String, now: Instant) {
        self.known.insert(nonce, now);
    }

    /// Forgets expired nonces and sources whose budget is full again, once a second.
    fn prune(&mut self, now: Instant) {
        if now.saturating_duration_since(self.pruned) < Duration::from_secs(1) {
            return;
        }
        self.pruned = now;
        self.known
            .retain(|_, at| now.saturating_duration_since(*at) < NONCE_LIFETIME);
        let refill = Duration::from_secs_f64(CHALLENGES_PER_SOURCE.0 / CHALLENGES_PER_SOURCE.1);
        self.per_source
            .retain(|_, b| now.saturating_duration_since(b.at) < refill);
    }
}

/// What the gate checks against, shared by the UDP and TCP listeners.
pub struct GateRules {
    pub policy: Arc<EgressPolicy>,
    pub ledger: Arc<Ledger>,
    pub revoked: Arc<Revocations>,
    /// New nonces per second the whole server hands out at most (bursts of ten times that).
    pub challenges_per_sec: f64,
}

/// One listener's datagrams, seen through the gate.
pub struct TurnGate {
    inner: Arc<dyn Conn + Send + Sync>,
    rules: Arc<GateRules>,
    pending: Arc<PendingAllocate>,
    challenges: Mutex<Challenges>,
}

impl TurnGate {
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        rules: Arc<GateRules>,
        pending: Arc<PendingAllocate>,
    ) -> TurnGate {
        let challenges = Mutex::new(Challenges::new(rules.challenges_per_sec, Instant::now()));
        TurnGate {
            inner,
            rules,
            pending,
            challenges,
        }
    }

    fn challenges(&self) -> std::sync::MutexGuard<'_, Challenges> {
        // Each change is one statement: a poisoned lock still holds whole maps.
        self.challenges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inspect(&self, datagram: &[u8], from: SocketAddr) -> Verdict {
        if !stun::message::is_message(datagram) {
            return Verdict::Pass; // ChannelData: its channel was bound through the gate.
        }
        let mut m = Message::new();
        m.raw = datagram.to_vec();
        if m.decode().is_err() {
            return Verdict::Pass; // The crate answers malformed messages itself.
        }
        let (method, class) = (m.typ.method, m.typ.class);
        if class == CLASS_INDICATION && method == METHOD_SEND {
            return match self.refused_peer(&m) {
                Some(why) => {
                    tracing::debug!(%from, "TURN Send dropped: {why}");
                    Verdict::Drop
                }
                None => Verdict::Pass,
            };
        }
        if class != CLASS_REQUEST
            || ![
                METHOD_ALLOCATE,
                METHOD_REFRESH,
                METHOD_CREATE_PERMISSION,
                METHOD_CHANNEL_BIND,
            ]
            .contains(&method)
        {
            return Verdict::Pass;
        }
        if (method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND)
            && let Some(why) = self.refused_peer(&m)
        {
            tracing::info!(%from, "TURN permission refused: {why}");
            return answer(&m, method, CODE_FORBIDDEN, &why);
        }
        let nonce = text(&m, ATTR_NONCE);
        let now = Instant::now();
        {
            let mut challenges = self.challenges();
            let known = nonce.is_some_and(|n| challenges.is_known(&n, now));
            if !known && !challenges.admit_new(from.ip(), now) {
                return Verdict::Drop;
            }
        }
        if method == METHOD_ALLOCATE {
            let username = text(&m, ATTR_USERNAME);
            if let Some(name) = &username {
                if let Err(refused) = credentials::check_username(name, SystemTime::now()) {
                    tracing::info!(%from, "TURN allocation refused: {refused}");
                    return answer(&m, method, CODE_UNAUTHORIZED, &refused.to_string());
                }
                if self.rules.revoked.is_revoked(user_of(name)) {
                    return answer(&m, method, CODE_UNAUTHORIZED, "the session has ended");
                }
                if let Err(full) = self.rules.ledger.admit(name) {
                    tracing::info!(%from, user = user_of(name), "TURN allocation refused: {full}");
                    return answer(&m, method, CODE_ALLOC_QUOTA_REACHED, &full.to_string());
                }
            }
            self.pending.set(username);
        }
        Verdict::Pass
    }

    /// Why one of the message's peer addresses is refused, if one is.
    fn refused_peer(&self, m: &Message) -> Option<String> {
        let mut peers = 0;
        for attr in m
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        {
            peers += 1;
            let Some(peer) = xor_address(&attr.value, &m.transaction_id.0) else {
                return Some("a malformed peer address".into());
            };
            if self.rules.ledger.is_relay(peer) {
                continue; // Another relay of this server: the traffic stays in TURN.
            }
            if let Err(refused) = self.rules.policy.check_peer(peer) {
                return Some(format!("peer {peer}: {refused}"));
            }
        }
        (peers == 0).then(|| "no peer address".to_owned())
    }

    /// Remembers the nonces the crate hands out in its answers.
    fn observe_answer(&self, datagram: &[u8]) {
        // Only error responses carry new nonces; skip the rest without parsing.
        if datagram.len() < 20 || datagram[0] & 0x01 == 0 || datagram[1] & 0x10 == 0 {
            return;
        }
        let mut m = Message::new();
        m.raw = datagram.to_vec();
        if m.decode().is_ok()
            && m.typ.class == CLASS_ERROR_RESPONSE
            && let Some(nonce) = text(&m, ATTR_NONCE)
        {
            self.challenges().handed_out(nonce, Instant::now());
        }
    }
}

/// A text attribute's value.
fn text(m: &Message, attr: stun::attributes::AttrType) -> Option<String> {
    m.get(attr).ok().and_then(|v| String::from_utf8(v).ok())
}

/// An error response to `m` with `code` and `reason`.
fn answer(m: &Message, method: Method, code: ErrorCode, reason: &str) -> Verdict {
    let mut out = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(m.transaction_id),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().iter().take(120).copied().collect(),
        }),
    ];
    match out.build(&setters) {
        Ok(()) => Verdict::Answer(out.raw),
        Err(_) => Verdict::Drop,
    }
}

/// Decodes an XOR-PEER-ADDRESS value (RFC 5389 §15.2).
fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match family {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|i| {
                raw[i] ^ cookie[i]
            })))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let key: Vec<u8> = cookie.iter().chain(transaction).copied().collect();
            IpAddr::V6(Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| {
                raw[i] ^ key[i]
            })))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[async_trait]
impl Conn for TurnGate {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            match self.inspect(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Drop => {}
                Verdict::Answer(reply) => {
                    let _ = self.inner.send_to(&reply, from).await;
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.observe_answer(buf);
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// The crate closes an allocation's listener when the allocation ends; the listener is
    /// shared by every client, so it is closed only by the server's shutdown.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::agent::TransactionId;
    use stun::message::BINDING_REQUEST;
    use turn::proto::peeraddr::PeerAddress;

    fn gate(policy: EgressPolicy) -> (TurnGate, Arc<GateRules>) {
        struct Nowhere;
        #[async_trait]
        impl Conn for Nowhere {
            async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
                Ok(())
            }
            async fn recv(&self, _: &mut [u8]) -> webrtc_util::Result<usize> {
                Ok(0)
            }
            async fn recv_from(&self, _: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
                Err(webrtc_util::Error::Other("nothing".into()))
            }
            async fn send(&self, b: &[u8]) -> webrtc_util::Result<usize> {
                Ok(b.len())
            }
            async fn send_to(&self, b: &[u8], _: SocketAddr) -> webrtc_util::Result<usize> {
                Ok(b.len())
            }
            fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
                Ok(SocketAddr::from(([127, 0, 0, 1], 3478)))
            }
            fn remote_addr(&self) -> Option<SocketAddr> {
                None
            }
            async fn close(&self) -> webrtc_util::Result<()> {
                Ok(())
            }
            fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
                self
            }
        }
        let rules = Arc::new(GateRules {
            policy: Arc::new(policy),
            ledger: Ledger::new(4, 16),
            revoked: Arc::new(Revocations::default()),
            challenges_per_sec: 1.0,
        });
        let gate = TurnGate::new(Arc::new(Nowhere), rules.clone(), Arc::default());
        (gate, rules)
    }

    fn request(method: Method, peers: &[SocketAddr]) -> Vec<u8> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        for p in peers {
            setters.push(Box::new(PeerAddress {
                ip: p.ip(),
                port: p.port(),
            }));
        }
        m.build(&setters).expect("a message");
        m.raw
    }

    fn code_of(verdict: &Verdict) -> Option<u16> {
        let Verdict::Answer(raw) = verdict else {
            return None;
        };
        let mut m = Message::new();
        m.raw = raw.clone();
        m.decode().ok()?;
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).ok()?;
        Some(code.code.0)
    }

    use stun::message::Getter;

    #[test]
    fn permissions_for_refused_peers_get_403_and_public_ones_pass() {
        let (gate, _) = gate(EgressPolicy::default());
        let from = SocketAddr::from(([203, 0, 114, 9], 5000));
        for peer in ["127.0.0.1:9", "10.0.0.1:9", "[::1]:9", "169.254.169.254:80"] {
            let peer: SocketAddr = peer.parse().expect("peer");
            for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
                let v = gate.inspect(&request(method, &[peer]), from);
                assert_eq!(code_of(&v), Some(403), "{peer} {method:?}");
            }
        }
        // One refused peer among allowed ones refuses the request.
        let mixed = request(
            METHOD_CREATE_PERMISSION,
            &[
                "8.8.8.8:9".parse().expect("peer"),
                "127.0.0.1:9".parse().expect("peer"),
            ],
        );
        assert_eq!(code_of(&gate.inspect(&mixed, from)), Some(403));
        let public = request(
            METHOD_CREATE_PERMISSION,
            &["8.8.8.8:9".parse().expect("peer")],
        );
        assert_eq!(gate.inspect(&public, from), Verdict::Pass);
        // Binding requests are STUN, not TURN: always through.
        let mut binding = Message::new();
        binding
            .build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .expect("binding");
        assert_eq!(gate.inspect(&binding.raw, from), Verdict::Pass);
    }

    #[test]
    fn peer_addresses_decode_as_the_turn_crate_encodes_them() {
        for peer in ["1.2.3.4:5678", "[2606:4700::1]:443"] {
            let peer: SocketAddr = peer.parse().expect("peer");
            let raw = request(METHOD_CREATE_PERMISSION, &[peer]);
            let mut m = Message::new();
            m.raw = raw;
            m.decode().expect("decodes");
            let attr = &m.attributes.0[0];
            assert_eq!(xor_address(&attr.value, &m.transaction_id.0), Some(peer));
        }
    }

    #[test]
    fn requests_without_a_known_nonce_are_metered() {
        let (gate, _) = gate(EgressPolicy::default());
        // Global budget: 1 a second, bursts of 10.
        let mut passed = 0;
        for i in 0..50u8 {
            let from = SocketAddr::from(([203, 0, 114, i], 5000));
            if gate.inspect(&request(METHOD_ALLOCATE, &[]), from) == Verdict::Pass {
                passed += 1;
            }
        }
        assert_eq!(passed, 10);
        // A nonce the server handed out is let through whatever the budget.
        let mut answer = Message::new();
        answer
            .build(&[
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
                Box::new(stun::textattrs::TextAttribute::new(
                    ATTR_NONCE,
                    "n0nce".into(),
                )),
            ])
            .expect("answer");
        gate.observe_answer(&answer.raw);
        let mut again = Message::new();
        again
            .build(&[
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
                Box::new(stun::textattrs::TextAttribute::new(
                    ATTR_NONCE,
                    "n0nce".into(),
                )),
            ])
            .expect("refresh");
        let from = SocketAddr::from(([203, 0, 114, 1], 5000));
        assert_eq!(gate.inspect(&again.raw, from), Verdict::Pass);
    }
}
