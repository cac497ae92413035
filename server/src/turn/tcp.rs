//! TURN over TCP (RFC 5766 §2.1): the `turn` crate's server reads and writes datagrams
//! through a `Conn`, so this adapter presents many TCP clients as one datagram socket.
//! Each connection is split into STUN messages and ChannelData frames (padded to four
//! bytes on a stream); replies go back on the connection they came from. A client that
//! sends anything else, or a frame over the size limit, is disconnected; the other
//! connections go on.
//!
//! Connections are bounded ([`TcpLimits`]): in all and per client address, and in time: a
//! connection must send its first frame soon after it opens, and one that sends nothing
//! for longer than any TURN refresh period is closed.
//!
//! TURN over TLS arrives on the web port (see `http::sniff`) and is handed here with
//! [`TcpTurnConn::adopt`] once its TLS handshake is made: the same framing, the same limits.

use async_trait::async_trait;
use dashmap::DashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

/// The largest frame accepted from a client: the TURN server reads into 1,500 bytes.
pub const MAX_FRAME: usize = 1500;
/// Bounds on TURN/TCP connections.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections at most.
    pub max_clients: usize,
    /// Open connections from one IP address at most.
    pub per_ip: usize,
    /// How long a new connection may take to send its first frame.
    pub first_frame: Duration,
    /// How long a connection may send nothing (longer than the TURN refresh periods).
    pub idle: Duration,
}
/// Frames queued for one client before more are dropped (as UDP would lose them).
const SEND_QUEUE: usize = 256;

/// Many TCP clients seen as one datagram socket.
pub struct TcpTurnConn {
    local: SocketAddr,
    incoming: Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    clients: Arc<Clients>,
    stop: CancellationToken,
}

/// The open connections, by client address, with the limits they are held to.
struct Clients {
    by_addr: DashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    per_ip: DashMap<IpAddr, usize>,
    limits: TcpLimits,
    incoming: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    stop: CancellationToken,
}

impl TcpTurnConn {
    pub fn start(
        listener: TcpListener,
        limits: TcpLimits,
        stop: CancellationToken,
    ) -> std::io::Result<Arc<Self>> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let clients = Arc::new(Clients {
            by_addr: DashMap::new(),
            per_ip: DashMap::new(),
            limits,
            incoming: tx,
            stop: stop.clone(),
        });
        let conn = Arc::new(TcpTurnConn {
            local,
            incoming: Mutex::new(rx),
            clients: clients.clone(),
            stop: stop.clone(),
        });
        tokio::spawn(accept_loop(listener, clients, stop));
        Ok(conn)
    }

    /// Serves a client whose stream was accepted elsewhere (TURN over TLS on the web
    /// port), under the same limits as the ones accepted here.
    pub fn adopt(&self, stream: impl Stream + 'static, peer: SocketAddr) {
        self.clients.adopt(stream, peer);
    }

    /// Open client connections.
    pub fn clients(&self) -> usize {
        self.clients.by_addr.len()
    }
}

/// A byte stream a TURN client is served over (TCP, or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn accept_loop(listener: TcpListener, clients: Arc<Clients>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("TURN/TCP accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        clients.adopt(stream, peer);
    }
}

impl Clients {
    fn adopt(self: &Arc<Self>, stream: impl Stream + 'static, peer: SocketAddr) {
        if self.by_addr.len() >= self.limits.max_clients {
            tracing::warn!(%peer, "TURN/TCP: too many clients; connection refused");
            return;
        }
        if self.by_addr.contains_key(&peer) {
            // The same address and port on two of the server's ports: replies could not
            // tell the connections apart.
            tracing::info!(%peer, "TURN/TCP: this client address is already connected; refused");
            return;
        }
        {
            let mut from_ip = self.per_ip.entry(peer.ip()).or_insert(0);
            if *from_ip >= self.limits.per_ip {
                tracing::info!(%peer, "TURN/TCP: too many connections from this address; refused");
                return;
            }
            *from_ip += 1;
        }
        let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
        self.by_addr.insert(peer, out_tx);
        let clients = self.clone();
        tokio::spawn(async move {
            let reason = serve_client(
                stream,
                peer,
                clients.incoming.clone(),
                out_rx,
                clients.limits,
                clients.stop.clone(),
            )
            .await;
            clients.by_addr.remove(&peer);
            clients.per_ip.remove_if_mut(&peer.ip(), |_, n| {
                *n -= 1;
                *n == 0
            });
            tracing::debug!(%peer, "TURN/TCP client gone: {reason}");
        });
    }
}

/// Reads frames from one client into `incoming` and writes its queued replies, until
/// either side ends. Returns why it ended.
async fn serve_client(
    stream: impl Stream,
    peer: SocketAddr,
    incoming: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    limits: TcpLimits,
    stop: CancellationToken,
) -> String {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        while let Some(frame) = outgoing.recv().await {
            writer.write_all(&frame).await?;
            // A TLS stream holds what was written until it is flushed.
            writer.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let read = async move {
        let mut frame = vec![0u8; MAX_FRAME + 3];
        let mut wait = limits.first_frame;
        loop {
            // A frame's first bytes must come within the wait; its body follows at once.
            let timed = tokio::time::timeout(wait, reader.read_exact(&mut frame[..4])).await;
            let Ok(head) = timed else {
                return Ok(format!("nothing received for {wait:?}"));
            };
            head?;
            wait = limits.idle;
            let Some((len, padded)) = frame_len(&frame[..4]) else {
                return Ok::<String, std::io::Error>("not STUN or ChannelData".into());
            };
            if padded > frame.len() {
                return Ok(format!("a frame of {len} bytes is over the limit"));
            }
            match tokio::time::timeout(limits.first_frame, reader.read_exact(&mut frame[4..padded]))
                .await
            {
                Ok(body) => body?,
                Err(_) => return Ok("a frame's body did not follow its header".into()),
            };
            if incoming.send((frame[..len].to_vec(), peer)).await.is_err() {
                return Ok("server closed".into());
            }
        }
    };
    let reason = tokio::select! {
        r = read => match r {
            Ok(reason) => reason,
            Err(e) => e.to_string(),
        },
        r = write => match r {
            Ok(()) => "closed".into(),
            Err(e) => e.to_string(),
        },
        () = stop.cancelled() => "server stopping".into(),
    };
    // Hang up in order (TLS close_notify, then FIN) so the client reads the end rather
    // than a reset; bounded, as the client may not be reading.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    reason
}

/// From a frame's first four bytes: its length and its length on the stream (padded).
/// STUN messages start with two zero bits and carry their body length after the type;
/// ChannelData starts with a channel number in 0x4000..=0x7FFF.
pub fn frame_len(head: &[u8]) -> Option<(usize, usize)> {
    let (&first, rest) = head.split_first()?;
    let body = usize::from(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]));
    match first >> 6 {
        0b00 => Some((20 + body, 20 + body)),
        0b01 => Some((4 + body, (4 + body).next_multiple_of(4))),
        _ => None,
    }
}

fn unsupported(what: &str) -> webrtc_util::Error {
    webrtc_util::Error::Other(format!("TURN/TCP conn: {what} is not supported"))
}

#[async_trait]
impl Conn for TcpTurnConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(unsupported("connect"))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(unsupported("recv"))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut incoming = self.incoming.lock().await;
        loop {
            let next = tokio::select! {
                n = incoming.recv() => n,
                () = self.stop.cancelled() => None,
            };
            let Some((frame, from)) = next else {
                return Err(webrtc_util::Error::Other("TURN/TCP conn closed".into()));
            };
            // `frame_len` bounds frames by MAX_FRAME, the server's buffer; skip any other.
            if let Some(dst) = buf.get_mut(..frame.len()) {
                dst.copy_from_slice(&frame);
                return Ok((frame.len(), from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(unsupported("send"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let Some(client) = self.clients.by_addr.get(&target).map(|c| c.clone()) else {
            // The client hung up: the datagram is lost, as on UDP.
            tracing::debug!(%target, "TURN/TCP: no connection; reply dropped");
            return Ok(buf.len());
        };
        let mut frame = buf.to_vec();
        if let Some((_, padded)) = frame_len(buf) {
            frame.resize(padded.max(buf.len()), 0);
        }
        // A full queue drops the frame, as a congested UDP path would.
        let _ = client.try_send(frame);
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.stop.cancel();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_measured_from_their_headers() {
        // A STUN binding request with an 8-byte body.
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x08]), Some((28, 28)));
        // ChannelData on channel 0x4001 with 5 bytes: padded to 12 on a stream.
        assert_eq!(frame_len(&[0x40, 0x01, 0x00, 0x05]), Some((9, 12)));
        // Neither: refused.
        assert_eq!(frame_len(&[0xC0, 0, 0, 0]), None);
        assert_eq!(frame_len(&[0x00, 0x01]), None);
        // An HTTP request looks like ChannelData far over the limit, so it is cut off.
        let (_, padded) = frame_len(b"GET ").unwrap();
        assert!(padded > MAX_FRAME + 3);
    }
}
