use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::*;

/// Serves "ok" over TLS with a fresh self-signed certificate under `limits`;
/// the address and a connector that trusts it and offers `alpn`.
async fn server(limits: ConnectionLimits, alpn: &[&[u8]]) -> (SocketAddr, TlsConnector) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key");
    let acceptor = load_acceptor(&cert, &key).expect("acceptor");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(crate::conn_activity::track))
        .into_make_service_with_connect_info::<crate::server::ConnInfo>();
    let tls = TlsListener::new(listener, acceptor, limits).expect("listener");
    tokio::spawn(async move { axum::serve(tls, app).await });

    let mut roots = RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(made.cert.pem().as_bytes()).expect("der");
    roots.add(der).expect("root");
    let provider = Arc::new(default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (addr, TlsConnector::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn_and_served() {
    let (addr, connector) = server(ConnectionLimits::default(), &[b"h2", b"http/1.1"]).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let request = axum::http::Request::get("https://localhost/")
        .body(String::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(&body.to_bytes()[..], b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_in_progress_counts_against_the_caps() {
    let limits = ConnectionLimits {
        max_per_client: 1,
        ..ConnectionLimits::default()
    };
    let (addr, connector) = server(limits, &[b"http/1.1"]).await;
    let name = ServerName::try_from("localhost").expect("name");
    // A client that connects and never starts its handshake holds the one
    // place: the next connection is closed before its handshake.
    let silent = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let refused = connector.connect(name.clone(), tcp).await;
    assert!(refused.is_err(), "a second connection was handshaken");
    // Its place comes back when it goes.
    drop(silent);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        if connector.connect(name.clone(), tcp).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
