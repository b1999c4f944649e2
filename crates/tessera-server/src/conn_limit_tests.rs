use std::time::Instant;

use axum::routing::get;
use axum::Router;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Serves "ok" on a loopback port under `limits`.
async fn server(limits: ConnectionLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/", get(|| async { "ok" }));
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

#[tokio::test]
async fn the_header_end_is_found_across_reads() {
    let mut w = HeaderWatch {
        deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        tail: 0,
    };
    assert!(!w.feed(b"GET / HTTP/1.1\r\nhost: x\r"));
    assert!(!w.feed(b"\n\r"));
    assert!(w.feed(b"\nbody"));
    let mut w = HeaderWatch {
        deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        tail: 0,
    };
    assert!(!w.feed(b"a\r\r\n\r"));
    assert!(w.feed(b"\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_at_the_deadline_and_others_served() {
    let timeout = Duration::from_millis(1500);
    let addr = server(ConnectionLimits {
        max_connections: 1 << 20,
        max_per_client: 1 << 20,
        header_read_timeout: timeout,
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
