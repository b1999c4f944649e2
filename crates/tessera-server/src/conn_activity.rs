//! Whether a connection has a request in flight, and since when it has had
//! none: what the idle keep-alive timeout of [`crate::conn_limit`] reads.
//!
//! A request is in flight from the moment the router sees it until its
//! response body has been sent or dropped, so a long stream or a long queue
//! wait never counts as idle, while bytes that trickle in between requests
//! (half a header, HTTP/2 pings) do not keep a connection open.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use crate::server::{ClientAddr, ConnInfo};

/// One connection's requests in flight; shared by its I/O and its requests.
#[derive(Debug)]
pub struct Activity {
    /// Requests in flight, and when the last one ended (or the connection
    /// opened).
    state: Mutex<(usize, Instant)>,
}

impl Activity {
    /// A connection just opened: idle since now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((0, Instant::now())),
        })
    }

    /// Since when the connection has had no request in flight; `None` while
    /// one is.
    pub fn idle_since(&self) -> Option<Instant> {
        let (in_flight, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (in_flight == 0).then_some(since)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
        RequestGuard(self.clone())
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0 {
            state.1 = Instant::now();
        }
    }
}

/// Middleware: holds a [`RequestGuard`] for each request until its response
/// body is done, and gives the request its client's address as
/// `ConnectInfo<ClientAddr>`.
pub async fn track(mut req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnectInfo<ConnInfo>>().cloned();
    let guard = conn.map(|ConnectInfo(conn)| {
        req.extensions_mut()
            .insert(ConnectInfo(ClientAddr(conn.addr)));
        conn.activity.begin()
    });
    let response = next.run(req).await;
    match guard {
        None => response,
        Some(guard) => response.map(|body| {
            Body::new(Guarded {
                body,
                _guard: guard,
            })
        }),
    }
}

/// A response body that holds its request's guard until it is done.
struct Guarded {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_only_with_no_request_in_flight() {
        let a = Activity::new();
        let opened = a.idle_since().expect("idle when opened");
        let first = a.begin();
        let second = a.begin();
        assert_eq!(a.idle_since(), None);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let ending = Instant::now();
        drop(first);
        assert_eq!(a.idle_since(), None, "one still in flight");
        drop(second);
        let since = a.idle_since().expect("idle");
        assert!(since >= ending && ending > opened, "idle from the last end");
    }
}
