//! Connection-level limits, below HTTP: a cap on open connections, a cap per
//! client address, and a deadline for a connection's first request header.
//! Over a cap a connection gets a 503 at once and is closed, never queued; a
//! client that sends half a header and stops is cut off at the deadline, so
//! one client cannot hold the server's file descriptors.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// The limits; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_per_client: usize,
    /// How long a connection may take to send its first request header.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_per_client: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// What is answered to a connection over a cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 96\r\n\r\n\
{\"error\":{\"message\":\"too many open connections\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// A connection's place in the counts, given back on drop.
struct Permit {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total -= 1;
        if let Some(n) = c.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.ip);
            }
        }
    }
}

/// A listener that applies [`ConnectionLimits`] to what `L` accepts.
pub struct Limited<L> {
    inner: L,
    limits: ConnectionLimits,
    counts: Arc<Mutex<Counts>>,
}

impl<L> Limited<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            limits,
            counts: Arc::default(),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<Permit> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = c.per_client.get(&ip).copied().unwrap_or(0);
        if c.total >= self.limits.max_connections || mine >= self.limits.max_per_client {
            return None;
        }
        c.total += 1;
        *c.per_client.entry(ip).or_default() += 1;
        Some(Permit {
            counts: self.counts.clone(),
            ip,
        })
    }
}

impl<L> axum::serve::Listener for Limited<L>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    type Io = LimitedIo<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            if let Some(permit) = self.admit(addr.ip()) {
                let deadline = Box::pin(tokio::time::sleep(self.limits.header_read_timeout));
                let io = LimitedIo {
                    io,
                    _permit: permit,
                    header: Some(HeaderWatch { deadline, tail: 0 }),
                };
                return (io, addr);
            }
            tracing::warn!(client = %addr, "connection refused: over the connection limits");
            tokio::spawn(async move {
                let mut io = io;
                let refuse = async {
                    io.write_all(REFUSAL).await?;
                    io.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
            });
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Watches for the end of the first request header (`\r\n\r\n`).
struct HeaderWatch {
    deadline: Pin<Box<Sleep>>,
    /// How many bytes of `\r\n\r\n` the data so far ends with.
    tail: usize,
}

impl HeaderWatch {
    /// Takes in bytes read; true once the header has ended.
    fn feed(&mut self, data: &[u8]) -> bool {
        const END: &[u8] = b"\r\n\r\n";
        for &b in data {
            self.tail = if b == END[self.tail] {
                self.tail + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.tail == END.len() {
                return true;
            }
        }
        false
    }
}

/// A connection holding its place in the counts, cut off if its first
/// request header is not in by the deadline.
pub struct LimitedIo<Io> {
    io: Io,
    _permit: Permit,
    header: Option<HeaderWatch>,
}

impl<Io> LimitedIo<Io> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for LimitedIo<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(watch) = &mut this.header {
            if watch.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request header did not arrive in time",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watch)) = (&polled, &mut this.header) {
            if watch.feed(&buf.filled()[before..]) {
                this.header = None;
            }
        }
        polled
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for LimitedIo<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "conn_limit_tests.rs"]
mod tests;
