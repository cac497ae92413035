//! A lossy UDP proxy for media tests: it stands in for one server address, relays datagrams
//! both ways, and drops the first copy of every 10th VP8 RTP packet (payload type 96, by
//! sequence number) in each direction. The RTP header is readable under SRTP, and a
//! retransmission (the same sequence number again) gets through, so only NACK and
//! retransmission can fill the gaps. A proxy can also be cut: from then on it relays
//! nothing, as a NAT binding or a relay that stops answering.

use anyhow::{Context, Result, anyhow};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::UdpSocket;

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
            let p = spawn(server).await?;
            proxies.insert(server, p.clone());
            p.addr
        }
    };
    fields[4] = proxy.ip().to_string();
    fields[5] = proxy.port().to_string();
    Ok(fields.join(" "))
}
