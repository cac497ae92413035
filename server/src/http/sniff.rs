//! With TLS on, what arrives on the web port, told apart by its first bytes:
//! - a TLS handshake (a record of type 22): the handshake is made, then the first byte
//!   inside tells HTTPS from TURN over TLS. A TURN client's first message is always a
//!   STUN request, whose first two bits are zero; an HTTP request starts with a letter.
//!   So a browser on a network that lets only this port out still gets its relay (a
//!   `turns:` URL on the web port), and the port is the only one such a network needs.
//! - anything else is plain HTTP, answered with a redirect to HTTPS ([`redirect`]).
//!
//! All of it must arrive within the header timeout: a connection that sends nothing, or
//! stalls in its handshake, is closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A byte stream a connection is served over (TCP, or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The TLS record type of a handshake: every TLS connection starts with one.
const TLS_HANDSHAKE: u8 = 22;

/// What a connection turned out to be.
pub enum Arrival {
    /// HTTP inside TLS.
    Https(Box<dyn Stream>),
    /// STUN/TURN inside TLS.
    Turn(Box<dyn Stream>),
    /// Plain HTTP on the TLS port: to be redirected.
    PlainHttp(TcpStream),
    /// Closed, timed out or not understood; why.
    Gone(String),
}

/// Tells what `stream` is, making the TLS handshake when it is TLS.
pub async fn classify(
    stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    within: Duration,
) -> Arrival {
    match tokio::time::timeout(within, classify_now(stream, acceptor)).await {
        Ok(arrival) => arrival,
        Err(_) => Arrival::Gone(format!("nothing usable within {within:?}")),
    }
}

async fn classify_now(stream: TcpStream, acceptor: &tokio_rustls::TlsAcceptor) -> Arrival {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Arrival::Gone("closed before sending".into()),
        Ok(_) => {}
        Err(e) => return Arrival::Gone(e.to_string()),
    }
    if first[0] != TLS_HANDSHAKE {
        return Arrival::PlainHttp(stream);
    }
    let mut tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => return Arrival::Gone(format!("TLS handshake failed: {e}")),
    };
    match tls.read(&mut first).await {
        Ok(0) => return Arrival::Gone("closed after the handshake".into()),
        Ok(_) => {}
        Err(e) => return Arrival::Gone(e.to_string()),
    }
    let stream = Box::new(Prefixed {
        prefix: Some(first[0]),
        inner: tls,
    });
    if is_stun(first[0]) {
        Arrival::Turn(stream)
    } else {
        Arrival::Https(stream)
    }
}

/// Whether a stream's first byte starts a STUN message (the first two bits are zero).
/// ChannelData (`0b01`) never comes first: a TURN client allocates before anything else.
pub fn is_stun(first: u8) -> bool {
    first >> 6 == 0
}

/// A stream with one byte already read from it, given back first.
struct Prefixed<S> {
    prefix: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0
            && let Some(byte) = self.prefix.take()
        {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The answer to a plain-HTTP request: a permanent redirect to the same path over HTTPS,
/// on `public_url`'s host if it is set, else on the host asked for. `https_port` is the
/// TLS port when the request came to another one (`http_redirect_listen`, port 80): the
/// host asked for then keeps its name and takes that port (none for 443).
pub fn redirect(
    req: &hyper::Request<hyper::body::Incoming>,
    public_url: Option<&str>,
    https_port: Option<u16>,
) -> warp::reply::Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = match public_url.and_then(|u| u.strip_prefix("https://")) {
        Some(rest) => rest.split(['/', '?', '#']).next().map(str::to_owned),
        None => req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
            .map(|a| match https_port {
                None => a.to_string(),
                Some(443) => a.host().to_owned(),
                Some(port) => format!("{}:{port}", a.host()),
            }),
    };
    let mut res = warp::reply::Response::new("".into());
    match authority
        .and_then(|a| hyper::header::HeaderValue::from_str(&format!("https://{a}{path}")).ok())
    {
        Some(location) => {
            *res.status_mut() = hyper::StatusCode::PERMANENT_REDIRECT;
            res.headers_mut().insert(hyper::header::LOCATION, location);
        }
        None => {
            *res.status_mut() = hyper::StatusCode::BAD_REQUEST;
            *res.body_mut() =
                "400 Bad Request: this server speaks HTTPS; no Host to send you to\n".into();
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_is_told_from_http_by_its_first_byte() {
        // A STUN Allocate request, a Binding request.
        assert!(is_stun(0x00));
        assert!(is_stun(0x01));
        // HTTP methods start with capital letters.
        for method in ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "CONNECT"] {
            assert!(!is_stun(method.as_bytes()[0]), "{method}");
        }
    }

    #[tokio::test]
    async fn a_prefixed_stream_gives_its_byte_back_first() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"ET /")
            .await
            .unwrap();
        drop(a);
        let mut stream = Prefixed {
            prefix: Some(b'G'),
            inner: b,
        };
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET /");
    }
}
