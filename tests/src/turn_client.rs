//! TURN clients for tests: [`client`] starts the `turn` crate's client on a UDP socket or
//! on [`TcpClientConn`] (TCP or TLS). The crate's client reads and writes datagrams through a `Conn`, so
//! `TcpClientConn` frames them on a single TCP stream to the server (the server's own
//! framing rules, `quad_server::turn::tcp::frame_len`).

use async_trait::async_trait;
use quad_server::turn::tcp::{MAX_FRAME, frame_len};
use quad_shared::protocol::IceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// One TCP (or TLS) connection to a TURN server, seen as a datagram socket.
pub struct TcpClientConn {
    server: SocketAddr,
    local: SocketAddr,
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
}

impl TcpClientConn {
    pub async fn connect(server: SocketAddr) -> std::io::Result<TcpClientConn> {
        let stream = TcpStream::connect(server).await?;
        let local = stream.local_addr()?;
        Ok(Self::over(stream, server, local))
    }

    /// Over a stream already open to `server` (TURN over TLS).
    pub fn over(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        server: SocketAddr,
        local: SocketAddr,
    ) -> TcpClientConn {
        let (reader, writer) = tokio::io::split(stream);
        TcpClientConn {
            server,
            local,
            reader: Mutex::new(Box::new(reader)),
            writer: Mutex::new(Box::new(writer)),
        }
    }
}

fn other(what: impl Into<String>) -> webrtc_util::Error {
    webrtc_util::Error::Other(what.into())
}

#[async_trait]
impl Conn for TcpClientConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut reader = self.reader.lock().await;
        let mut frame = vec![0u8; MAX_FRAME + 3];
        reader.read_exact(&mut frame[..4]).await?;
        let (len, padded) = frame_len(&frame[..4]).ok_or_else(|| other("not a TURN frame"))?;
        let body = frame
            .get_mut(4..padded)
            .ok_or_else(|| other("frame over the limit"))?;
        reader.read_exact(body).await?;
        let dst = buf
            .get_mut(..len)
            .ok_or_else(|| other("frame larger than the buffer"))?;
        dst.copy_from_slice(&frame[..len]);
        Ok((len, self.server))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.server).await
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        let mut frame = buf.to_vec();
        if let Some((_, padded)) = frame_len(buf) {
            frame.resize(padded.max(buf.len()), 0);
        }
        let mut writer = self.writer.lock().await;
        writer.write_all(&frame).await?;
        writer.flush().await?;
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        let _ = self.writer.lock().await.shutdown().await;
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// A started TURN client of `turn` over `conn`, in the embedded server's realm.
pub async fn client(
    conn: Arc<dyn Conn + Send + Sync>,
    turn: SocketAddr,
    username: &str,
    password: &str,
) -> anyhow::Result<Client> {
    let client = Client::new(ClientConfig {
        stun_serv_addr: turn.to_string(),
        turn_serv_addr: turn.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "quad".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await?;
    client.listen().await?;
    Ok(client)
}

/// The TURN user name and password in a list of ICE servers (`Welcome`'s).
pub fn turn_credentials(servers: &[IceServer]) -> anyhow::Result<(String, String)> {
    let turn = servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .ok_or_else(|| anyhow::anyhow!("no TURN entry in {servers:?}"))?;
    match (&turn.username, &turn.credential) {
        (Some(user), Some(pass)) => Ok((user.clone(), pass.clone())),
        _ => anyhow::bail!("the TURN entry has no credentials"),
    }
}
