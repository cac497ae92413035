//! A lossy UDP proxy for media tests: it stands in for one server address, relays datagrams
//! both ways, and drops the first copy of every 10th VP8 RTP packet (payload type 96, by
//! sequence number) in each direction. The RTP header is readable under SRTP, and a
//! retransmission (the same sequence number again) gets through, so only NACK and
//! retransmission can fill the gaps. A proxy can also be cut: from then on it relays
//! nothing, as a NAT binding or a relay that stops answering.
//!
//! Or, with a [`Shaper`], a narrow link instead of a lossy one: what goes to the client
//! passes a token bucket at N bit/s through a bounded queue (tail dropped when full), and
//! nothing else is dropped. The limit can be changed or lifted while the proxy runs.

use anyhow::{Context, Result, anyhow};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Bytes of IP and UDP header a datagram takes on the link, on top of its payload.
const IP_UDP_OVERHEAD: u64 = 28;

/// The link towards the client, as a [`Shaper`] draws it: a rate limit (none: 0), a queue
/// of at most `queue_bytes`, and counts of what passed and what the full queue dropped.
#[derive(Debug)]
pub struct Shaper {
    /// Bit/s, counting IP and UDP headers; 0 for no limit.
    rate: AtomicU64,
    queue_bytes: usize,
    audio_passed: AtomicU64,
    audio_dropped: AtomicU64,
    video_passed: AtomicU64,
    video_dropped: AtomicU64,
}

/// What a [`Shaper`] passed and dropped, in RTP packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperCounts {
    pub audio_passed: u64,
    pub audio_dropped: u64,
    pub video_passed: u64,
    pub video_dropped: u64,
}

impl ShaperCounts {
    /// What happened between `earlier` and these counts.
    pub fn since(&self, earlier: &ShaperCounts) -> ShaperCounts {
        ShaperCounts {
            audio_passed: self.audio_passed - earlier.audio_passed,
            audio_dropped: self.audio_dropped - earlier.audio_dropped,
            video_passed: self.video_passed - earlier.video_passed,
            video_dropped: self.video_dropped - earlier.video_dropped,
        }
    }

    /// The fraction of audio packets dropped.
    pub fn audio_loss(&self) -> f64 {
        let total = self.audio_passed + self.audio_dropped;
        if total == 0 {
            0.0
        } else {
            self.audio_dropped as f64 / total as f64
        }
    }
}

impl Shaper {
    /// A link with no limit yet, whose queue holds `queue_bytes`.
    pub fn new(queue_bytes: usize) -> Arc<Shaper> {
        Arc::new(Shaper {
            rate: AtomicU64::new(0),
            queue_bytes,
            audio_passed: AtomicU64::new(0),
            audio_dropped: AtomicU64::new(0),
            video_passed: AtomicU64::new(0),
            video_dropped: AtomicU64::new(0),
        })
    }

    /// From now on at most `bits_per_second` towards the client.
    pub fn limit(&self, bits_per_second: u64) {
        self.rate.store(bits_per_second, Ordering::Relaxed);
    }

    /// No limit from now on (what is queued goes at once).
    pub fn lift(&self) {
        self.rate.store(0, Ordering::Relaxed);
    }

    pub fn counts(&self) -> ShaperCounts {
        ShaperCounts {
            audio_passed: self.audio_passed.load(Ordering::Relaxed),
            audio_dropped: self.audio_dropped.load(Ordering::Relaxed),
            video_passed: self.video_passed.load(Ordering::Relaxed),
            video_dropped: self.video_dropped.load(Ordering::Relaxed),
        }
    }

    fn count(&self, datagram: &[u8], passed: bool) {
        let counter = match (rtp_payload_type(datagram), passed) {
            (Some(111), true) => &self.audio_passed,
            (Some(111), false) => &self.audio_dropped,
            (Some(96), true) => &self.video_passed,
            (Some(96), false) => &self.video_dropped,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The token bucket and queue of one shaped proxy.
struct Bucket {
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// Bits that may be sent now, at most [`BURST_BITS`].
    tokens: f64,
    refilled: Instant,
}

/// The bucket's depth: a few full-size datagrams may leave back to back.
const BURST_BITS: f64 = 4.0 * 1500.0 * 8.0;

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            queue: VecDeque::new(),
            queued: 0,
            tokens: BURST_BITS,
            refilled: Instant::now(),
        }
    }

    fn cost(datagram: &[u8]) -> f64 {
        ((datagram.len() as u64 + IP_UDP_OVERHEAD) * 8) as f64
    }

    /// Queues a datagram for the client, or drops it when the queue is full.
    fn push(&mut self, shaper: &Shaper, datagram: &[u8]) {
        if self.queued + datagram.len() > shaper.queue_bytes {
            shaper.count(datagram, false);
            return;
        }
        self.queued += datagram.len();
        self.queue.push_back(datagram.to_vec());
    }

    /// The datagrams that may leave now, oldest first; and when the next one may, if any
    /// waits.
    fn release(&mut self, shaper: &Shaper, now: Instant) -> (Vec<Vec<u8>>, Option<Instant>) {
        let rate = shaper.rate.load(Ordering::Relaxed) as f64;
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let mut out = Vec::new();
        if rate == 0.0 {
            self.tokens = BURST_BITS;
            self.queued = 0;
            out.extend(self.queue.drain(..));
            return (out, None);
        }
        self.tokens = (self.tokens + elapsed * rate).min(BURST_BITS);
        while let Some(next) = self.queue.front() {
            let cost = Bucket::cost(next);
            if cost > self.tokens {
                let wait = (cost - self.tokens) / rate;
                return (out, Some(now + Duration::from_secs_f64(wait)));
            }
            self.tokens -= cost;
            self.queued -= next.len();
            out.extend(self.queue.pop_front());
        }
        (out, None)
    }
}

/// A running proxy: its address, and the switch that cuts it.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    /// From now on the proxy drops everything, both ways.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

/// Starts a proxy for `server` on a new loopback port. It runs until the test's runtime
/// ends.
pub async fn spawn(server: SocketAddr) -> Result<Proxy> {
    spawn_with(server, None).await
}

/// Starts a proxy for `server`: lossy, or shaped by `shaper` (and not lossy) when given.
pub async fn spawn_with(server: SocketAddr, shaper: Option<Arc<Shaper>>) -> Result<Proxy> {
    if let Some(shaper) = shaper {
        return spawn_shaped(server, shaper).await;
    }
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let cut = Arc::new(AtomicBool::new(false));
    let is_cut = cut.clone();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut dropped: HashSet<(bool, u32, u16)> = HashSet::new();
        let mut buf = vec![0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            if is_cut.load(Ordering::Relaxed) {
                continue;
            }
            let to_client = from == server;
            let to = if to_client {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let packet = &buf[..len];
            if let Some((ssrc, seq)) = video_rtp(packet)
                && seq % 10 == 5
                && dropped.insert((to_client, ssrc, seq))
            {
                continue;
            }
            let _ = socket.send_to(packet, to).await;
        }
    });
    Ok(Proxy { addr, cut })
}

/// A proxy whose datagrams to the client pass `shaper`'s link.
async fn spawn_shaped(server: SocketAddr, shaper: Arc<Shaper>) -> Result<Proxy> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let cut = Arc::new(AtomicBool::new(false));
    let is_cut = cut.clone();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut bucket = Bucket::new();
        let mut next: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        loop {
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    // With no limit nothing waits; look again now and then for a new limit.
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            tokio::select! {
                received = socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else { break };
                    if is_cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    if from == server {
                        bucket.push(&shaper, &buf[..len]);
                    } else {
                        client = Some(from);
                        let _ = socket.send_to(&buf[..len], server).await;
                    }
                }
                () = wake => {}
            }
            let (out, at) = bucket.release(&shaper, Instant::now());
            next = at;
            if let Some(to) = client {
                for datagram in out {
                    shaper.count(&datagram, true);
                    let _ = socket.send_to(&datagram, to).await;
                }
            }
        }
    });
    Ok(Proxy { addr, cut })
}

/// The payload type of an RTP packet (not RTCP, STUN or DTLS).
fn rtp_payload_type(p: &[u8]) -> Option<u8> {
    if p.len() < 12 || p[0] >> 6 != 2 || (192..=223).contains(&p[1]) {
        return None;
    }
    Some(p[1] & 0x7f)
}

/// The SSRC and sequence number of a VP8 RTP packet (not RTCP, STUN or DTLS).
fn video_rtp(p: &[u8]) -> Option<(u32, u16)> {
    if p.len() < 12 || p[0] >> 6 != 2 || (192..=223).contains(&p[1]) || p[1] & 0x7f != 96 {
        return None;
    }
    let seq = u16::from_be_bytes([p[2], p[3]]);
    let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    Some((ssrc, seq))
}

/// Rewrites an ICE candidate of the server so that it points at a proxy for it (one proxy
/// per server address, kept in `proxies`).
pub async fn through_proxy(
    candidate: &str,
    proxies: &mut HashMap<SocketAddr, Proxy>,
    shaper: Option<&Arc<Shaper>>,
) -> Result<String> {
    if candidate.is_empty() {
        return Ok(String::new());
    }
    let mut fields: Vec<String> = candidate.split(' ').map(str::to_owned).collect();
    if fields.len() < 6 {
        return Err(anyhow!("not an ICE candidate: {candidate:?}"));
    }
    let server: SocketAddr = format!("{}:{}", fields[4], fields[5])
        .parse()
        .with_context(|| format!("the address of {candidate:?}"))?;
    let proxy = match proxies.get(&server) {
        Some(p) => p.addr,
        None => {
            let p = spawn_with(server, shaper.cloned()).await?;
            proxies.insert(server, p.clone());
            p.addr
        }
    };
    fields[4] = proxy.ip().to_string();
    fields[5] = proxy.port().to_string();
    Ok(fields.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Opus-looking RTP datagram of `len` bytes.
    fn audio(len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[0] = 0x80;
        d[1] = 111;
        d
    }

    #[test]
    fn the_bucket_paces_drops_the_tail_and_lets_all_go_when_lifted() {
        let shaper = Shaper::new(3000);
        shaper.limit(80_000);
        let mut bucket = Bucket::new();
        let t0 = Instant::now();
        // 972 bytes and 28 of headers: 8,000 bits each. Three fit the queue; the fourth is
        // dropped.
        for _ in 0..4 {
            bucket.push(&shaper, &audio(972));
        }
        assert_eq!(shaper.counts().audio_dropped, 1);
        // The bucket starts full (six such datagrams' worth): all three go at once.
        let (out, next) = bucket.release(&shaper, t0);
        assert_eq!((out.len(), next), (3, None));
        for _ in 0..3 {
            bucket.push(&shaper, &audio(972));
        }
        assert_eq!(bucket.release(&shaper, t0).0.len(), 3);
        // Now empty: the next waits for 8,000 bits at 80 kbit/s.
        bucket.push(&shaper, &audio(972));
        let (out, next) = bucket.release(&shaper, t0);
        assert!(out.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_millis(100)));
        assert_eq!(
            bucket
                .release(&shaper, t0 + Duration::from_millis(100))
                .0
                .len(),
            1
        );
        // Lifted: whatever waits goes at once.
        bucket.push(&shaper, &audio(972));
        bucket.push(&shaper, &audio(972));
        shaper.lift();
        assert_eq!(
            bucket
                .release(&shaper, t0 + Duration::from_millis(101))
                .0
                .len(),
            2
        );
        shaper.count(&audio(100), true);
        assert_eq!(shaper.counts().audio_passed, 1);
    }
}
