//! The sockets the SFU's peer connections get: virtual sockets on the shared media port
//! (see `media_port`), whose sends are batched.
//!
//! webrtc-rs's connection driver sends each datagram the moment it is encrypted, one
//! `sendmsg` per packet. An SFU sends many small packets to each viewer, so that costs a
//! system call and a full trip through the kernel's UDP stack per forwarded packet.
//! [`SfuRuntime`] is the tokio runtime webrtc-rs already uses, except that the UDP sockets
//! it hands the driver are [`BatchSocket`]s: the socket the driver bound is closed at once
//! (only its address is kept, as the driver knows the socket by it), datagrams are
//! received from the connection's inbox on the media port, and a send only queues the
//! datagram and wakes the socket's flusher task, which sends through the media port's
//! socket. The flusher runs once the driver has finished its burst and sends what
//! has queued since, consecutive same-size datagrams to one address as a single UDP GSO
//! send (`UDP_SEGMENT`), the rest one by one.
//!
//! Nothing is held back on purpose: an idle connection's packet goes out as soon as the
//! flusher is polled, right after the driver yields. Batches form only when the driver had
//! several packets to send in one go (under load), so the batching adds no delay when the
//! server is quiet. `/metrics` shows the datagrams and the sends they took.
//!
//! The driver's sleeps come from a [`TimerSlot`], which reuses the timer of the last one
//! (see `reused_timer`).
//!
//! [`SendPath`] is where a connection's media goes: the socket, destination and source
//! address of the last datagram its driver sent that was not an ICE check (DTLS, SRTP,
//! SRTCP all go on the ICE pair in use), or of the last SRTP or SRTCP the member sent
//! (it sends on the pair in use too; a member that publishes nothing still reports on
//! what it receives). Quad's direct path (`direct`) sends forwarded
//! packets through it, into the same queue.

use super::SfuMetrics;
use super::media_port::{Inbox, PortLink, PortSocket};
use super::reused_timer::TimerSlot;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, EcnCodepoint, JoinHandle,
    RecvMeta, Runtime, TokioRuntime, Transmit,
};

/// Bytes a socket may have queued (half a second of a busy viewer's audio); past this, new
/// datagrams are dropped, as a full socket buffer would drop them, rather than queueing
/// behind a stuck send: media that late is no use to anyone.
const MAX_QUEUED_BYTES: usize = 128 << 10;

/// Queue capacity kept between batches; a burst's larger buffer is given back.
const KEPT_CAPACITY: usize = 16 << 10;

/// Most bytes in one GSO send (the kernel's limit is 64 KiB of UDP payload).
const MAX_GSO_BYTES: usize = 60_000;

/// webrtc-rs's tokio runtime, which everything but UDP sockets is handed to.
static TOKIO: TokioRuntime = TokioRuntime;

/// The tokio runtime, with [`BatchSocket`]s on the media port for UDP and a [`TimerSlot`]
/// for the driver's sleeps. See the module docs. One per peer connection.
#[derive(Debug)]
pub struct SfuRuntime {
    link: Arc<PortLink>,
    timer: TimerSlot,
    path: Arc<SendPath>,
}

impl SfuRuntime {
    pub fn new(link: Arc<PortLink>, path: Arc<SendPath>) -> Self {
        SfuRuntime {
            link,
            timer: TimerSlot::default(),
            path,
        }
    }
}

/// Where one connection's media goes (see the module docs).
#[derive(Default)]
pub struct SendPath {
    route: Mutex<Option<Route>>,
}

impl fmt::Debug for SendPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPath").finish_non_exhaustive()
    }
}

struct Route {
    outbox: Arc<Outbox>,
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    metrics: Arc<SfuMetrics>,
}

impl SendPath {
    fn route(&self) -> MutexGuard<'_, Option<Route>> {
        // Plain data, replaced whole: usable after a panic elsewhere.
        self.route.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection has sent media (or DTLS) anywhere yet.
    pub fn is_known(&self) -> bool {
        self.route().is_some()
    }

    /// Queues `datagram` (already encrypted) for the connection's media path. False when
    /// there is no path yet or its socket is gone; a full queue drops it (and counts it),
    /// as for the driver's own sends.
    pub fn send(&self, datagram: &[u8]) -> bool {
        // The socket's queue lock is taken under this one; nothing takes them the other way.
        let route = self.route();
        let Some(route) = route.as_ref() else {
            return false;
        };
        if route.outbox.closed.load(Ordering::Acquire) {
            return false;
        }
        enqueue_into(
            &route.outbox,
            &route.metrics,
            route.destination,
            route.src_ip,
            None,
            datagram,
            datagram.len(),
        );
        true
    }
}

impl Runtime for SfuRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TOKIO.spawn(future)
    }

    /// The driver bound `socket` for the connection; it is closed here (no descriptor per
    /// connection) and the connection gets a virtual socket on the media port instead,
    /// which keeps the address the driver knows it by.
    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local_addr = socket.local_addr()?;
        drop(socket);
        Ok(Arc::new(BatchSocket::start(
            self.link.clone(),
            local_addr,
            self.path.clone(),
        )))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TOKIO.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        TOKIO.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        TOKIO.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(self.timer.sleep(duration))
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TOKIO.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TOKIO.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TOKIO.yield_now()
    }

    fn name(&self) -> &'static str {
        "quad-sfu"
    }
}

/// One queued datagram: its bytes are `Outbox::bytes[start..start + len]`.
#[derive(Clone, Copy)]
struct Datagram {
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<EcnCodepoint>,
    start: usize,
    len: usize,
}

/// Datagrams waiting for the flusher, in the order the driver sent them.
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    datagrams: Vec<Datagram>,
}

impl Queue {
    fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.bytes.shrink_to(KEPT_CAPACITY);
        // As many entries as that many bytes of small (audio-sized) datagrams hold.
        self.datagrams.shrink_to(KEPT_CAPACITY / 64);
    }
}

/// What a socket and its flusher share.
struct Outbox {
    queue: Mutex<Queue>,
    wake: Notify,
    closed: AtomicBool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves only plain data behind; keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's virtual socket on the media port: it receives from its inbox there,
/// and its sends are queued and flushed through the port's socket in batches by its own
/// task.
pub struct BatchSocket {
    link: Arc<PortLink>,
    inbox: Arc<Inbox>,
    /// The address of the socket the driver bound (and this one replaces).
    local_addr: SocketAddr,
    /// The source address sends ask for, when the media port is bound to every address:
    /// replies leave from the address the client sent to.
    src_ip: Option<IpAddr>,
    /// The media port is an IPv6 socket: IPv4 addresses are given to it IPv4-mapped.
    v6_port: bool,
    outbox: Arc<Outbox>,
    metrics: Arc<SfuMetrics>,
    path: Arc<SendPath>,
}

impl fmt::Debug for BatchSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchSocket")
            .field("local_addr", &self.local_addr)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl BatchSocket {
    /// A virtual socket known as `local_addr` on `link`'s port; spawns its flusher, which
    /// ends when this socket is dropped.
    fn start(link: Arc<PortLink>, local_addr: SocketAddr, path: Arc<SendPath>) -> BatchSocket {
        let outbox = Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let metrics = link.metrics().clone();
        tokio::spawn(flusher(
            link.socket().clone(),
            outbox.clone(),
            metrics.clone(),
        ));
        let inbox = link.attach(local_addr.ip());
        let src_ip = (link.port_addr().ip().is_unspecified() && !local_addr.ip().is_unspecified())
            .then_some(local_addr.ip());
        let v6_port = link.port_addr().is_ipv6();
        BatchSocket {
            link,
            inbox,
            local_addr,
            src_ip,
            v6_port,
            outbox,
            metrics,
            path,
        }
    }

    /// `ip` as the media port's socket takes it (quinn-udp does not map IPv4 addresses for
    /// an IPv6 socket itself).
    fn for_port(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) if self.v6_port => IpAddr::V6(v4.to_ipv6_mapped()),
            ip => ip,
        }
    }

    fn enqueue(&self, transmit: &Transmit<'_>) {
        self.link.sent(transmit.destination, transmit.contents);
        let contents = transmit.contents;
        // The driver is told GSO is unavailable, but a segmented transmit is still honoured.
        let segment = transmit
            .segment_size
            .filter(|&s| s > 0)
            .unwrap_or(contents.len())
            .max(1);
        let destination = SocketAddr::new(
            self.for_port(transmit.destination.ip()),
            transmit.destination.port(),
        );
        let src_ip = transmit.src_ip.or(self.src_ip).map(|ip| self.for_port(ip));
        // DTLS (20-63) and RTP/RTCP (128-191) go on the ICE pair in use; STUN (0-3) goes
        // wherever ICE is checking.
        if contents
            .first()
            .is_some_and(|b| (20..=63).contains(b) || (128..=191).contains(b))
        {
            let mut route = self.path.route();
            let stale = route.as_ref().is_none_or(|r| {
                r.destination != destination
                    || r.src_ip != src_ip
                    || !Arc::ptr_eq(&r.outbox, &self.outbox)
            });
            if stale {
                *route = Some(Route {
                    outbox: self.outbox.clone(),
                    destination,
                    src_ip,
                    metrics: self.metrics.clone(),
                });
            }
        }
        enqueue_into(
            &self.outbox,
            &self.metrics,
            destination,
            src_ip,
            transmit.ecn,
            contents,
            segment,
        );
    }
}

/// Queues `contents`, cut into `segment`-sized datagrams, for `outbox`'s flusher; past
/// [`MAX_QUEUED_BYTES`] it is dropped and counted instead.
fn enqueue_into(
    outbox: &Outbox,
    metrics: &SfuMetrics,
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<EcnCodepoint>,
    contents: &[u8],
    segment: usize,
) {
    let mut queue = outbox.lock();
    if queue.bytes.len() + contents.len() > MAX_QUEUED_BYTES {
        drop(queue);
        let dropped = contents.len().div_ceil(segment) as u64;
        metrics
            .udp_dropped_datagrams
            .fetch_add(dropped, Ordering::Relaxed);
        return;
    }
    let was_empty = queue.datagrams.is_empty();
    for chunk in contents.chunks(segment) {
        let start = queue.bytes.len();
        queue.bytes.extend_from_slice(chunk);
        queue.datagrams.push(Datagram {
            destination,
            src_ip,
            ecn,
            start,
            len: chunk.len(),
        });
    }
    drop(queue);
    if was_empty {
        outbox.wake.notify_one();
    }
}

impl BatchSocket {
    /// The member sends media from `from`: the media path follows it there (an ICE restart
    /// or a new pair moved it), once the path is known at all.
    fn follow(&self, from: SocketAddr) {
        let destination = SocketAddr::new(self.for_port(from.ip()), from.port());
        let mut route = self.path.route();
        if let Some(route) = route.as_mut()
            && route.destination != destination
        {
            route.destination = destination;
            route.src_ip = self.src_ip.map(|ip| self.for_port(ip));
            route.outbox = self.outbox.clone();
        }
    }
}

impl Drop for BatchSocket {
    fn drop(&mut self) {
        self.link.detach(&self.inbox);
        self.outbox.closed.store(true, Ordering::Release);
        self.outbox.wake.notify_one();
    }
}

impl AsyncUdpSocket for BatchSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.enqueue(transmit);
        Poll::Ready(Ok(transmit.contents.len()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inbox.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled {
            for (buf, meta) in bufs.iter().zip(meta.iter()).take(*n) {
                // SRTP and SRTCP from the member come on the ICE pair it uses now.
                if meta.len > 0 && (128..=191).contains(&buf[0]) {
                    self.follow(meta.addr);
                }
            }
        }
        polled
    }

    /// One: the driver hands over single datagrams and the flusher does the batching.
    fn max_gso_segments(&self) -> usize {
        1
    }

    /// One: the inbox holds single datagrams.
    fn max_gro_segments(&self) -> usize {
        1
    }
}

/// Sends what `outbox` queues until its socket is dropped (then sends what is left).
async fn flusher(inner: Arc<PortSocket>, outbox: Arc<Outbox>, metrics: Arc<SfuMetrics>) {
    let mut batch = Queue::default();
    loop {
        outbox.wake.notified().await;
        let closed = outbox.closed.load(Ordering::Acquire);
        std::mem::swap(&mut *outbox.lock(), &mut batch);
        send_batch(&inner, &batch, &metrics).await;
        batch.clear();
        if closed {
            return;
        }
    }
}

/// How many datagrams from `datagrams[0]` go in one GSO send: same destination, source
/// and ECN, each `datagrams[0].len` bytes except that the last may be shorter.
fn gso_run(datagrams: &[Datagram], max_segments: usize) -> usize {
    let Some(first) = datagrams.first() else {
        return 0;
    };
    let mut total = first.len;
    let mut n = 1;
    for d in &datagrams[1..] {
        if n == max_segments
            || d.destination != first.destination
            || d.src_ip != first.src_ip
            || d.ecn != first.ecn
            || d.len == 0
            || d.len > first.len
            || total + d.len > MAX_GSO_BYTES
        {
            break;
        }
        total += d.len;
        n += 1;
        if d.len < first.len {
            break;
        }
    }
    n
}

async fn send_batch(socket: &PortSocket, batch: &Queue, metrics: &SfuMetrics) {
    let max_segments = socket.max_gso_segments().max(1);
    let mut rest = &batch.datagrams[..];
    while !rest.is_empty() {
        let n = gso_run(rest, max_segments);
        let (run, tail) = rest.split_at(n);
        rest = tail;
        let first = run[0];
        let end = run[n - 1].start + run[n - 1].len;
        let transmit = Transmit {
            destination: first.destination,
            ecn: first.ecn,
            contents: &batch.bytes[first.start..end],
            segment_size: (n > 1).then_some(first.len),
            src_ip: first.src_ip,
        };
        let sent = socket.send(&transmit).await;
        metrics.udp_sends.fetch_add(1, Ordering::Relaxed);
        metrics.udp_datagrams.fetch_add(n as u64, Ordering::Relaxed);
        if let Err(err) = sent {
            tracing::debug!(%err, to = %first.destination, datagrams = n, "SFU send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::media_port::MediaPort;
    use super::*;

    fn datagram(port: u16, len: usize) -> Datagram {
        Datagram {
            destination: SocketAddr::from(([127, 0, 0, 1], port)),
            src_ip: None,
            ecn: None,
            start: 0,
            len,
        }
    }

    /// A batch socket on a media port on loopback (and the port's socket, with how many
    /// references to it there were before the batch socket), and a plain receiver.
    async fn socket_and_receiver(
        metrics: &Arc<SfuMetrics>,
    ) -> (
        BatchSocket,
        (Arc<PortSocket>, usize, Arc<MediaPort>),
        tokio::net::UdpSocket,
    ) {
        let port = MediaPort::bind([127, 0, 0, 1].into(), 0, metrics.clone()).expect("bind");
        let link = port.open();
        let inner = link.socket().clone();
        let references = Arc::strong_count(&inner);
        let socket = BatchSocket::start(
            link,
            SocketAddr::from(([127, 0, 0, 1], 40000)),
            Arc::new(SendPath::default()),
        );
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        (socket, (inner, references, port), receiver)
    }

    #[test]
    fn runs_are_same_destination_same_size_with_a_shorter_last() {
        let q = [
            datagram(1, 100),
            datagram(1, 100),
            datagram(1, 60),
            datagram(1, 100),
        ];
        assert_eq!(gso_run(&q, 64), 3);
        assert_eq!(gso_run(&q[3..], 64), 1);
        let q = [datagram(1, 100), datagram(2, 100)];
        assert_eq!(gso_run(&q, 64), 1);
        let q = [datagram(1, 100), datagram(1, 120)];
        assert_eq!(gso_run(&q, 64), 1);
        let q = [datagram(1, 100); 10];
        assert_eq!(gso_run(&q, 4), 4);
        assert_eq!(gso_run(&q, 1), 1);
        assert_eq!(gso_run(&[], 4), 0);
    }

    /// Everything sent through a batch socket arrives whole and in order; what the driver
    /// sent in one go leaves in one GSO send per same-size run.
    #[tokio::test(flavor = "current_thread")]
    async fn datagrams_arrive_whole_in_order_and_batched() {
        let metrics = Arc::new(SfuMetrics::default());
        let (socket, (inner, _, _port), receiver) = socket_and_receiver(&metrics).await;
        let gso = inner.max_gso_segments();
        let to = receiver.local_addr().expect("addr");
        // Runs of six 90-byte datagrams closed by a 40-byte one, as one burst: on this
        // single-threaded runtime the flusher runs only once the test awaits below.
        let sizes: Vec<usize> = (0..200).map(|i| if i % 7 == 6 { 40 } else { 90 }).collect();
        for (i, &len) in sizes.iter().enumerate() {
            let mut payload = vec![0u8; len];
            payload[..2].copy_from_slice(&(i as u16).to_be_bytes());
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: &payload,
                segment_size: None,
                src_ip: None,
            };
            futures_util::future::poll_fn(|cx| socket.poll_send(cx, &transmit))
                .await
                .expect("send");
        }
        let mut buf = [0u8; 2048];
        for (i, &len) in sizes.iter().enumerate() {
            let n = tokio::time::timeout(Duration::from_secs(5), receiver.recv(&mut buf))
                .await
                .expect("datagram in time")
                .expect("recv");
            assert_eq!(n, len, "datagram {i} keeps its size");
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), i as u16, "in order");
        }
        assert_eq!(metrics.udp_datagrams.load(Ordering::Relaxed), 200);
        // 28 whole runs of 7 and 4 datagrams left over; one send each where GSO works.
        let expected = if gso >= 7 { 29 } else { 200 };
        assert_eq!(metrics.udp_sends.load(Ordering::Relaxed), expected);
    }

    /// The media path is learnt from the driver's first DTLS or RTP send, not from ICE
    /// checks, and follows the member when its media comes from elsewhere.
    #[tokio::test(flavor = "current_thread")]
    async fn the_media_path_is_where_dtls_went_and_follows_the_members_media() {
        let metrics = Arc::new(SfuMetrics::default());
        let (socket, _keep, first) = socket_and_receiver(&metrics).await;
        let path = socket.path.clone();
        let second = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let send = |to: SocketAddr, contents: &[u8]| {
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents,
                segment_size: None,
                src_ip: None,
            };
            socket.enqueue(&transmit);
        };
        // The next datagram on `on`, waited for (the flusher sends when the test awaits).
        async fn recv(on: &tokio::net::UdpSocket) -> Vec<u8> {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), on.recv(&mut buf))
                .await
                .expect("a datagram in time")
                .expect("recv");
            buf[..n].to_vec()
        }
        // An ICE check (STUN, first byte 0) teaches nothing.
        send(second.local_addr().expect("addr"), &[0, 1, 0, 0]);
        assert!(!path.is_known());
        assert!(!path.send(&[0x80, 1]), "nowhere to send yet");
        // A DTLS record (22: handshake) goes on the pair in use.
        send(first.local_addr().expect("addr"), &[22, 254, 253]);
        assert!(path.is_known());
        assert!(path.send(&[0x80, 2]));
        assert_eq!(recv(&second).await, vec![0, 1, 0, 0], "the check");
        assert_eq!(recv(&first).await, vec![22, 254, 253], "DTLS");
        assert_eq!(recv(&first).await, vec![0x80, 2], "direct");

        // The member's media now comes from the second address: the path follows.
        socket.follow(second.local_addr().expect("addr"));
        assert!(path.send(&[0x80, 3]));
        assert_eq!(recv(&second).await, vec![0x80, 3], "followed");
        let mut buf = [0u8; 64];
        assert!(
            first.try_recv(&mut buf).is_err(),
            "nothing more to the old address (datagrams leave in order, so it would be here)"
        );
    }

    /// A dropped socket's flusher sends what was queued, then ends.
    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_socket_flushes_and_stops_its_flusher() {
        let metrics = Arc::new(SfuMetrics::default());
        let (socket, (inner, references, _port), receiver) = socket_and_receiver(&metrics).await;
        assert_eq!(socket.local_addr().expect("addr").port(), 40000);
        let transmit = Transmit {
            destination: receiver.local_addr().expect("addr"),
            ecn: None,
            contents: b"last words",
            segment_size: None,
            src_ip: None,
        };
        futures_util::future::poll_fn(|cx| socket.poll_send(cx, &transmit))
            .await
            .expect("send");
        drop(socket);
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), receiver.recv(&mut buf))
            .await
            .expect("datagram in time")
            .expect("recv");
        assert_eq!(&buf[..n], b"last words");
        // The flusher held the only reference to the port's socket the batch socket added.
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&inner) > references {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the flusher ends");
    }
}
