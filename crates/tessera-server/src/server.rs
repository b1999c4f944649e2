//! Running the router on a socket, over plain HTTP or TLS, with graceful
//! shutdown. axum's server speaks HTTP/1.1 and HTTP/2 on every connection
//! (h2c by prior knowledge, or h2 negotiated by ALPN over TLS), all under the
//! same connection limits.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::conn_activity::{self, Activity};
use crate::conn_limit::Limited;
use crate::routes::router;
use crate::state::AppState;
use crate::tls::TlsListener;

/// The client's address, which handlers and middleware read as
/// `ConnectInfo<ClientAddr>` over either kind of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// What the server knows of a connection; requests see its address as
/// `ConnectInfo<ClientAddr>` ([`conn_activity::track`] puts it there).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub addr: SocketAddr,
    /// The connection's requests in flight.
    pub activity: Arc<Activity>,
}

impl Connected<IncomingStream<'_, Limited<TcpListener>>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, Limited<TcpListener>>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            activity: stream.io().activity().clone(),
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            activity: stream.io().activity().clone(),
        }
    }
}

/// Serves `state` on `listener` (over TLS with `tls`) until `shutdown`
/// resolves; then stops accepting connections and lets in-flight requests
/// finish for up to `grace` (the ones still running after that are dropped,
/// which aborts them).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            "shutting down: not accepting new connections; finishing in-flight requests for up to {}s",
            grace.as_secs_f64()
        );
        let _ = started_tx.send(());
    };
    let limits = state.config().connections;
    state.start_batches();
    let app = router(state)
        .layer(axum::middleware::from_fn(conn_activity::track))
        .into_make_service_with_connect_info::<ConnInfo>();
    let server: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
        None => Box::pin(
            axum::serve(Limited::new(listener, limits), app)
                .with_graceful_shutdown(signal)
                .into_future(),
        ),
        Some(acceptor) => Box::pin(
            axum::serve(TlsListener::new(listener, acceptor, limits)?, app)
                .with_graceful_shutdown(signal)
                .into_future(),
        ),
    };
    let deadline = async move {
        if started_rx.await.is_err() {
            // The server ended before any shutdown began.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("shutdown deadline passed; dropping the requests still in flight");
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
