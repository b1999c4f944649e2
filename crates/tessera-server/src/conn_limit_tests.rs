use std::time::Instant;

use axum::routing::get;
use axum::Router;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Serves "ok" at `/` and, after 2.5 s, at `/slow` on a loopback port under
/// `limits`, composed as `server::serve` composes the real router.
async fn server(limits: ConnectionLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        "ok"
    };
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/slow", get(slow))
        .layer(axum::middleware::from_fn(crate::conn_activity::track))
        .into_make_service_with_connect_info::<crate::server::ConnInfo>();
    tokio::spawn(async move { axum::serve(Limited::new(listener, limits), app).await });
    addr
}

/// A whole request on a new connection; the response as text.
async fn get_ok(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut out = String::new();
    let read = s.read_to_string(&mut out);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("answered in time")
        .expect("read");
    out
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The soft limit on open files, from /proc (Linux).
fn fd_limit() -> usize {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_at_the_deadline_and_others_served() {
    let timeout = Duration::from_millis(1500);
    let addr = server(ConnectionLimits {
        max_connections: 1 << 20,
        max_per_client: 1 << 20,
        header_read_timeout: timeout,
        ..ConnectionLimits::default()
    })
    .await;
    let baseline = open_fds();
    // Each half-open connection costs two descriptors here (client and server).
    let n = 2000.min(fd_limit().saturating_sub(baseline + 200) / 2);
    assert!(
        n >= 200,
        "too few descriptors for the test: limit {}",
        fd_limit()
    );
    // Before the first connect: no deadline can pass before `started + timeout`.
    let started = Instant::now();
    let mut half_open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .expect("half a header");
        half_open.push(s);
    }
    // Served meanwhile.
    let answer = get_ok(addr).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    // Every half-open connection is closed by the server (EOF or a reset),
    // none before its deadline.
    let mut first_close = None;
    for s in &mut half_open {
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        // EOF or a reset both mean closed; only a timeout means still open.
        let limit = timeout + Duration::from_secs(10);
        if tokio::time::timeout(limit, read).await.is_err() {
            panic!("a connection was still open after {:?}", started.elapsed());
        }
        first_close.get_or_insert_with(|| started.elapsed());
    }
    let first_close = first_close.expect("connections");
    assert!(
        first_close >= timeout,
        "one closed after {first_close:?}, before the deadline"
    );
    drop(half_open);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > baseline + 8 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {baseline} before",
            open_fds()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_cap_a_connection_gets_503_at_once() {
    let addr = server(ConnectionLimits {
        max_connections: 100,
        max_per_client: 2,
        header_read_timeout: Duration::from_secs(30),
        ..ConnectionLimits::default()
    })
    .await;
    let a = TcpStream::connect(addr).await.expect("connect");
    let b = TcpStream::connect(addr).await.expect("connect");
    let third = get_ok(addr).await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.contains("too many open connections"), "{third}");
    drop((a, b));
    // The places come back once the server sees them closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_ok(addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one response with a body of `len` bytes off a kept-alive connection.
async fn read_response(s: &mut TcpStream, len: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            if got.len() >= end + 4 + len {
                return text.into_owned();
            }
        }
    }
}

/// Waits until the server closes `s` (EOF or reset), at most `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_but_not_while_a_request_runs() {
    let idle = Duration::from_millis(1000);
    let addr = server(ConnectionLimits {
        idle_timeout: idle,
        ..ConnectionLimits::default()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // A request that runs longer than the idle timeout is not cut off.
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("send");
    let answer = read_response(&mut s, 2).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive: a second request on the same connection is served.
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("send");
    let answered = Instant::now();
    let answer = read_response(&mut s, 2).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Then, idle, it is closed: not before the timeout, and not never.
    assert!(
        closed_within(&mut s, idle + Duration::from_secs(10)).await,
        "an idle connection stayed open"
    );
    assert!(
        answered.elapsed() >= idle,
        "closed after {:?}",
        answered.elapsed()
    );

    // Half a second request header does not keep a connection open either.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nx-slow: ")
        .await
        .expect("send");
    read_response(&mut s, 2).await;
    assert!(
        closed_within(&mut s, idle + Duration::from_secs(10)).await,
        "a connection trickling a second header stayed open"
    );
}

/// An HTTP/2 connection by prior knowledge (h2c) to `addr`: its sender, and
/// the task driving it, which ends when the server closes the connection.
async fn h2c(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, driver)
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<String>,
    path: &str,
) -> (u16, axum::http::Version, String) {
    use http_body_util::BodyExt;
    let request = axum::http::Request::get(format!("http://localhost{path}"))
        .body(String::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    let (status, version) = (response.status().as_u16(), response.version());
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        version,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_served_under_the_same_limits() {
    let idle = Duration::from_millis(1000);
    let addr = server(ConnectionLimits {
        max_connections: 100,
        max_per_client: 1,
        idle_timeout: idle,
        ..ConnectionLimits::default()
    })
    .await;
    let (mut sender, driver) = h2c(addr).await;
    // Two streams at once on the one connection, one outliving the idle
    // timeout.
    let mut second = sender.clone();
    let slow = tokio::spawn(async move { h2_get(&mut second, "/slow").await });
    let (status, version, body) = h2_get(&mut sender, "/").await;
    assert_eq!(version, axum::http::Version::HTTP_2);
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _, body) = slow.await.expect("slow stream");
    assert_eq!((status, body.as_str()), (200, "ok"));
    // The HTTP/2 connection counts against the per-client cap of one.
    let refused = get_ok(addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    // Idle, the HTTP/2 connection is closed, and its place comes back.
    let closed = tokio::time::timeout(idle + Duration::from_secs(10), driver).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection stayed open");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_ok(addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
