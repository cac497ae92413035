//! The media port: the one UDP socket every room member's connection shares (`media_port`),
//! so that a firewall opens one port for the SFU rather than the ephemeral range.
//!
//! webrtc-rs 0.21 has no UDP mux (its setting for one is a `todo`): each connection's
//! driver binds a socket of its own and hands it to the runtime. The SFU's runtime
//! ([`super::batch_udp::SfuRuntime`]) closes that socket at once and gives the driver a
//! virtual one instead, which sends through the shared socket and receives from an inbox
//! this module fills. So:
//! - [`MediaPort`] owns the socket and one reader task, which receives in batches
//!   (`recvmmsg`, and GRO where the kernel has it) and hands each datagram to the inbox of
//!   the connection [`Routes`] picks (see `demux`), or drops and counts it
//!   (`quad_sfu_udp_unrouted_total`; `quad_sfu_udp_ssrc_refused_total` for RTP and RTCP
//!   from more SSRCs than a connection may use, see `ssrc_quota`).
//! - [`PortLink`] is one connection's place on the port: it registers the connection's
//!   ICE username fragment, hands out its inboxes, and forgets the connection's routes
//!   when closed (its member's task ends) or dropped.
//! - [`Inbox`]: the datagrams waiting for one of a connection's virtual sockets, bounded
//!   ([`MAX_INBOX_BYTES`]; past it datagrams are dropped and counted).
//! - The driver still makes its host candidates from the address of the socket it bound,
//!   an ephemeral port; [`advertised_candidate`] and [`advertised_sdp`] put the media port
//!   in their place before a client sees them.
//!
//! Nothing here decides routes (that is `demux`) or knows about rooms.

use super::SfuMetrics;
use super::demux::{ConnId, Routes};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::Interest;
use webrtc::runtime::{BATCH_SIZE, EcnCodepoint, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Bytes one inbox may hold (about 200 full-size packets, far more than a driver leaves
/// unread unless it is stuck); past this, datagrams are dropped as a full socket buffer
/// would drop them.
pub const MAX_INBOX_BYTES: usize = 256 << 10;

/// Inbox capacity kept between bursts; a burst's larger buffer is given back.
const KEPT_CAPACITY: usize = 4 << 10;

/// Receive buffer per message: a whole GRO batch where the kernel coalesces, else the
/// largest datagram WebRTC sends with room to spare.
const GRO_BUF_LEN: usize = 64 << 10;
const PLAIN_BUF_LEN: usize = 4 << 10;

/// Bytes of kernel buffer asked for each way: the one socket carries every member's
/// traffic. The kernel caps it at `net.core.wmem_max` / `rmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// The media port's socket: tokio's for readiness, quinn-udp's for batched I/O (`recvmmsg`,
/// GRO, GSO).
///
/// Not webrtc-rs's tokio socket, although it is the same underneath: its `poll_send` keeps
/// only the waker of the last caller to find the socket busy, and every connection's
/// flusher sends here; `writable()` wakes every waiting sender.
pub struct PortSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl PortSocket {
    fn bind(addr: SocketAddr) -> io::Result<PortSocket> {
        let std = if addr.ip() == IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) {
            // Every address of both families on one socket: IPv4 datagrams arrive from, and
            // are sent to, IPv4-mapped IPv6 addresses. Set here, not left to the system's
            // default (`net.ipv6.bindv6only`), which a distribution may turn on.
            let socket = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_only_v6(false)?;
            socket.bind(&addr.into())?;
            std::net::UdpSocket::from(socket)
        } else {
            std::net::UdpSocket::bind(addr)?
        };
        std.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(std)?;
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        // Best effort: a smaller buffer only drops sooner under a burst.
        let _ = state.set_send_buffer_size(UdpSockRef::from(&io), SOCKET_BUFFER);
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&io), SOCKET_BUFFER);
        Ok(PortSocket { io, state })
    }

    /// Sends `transmit` (several datagrams, if it has a segment size: see
    /// [`Self::max_gso_segments`]), waiting while the socket's buffer is full.
    pub async fn send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        loop {
            self.io.writable().await?;
            // Through `try_io`, so that tokio learns when the socket is busy.
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.io), transmit)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Receives up to `bufs.len()` messages (each may hold several datagrams of
    /// `meta.stride` bytes).
    async fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        loop {
            self.io.readable().await?;
            match self.io.try_io(Interest::READABLE, || {
                match self.state.recv(UdpSockRef::from(&self.io), bufs, meta)? {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Datagrams one send may carry (UDP GSO); 1 where the kernel cannot.
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// The shared socket and its routing table. One per server.
pub struct MediaPort {
    socket: Arc<PortSocket>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MediaPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPort")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What the reader task, the port and every link share.
struct Shared {
    table: Mutex<Table>,
    metrics: Arc<SfuMetrics>,
    next_conn: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock leaves only plain data behind; keep using it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The routes, and the inboxes of each connection's virtual sockets (one per local address
/// its driver bound: one, unless `media_ip` is unspecified and the machine has several).
#[derive(Default)]
struct Table {
    routes: Routes,
    inboxes: FxHashMap<ConnId, SmallVec<[Arc<Inbox>; 1]>>,
}

impl Table {
    /// The inbox of `conn` for datagrams sent to `dst_ip`: the one whose local address it is,
    /// else the first.
    fn inbox(&self, conn: ConnId, dst_ip: Option<IpAddr>) -> Option<&Arc<Inbox>> {
        let inboxes = self.inboxes.get(&conn)?;
        dst_ip
            .and_then(|ip| inboxes.iter().find(|i| i.local_ip == ip.to_canonical()))
            .or_else(|| inboxes.first())
    }
}

impl MediaPort {
    /// Binds `ip:port` (port 0: one the OS picks) and starts the reader. Must be called on
    /// the tokio runtime. The reader stops when the port is dropped.
    pub fn bind(ip: IpAddr, port: u16, metrics: Arc<SfuMetrics>) -> io::Result<Arc<MediaPort>> {
        let socket = Arc::new(PortSocket::bind(SocketAddr::new(ip, port))?);
        let addr = socket.io.local_addr()?;
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            metrics,
            next_conn: AtomicU64::new(1),
        });
        let reader = tokio::spawn(read(socket.clone(), shared.clone()));
        Ok(Arc::new(MediaPort {
            socket,
            addr,
            shared,
            reader,
        }))
    }

    /// The address the socket is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new connection's place on the port.
    pub fn open(self: &Arc<Self>) -> Arc<PortLink> {
        let conn = ConnId(self.shared.next_conn.fetch_add(1, Ordering::Relaxed));
        self.shared.lock().routes.open(conn);
        Arc::new(PortLink {
            port: self.clone(),
            conn,
        })
    }

    /// Connections on the port.
    pub fn connections(&self) -> usize {
        self.shared.lock().routes.len()
    }
}

impl Drop for MediaPort {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One connection's place on the media port. Dropping it forgets the connection's routes.
pub struct PortLink {
    port: Arc<MediaPort>,
    conn: ConnId,
}

impl std::fmt::Debug for PortLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortLink")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl PortLink {
    /// The shared socket, which this connection's datagrams are sent through.
    pub fn socket(&self) -> &Arc<PortSocket> {
        &self.port.socket
    }

    /// The media port's address.
    pub fn port_addr(&self) -> SocketAddr {
        self.port.addr
    }

    pub fn metrics(&self) -> &Arc<SfuMetrics> {
        &self.port.shared.metrics
    }

    /// The connection applied a local description: checks naming the ICE username
    /// fragment in `sdp` are for it from now on.
    pub fn set_local_description(&self, sdp: &str) {
        let Some(ufrag) = ice_ufrag(sdp) else {
            tracing::warn!("a local description without an ICE username fragment");
            return;
        };
        if !self.port.shared.lock().routes.set_ufrag(self.conn, ufrag) {
            tracing::warn!("ICE username fragment {ufrag:?} refused by the media port");
        }
    }

    /// The connection sent `datagram` to `to` (a check teaches where answers come from).
    pub fn sent(&self, to: SocketAddr, datagram: &[u8]) {
        if super::demux::is_binding_request(datagram) {
            self.port.shared.lock().routes.sent(self.conn, to, datagram);
        }
    }

    /// A new inbox for a virtual socket whose local address is `local_ip`.
    pub fn attach(&self, local_ip: IpAddr) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox {
            local_ip: local_ip.to_canonical(),
            state: Mutex::new(InboxState::default()),
        });
        self.port
            .shared
            .lock()
            .inboxes
            .entry(self.conn)
            .or_default()
            .push(inbox.clone());
        inbox
    }

    /// The virtual socket that had `inbox` is gone (an ICE restart replaces it).
    pub fn detach(&self, inbox: &Arc<Inbox>) {
        let mut table = self.port.shared.lock();
        if let Some(inboxes) = table.inboxes.get_mut(&self.conn) {
            inboxes.retain(|i| !Arc::ptr_eq(i, inbox));
        }
    }

    /// The host candidate `candidate` with the media port in place of the driver's.
    pub fn advertised_candidate(&self, candidate: &str) -> String {
        advertised_candidate(candidate, self.port.addr.port())
    }

    /// `sdp` with the media port in its host candidates.
    pub fn advertised_sdp(&self, sdp: &str) -> String {
        advertised_sdp(sdp, self.port.addr.port())
    }
}

impl PortLink {
    /// The connection is closed: nothing routes to it any more, although its driver may
    /// still be winding down (and holding this link).
    pub fn close(&self) {
        let mut table = self.port.shared.lock();
        table.routes.close(self.conn);
        table.inboxes.remove(&self.conn);
    }
}

impl Drop for PortLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Datagrams received for one virtual socket, waiting for its driver.
pub struct Inbox {
    local_ip: IpAddr,
    state: Mutex<InboxState>,
}

/// Two queues: the reader appends to `incoming`; the driver reads `reading` and swaps the
/// two when it has read everything, so neither allocates once warm.
#[derive(Default)]
struct InboxState {
    incoming: Received,
    reading: Received,
    /// The next of `reading.datagrams` to hand out.
    next: usize,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    datagrams: Vec<Arrival>,
}

impl Received {
    fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.bytes.shrink_to(KEPT_CAPACITY);
        self.datagrams.shrink_to(KEPT_CAPACITY / 64);
    }
}

#[derive(Clone, Copy)]
struct Arrival {
    from: SocketAddr,
    dst_ip: Option<IpAddr>,
    ecn: Option<EcnCodepoint>,
    start: usize,
    len: usize,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // As for the table: plain data, usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a datagram; false if the inbox is full. The waker to wake, if any, goes to
    /// `wake`.
    fn push(
        &self,
        from: SocketAddr,
        meta: &RecvMeta,
        datagram: &[u8],
        wake: &mut Vec<Waker>,
    ) -> bool {
        let mut state = self.lock();
        if state.incoming.bytes.len() + datagram.len() > MAX_INBOX_BYTES {
            return false;
        }
        let start = state.incoming.bytes.len();
        state.incoming.bytes.extend_from_slice(datagram);
        state.incoming.datagrams.push(Arrival {
            from,
            dst_ip: meta.dst_ip,
            ecn: meta.ecn,
            start,
            len: datagram.len(),
        });
        if let Some(waker) = state.waker.take() {
            wake.push(waker);
        }
        true
    }

    /// What a virtual socket's `poll_recv` returns: up to one datagram per buffer.
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            if state.next == state.reading.datagrams.len() {
                state.reading.clear();
                std::mem::swap(&mut state.incoming, &mut state.reading);
                state.next = 0;
                if state.reading.datagrams.is_empty() {
                    break;
                }
            }
            let a = state.reading.datagrams[state.next];
            state.next += 1;
            let len = a.len.min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&state.reading.bytes[a.start..a.start + len]);
            let mut m = RecvMeta::default();
            m.addr = a.from;
            m.len = len;
            // At least 1, or the driver's de-segmentation divides by zero.
            m.stride = len.max(1);
            m.ecn = a.ecn;
            m.dst_ip = a.dst_ip;
            meta[n] = m;
            n += 1;
        }
        if n == 0 {
            // The driver probes for more with a no-op waker after each receive; that must
            // not replace the waker of the receive it is about to wait on.
            if !cx.waker().will_wake(Waker::noop()) {
                state.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }
}

/// Receives from the shared socket and hands each datagram to its connection's inbox.
async fn read(socket: Arc<PortSocket>, shared: Arc<Shared>) {
    let buf_len = if socket.max_gro_segments() > 1 {
        GRO_BUF_LEN
    } else {
        PLAIN_BUF_LEN
    };
    let mut storage: [Vec<u8>; BATCH_SIZE] = std::array::from_fn(|_| vec![0u8; buf_len]);
    let mut meta = [RecvMeta::default(); BATCH_SIZE];
    let mut wake = Vec::new();
    loop {
        let received = {
            let mut bufs = storage
                .each_mut()
                .map(|b| IoSliceMut::new(b.as_mut_slice()));
            socket.recv(&mut bufs, &mut meta).await
        };
        let n = match received {
            Ok(n) => n,
            Err(err) => {
                // ICMP errors (a client gone) surface here; none is worth stopping for.
                tracing::debug!(%err, "media port receive error");
                if !matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let (mut unrouted, mut dropped, mut refused) = (0u64, 0u64, 0u64);
        {
            let mut table = shared.lock();
            for (m, buf) in meta.iter().zip(&storage).take(n) {
                let from = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
                let data = &buf[..m.len.min(buf.len())];
                for datagram in data.chunks(m.stride.max(1)) {
                    let Some(conn) = table.routes.route(from, datagram) else {
                        unrouted += 1;
                        continue;
                    };
                    if !table.routes.admit(conn, datagram) {
                        refused += 1;
                        continue;
                    }
                    let queued = table
                        .inbox(conn, m.dst_ip)
                        .is_some_and(|inbox| inbox.push(from, m, datagram, &mut wake));
                    if !queued {
                        dropped += 1;
                    }
                }
            }
        }
        for waker in wake.drain(..) {
            waker.wake();
        }
        if unrouted > 0 {
            shared
                .metrics
                .udp_unrouted
                .fetch_add(unrouted, Ordering::Relaxed);
        }
        if dropped > 0 {
            shared
                .metrics
                .udp_inbox_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if refused > 0 {
            shared
                .metrics
                .udp_ssrc_refused
                .fetch_add(refused, Ordering::Relaxed);
        }
    }
}

/// The ICE username fragment of a session description (the first `a=ice-ufrag:`; with
/// BUNDLE every m-line has the same).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// `candidate` (`candidate:F 1 udp PRIO IP PORT typ host ...`, with or without `a=`) with
/// `port` in place of its port, if it is a UDP host candidate; otherwise unchanged.
pub fn advertised_candidate(candidate: &str, port: u16) -> String {
    let fields: SmallVec<[&str; 16]> = candidate.split(' ').collect();
    let is_udp_host = fields.len() >= 8
        && fields[2].eq_ignore_ascii_case("udp")
        && fields[6] == "typ"
        && fields[7] == "host";
    if !is_udp_host {
        return candidate.to_owned();
    }
    let port = port.to_string();
    let mut out = String::with_capacity(candidate.len() + 2);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if i == 5 { &port } else { field });
    }
    out
}

/// `sdp` with `port` in every UDP host candidate line.
pub fn advertised_sdp(sdp: &str, port: u16) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        if body.starts_with("a=candidate:") {
            out.push_str(&advertised_candidate(body, port));
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::demux::tests::check;
    use super::*;
    use std::time::Duration;

    #[test]
    fn host_candidates_carry_the_media_port() {
        assert_eq!(
            advertised_candidate("candidate:1 1 udp 2130706431 10.0.0.5 54321 typ host", 7882),
            "candidate:1 1 udp 2130706431 10.0.0.5 7882 typ host"
        );
        assert_eq!(
            advertised_candidate(
                "a=candidate:1 1 UDP 2130706431 10.0.0.5 54321 typ host generation 0",
                7882
            ),
            "a=candidate:1 1 UDP 2130706431 10.0.0.5 7882 typ host generation 0"
        );
        for other in [
            "candidate:2 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 5",
            "candidate:3 1 tcp 1518280447 10.0.0.5 9 typ host tcptype active",
            "candidate:4 1 udp",
            "",
        ] {
            assert_eq!(advertised_candidate(other, 7882), other);
        }
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=candidate:1 1 udp 1 10.0.0.5 54321 typ host\r\n\
                   a=candidate:1 2 udp 1 10.0.0.5 54321 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            advertised_sdp(sdp, 7882),
            "v=0\r\na=ice-ufrag:abcd\r\na=candidate:1 1 udp 1 10.0.0.5 7882 typ host\r\n\
             a=candidate:1 2 udp 1 10.0.0.5 7882 typ host\r\na=end-of-candidates\r\n"
        );
        assert_eq!(ice_ufrag(sdp), Some("abcd"));
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }

    /// With the media port on every address, a connection has an inbox per interface
    /// address its driver bound: a datagram goes to the one it was sent to.
    #[test]
    fn a_datagram_goes_to_the_inbox_of_the_address_it_was_sent_to() {
        let inbox = |ip: [u8; 4]| {
            Arc::new(Inbox {
                local_ip: IpAddr::from(ip),
                state: Mutex::new(InboxState::default()),
            })
        };
        let (lan, vpn) = (inbox([10, 0, 0, 5]), inbox([172, 16, 0, 9]));
        let mut table = Table::default();
        let conn = ConnId(1);
        table.routes.open(conn);
        assert!(table.inbox(conn, None).is_none(), "no socket yet");
        table
            .inboxes
            .entry(conn)
            .or_default()
            .extend([lan.clone(), vpn.clone()]);
        let chosen = |dst: Option<IpAddr>| table.inbox(conn, dst).map(|i| i.local_ip);
        assert_eq!(chosen(Some([172, 16, 0, 9].into())), Some(vpn.local_ip));
        // As an IPv6 socket reports an IPv4 destination.
        let mapped = std::net::Ipv4Addr::new(172, 16, 0, 9).to_ipv6_mapped();
        assert_eq!(chosen(Some(mapped.into())), Some(vpn.local_ip));
        assert_eq!(chosen(Some([10, 0, 0, 5].into())), Some(lan.local_ip));
        // Unknown or not reported: the first.
        assert_eq!(chosen(Some([192, 0, 2, 1].into())), Some(lan.local_ip));
        assert_eq!(chosen(None), Some(lan.local_ip));
    }

    async fn client() -> tokio::net::UdpSocket {
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind")
    }

    /// Two connections on one port: each gets the datagrams of its own client (first a
    /// check naming its fragment, then media from the same address); a stranger's go
    /// nowhere and are counted; a closed connection's client goes nowhere either.
    #[tokio::test(flavor = "current_thread")]
    async fn datagrams_reach_their_connections_inbox_only() {
        let metrics = Arc::new(SfuMetrics::default());
        let port = MediaPort::bind([127, 0, 0, 1].into(), 0, metrics.clone()).expect("bind");
        let (a, b) = (port.open(), port.open());
        a.set_local_description("v=0\r\na=ice-ufrag:ufragA\r\n");
        b.set_local_description("v=0\r\na=ice-ufrag:ufragB\r\n");
        let (inbox_a, inbox_b) = (
            a.attach([127, 0, 0, 1].into()),
            b.attach([127, 0, 0, 1].into()),
        );
        let (ca, cb, stranger) = (client().await, client().await, client().await);
        let to = port.addr();
        ca.send_to(&check("ufragA:x"), to).await.expect("send");
        ca.send_to(b"media for a", to).await.expect("send");
        cb.send_to(&check("ufragB:y"), to).await.expect("send");
        cb.send_to(b"media for b", to).await.expect("send");
        for _ in 0..10 {
            stranger.send_to(b"who?", to).await.expect("send");
        }
        stranger
            .send_to(&check("nobody:z"), to)
            .await
            .expect("send");

        let next = |inbox: Arc<Inbox>| async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::poll_fn(|cx| {
                    let mut buf = [0u8; 256];
                    let mut meta = [RecvMeta::default(); 1];
                    let mut bufs = [IoSliceMut::new(&mut buf)];
                    inbox
                        .poll_recv(cx, &mut bufs, &mut meta)
                        .map_ok(|_| (buf[..meta[0].len].to_vec(), meta[0].addr))
                }),
            )
            .await
            .expect("in time")
            .expect("received")
        };
        let ca_addr = ca.local_addr().expect("addr");
        assert_eq!(next(inbox_a.clone()).await, (check("ufragA:x"), ca_addr));
        assert_eq!(
            next(inbox_a.clone()).await,
            (b"media for a".to_vec(), ca_addr)
        );
        assert_eq!(next(inbox_b.clone()).await.0, check("ufragB:y"));
        assert_eq!(next(inbox_b.clone()).await.0, b"media for b".to_vec());
        // The stranger's eleven, counted once the reader has seen them: a marker from a's
        // client, sent after them, arriving at a says the reader got that far.
        ca.send_to(b"marker", to).await.expect("send");
        assert_eq!(next(inbox_a.clone()).await.0, b"marker".to_vec());
        assert_eq!(metrics.udp_unrouted.load(Ordering::Relaxed), 11);

        assert_eq!(port.connections(), 2);
        drop(a);
        assert_eq!(port.connections(), 1);
        ca.send_to(b"after close", to).await.expect("send");
        cb.send_to(b"marker", to).await.expect("send");
        assert_eq!(next(inbox_b).await.0, b"marker".to_vec());
        assert_eq!(metrics.udp_unrouted.load(Ordering::Relaxed), 12);
    }

    /// A driver that reads nothing: its inbox fills to the bound, the rest is dropped and
    /// counted, and what was kept is read back whole.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_inbox_drops_and_counts() {
        let metrics = Arc::new(SfuMetrics::default());
        let port = MediaPort::bind([127, 0, 0, 1].into(), 0, metrics.clone()).expect("bind");
        let link = port.open();
        link.set_local_description("a=ice-ufrag:ufragA\r\n");
        let inbox = link.attach([127, 0, 0, 1].into());
        let client = client().await;
        client
            .send_to(&check("ufragA:x"), port.addr())
            .await
            .expect("send");
        let payload = [7u8; 1000];
        let fits = MAX_INBOX_BYTES / payload.len();
        let sent = fits + 100;
        let seen = || {
            metrics.udp_inbox_dropped.load(Ordering::Relaxed) as usize
                + inbox.lock().incoming.datagrams.len()
        };
        for i in 0..sent {
            client.send_to(&payload, port.addr()).await.expect("send");
            // One at a time, so the kernel's buffer is not what drops them.
            tokio::time::timeout(Duration::from_secs(5), async {
                while seen() < i + 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the reader saw the datagram");
        }
        let kept = inbox.lock().incoming.datagrams.len();
        assert!(kept <= fits + 1, "kept {kept}, bound {fits}");
        assert_eq!(
            metrics.udp_inbox_dropped.load(Ordering::Relaxed) as usize,
            sent + 1 - kept
        );
        let mut read = 0;
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            let mut buf = [0u8; 2048];
            let mut meta = [RecvMeta::default(); 1];
            let mut bufs = [IoSliceMut::new(&mut buf)];
            match inbox.poll_recv(&mut cx, &mut bufs, &mut meta) {
                Poll::Ready(Ok(1)) => read += 1,
                Poll::Pending => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(read, kept);
    }
}
