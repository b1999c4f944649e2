//! Connection-level limits, below HTTP: a cap on open connections, a cap per
//! client address, a deadline for a connection's first request header and an
//! idle timeout between requests. Over a cap a connection gets a 503 at once
//! and is closed, never queued; a client that sends half a header and stops
//! is cut off at the deadline, and one that keeps a connection open without
//! using it at the idle timeout, so one client cannot hold the server's file
//! descriptors. HTTP/1.1 and HTTP/2 (h2c, or negotiated over TLS) connections
//! count alike; a TLS connection counts from before its handshake
//! (`crate::tls` admits through the same `Gate`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::conn_io::HeaderWatch;
pub use crate::conn_io::LimitedIo;

/// The limits; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_per_client: usize,
    /// How long a connection may take to send its first request header.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_per_client: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
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
pub(crate) struct Permit {
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

/// Admission under [`ConnectionLimits`]: the counts every listener of one
/// server shares.
#[derive(Clone)]
pub(crate) struct Gate {
    limits: ConnectionLimits,
    counts: Arc<Mutex<Counts>>,
}

impl Gate {
    pub(crate) fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// A place for a new connection from `ip`, or `None` over a cap.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<Permit> {
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

    /// `io`, admitted with `permit`, under the deadlines; `header` was
    /// started when it was accepted.
    pub(crate) fn wrap<Io>(&self, io: Io, permit: Permit, header: HeaderWatch) -> LimitedIo<Io> {
        LimitedIo::new(io, permit, header, self.limits.idle_timeout)
    }

    /// The first header's deadline for a connection accepted now.
    pub(crate) fn header_watch(&self) -> HeaderWatch {
        HeaderWatch::new(self.limits.header_read_timeout)
    }
}

/// Answers a connection over a cap with a 503 (plain HTTP) and closes it,
/// off the accept loop.
pub(crate) fn refuse<Io: AsyncWrite + Unpin + Send + 'static>(io: Io, client: SocketAddr) {
    tracing::warn!(%client, "connection refused: over the connection limits");
    tokio::spawn(async move {
        let mut io = io;
        let refuse = async {
            io.write_all(REFUSAL).await?;
            io.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
    });
}

/// A listener that applies [`ConnectionLimits`] to what `L` accepts.
pub struct Limited<L> {
    inner: L,
    gate: Gate,
}

impl<L> Limited<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            gate: Gate::new(limits),
        }
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
            match self.gate.admit(addr.ip()) {
                Some(permit) => {
                    let header = self.gate.header_watch();
                    return (self.gate.wrap(io, permit, header), addr);
                }
                None => refuse(io, addr),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
#[path = "conn_limit_tests.rs"]
mod tests;
