//! A connection under the limits of [`crate::conn_limit`]: it holds its place
//! in the connection counts while open, is cut off if its first request
//! header is not in by the header deadline, and is closed once it has had no
//! request in flight for the idle timeout (see [`crate::conn_activity`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::conn_activity::Activity;
use crate::conn_limit::Permit;

/// Watches for the end of the first request header (`\r\n\r\n`; an HTTP/2
/// client's preface ends the same way).
pub(crate) struct HeaderWatch {
    deadline: Pin<Box<Sleep>>,
    /// How many bytes of `\r\n\r\n` the data so far ends with.
    tail: usize,
}

impl HeaderWatch {
    /// A header due within `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(timeout)),
            tail: 0,
        }
    }

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

/// Closes a connection that has had no request in flight for `timeout`.
struct IdleWatch {
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
}

impl IdleWatch {
    /// True once the connection has been idle for the timeout. Registers
    /// `cx` to be woken when that may next be the case.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let next = match self.activity.idle_since() {
                // Busy: look again in a while; the end of the request
                // restarts the count.
                None => now + self.timeout,
                Some(since) if now.duration_since(since) >= self.timeout => return true,
                Some(since) => since + self.timeout,
            };
            self.timer.as_mut().reset(next);
        }
        false
    }
}

/// A connection holding its place in the counts, cut off if its first
/// request header is late or when it has been idle too long.
pub struct LimitedIo<Io> {
    io: Io,
    _permit: Permit,
    header: Option<HeaderWatch>,
    idle: IdleWatch,
}

impl<Io> LimitedIo<Io> {
    /// Wraps `io`, admitted with `permit`; `header` was started when the
    /// connection was accepted.
    pub(crate) fn new(io: Io, permit: Permit, header: HeaderWatch, idle_timeout: Duration) -> Self {
        let activity = Activity::new();
        Self {
            io,
            _permit: permit,
            header: Some(header),
            idle: IdleWatch {
                timeout: idle_timeout,
                timer: Box::pin(tokio::time::sleep(idle_timeout)),
                activity,
            },
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }

    /// The connection's requests in flight.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.idle.activity
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
        if this.idle.expired(cx) {
            // End of stream: HTTP/1.1 and HTTP/2 both close quietly.
            return Poll::Ready(Ok(()));
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_header_end_is_found_across_reads() {
        let mut w = HeaderWatch::new(Duration::ZERO);
        assert!(!w.feed(b"GET / HTTP/1.1\r\nhost: x\r"));
        assert!(!w.feed(b"\n\r"));
        assert!(w.feed(b"\nbody"));
        let mut w = HeaderWatch::new(Duration::ZERO);
        assert!(!w.feed(b"a\r\r\n\r"));
        assert!(w.feed(b"\n"));
        let mut w = HeaderWatch::new(Duration::ZERO);
        assert!(
            w.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            "the HTTP/2 preface"
        );
    }
}
