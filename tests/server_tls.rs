//! HTTPS: a self-signed certificate made in the test (rcgen), the server on
//! rustls, and a rustls client that trusts only that certificate.

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{read_response, request_head, Response, MODEL};
use serde_json::json;
use tessera_server::{load_acceptor, ServerConfig, TlsError};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Writes a fresh self-signed certificate for `localhost` and its key; returns
/// their paths and the certificate's PEM.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert_pem = made.cert.pem();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    (cert, key, cert_pem)
}

fn https(
    addr: SocketAddr,
    roots: &RootCertStore,
    method: &str,
    path: &str,
    body: &[u8],
) -> Response {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(request_head(addr, method, path, &[], body.len()).as_bytes())
        .expect("head");
    tls.write_all(body).expect("body");
    read_response(BufReader::new(tls))
}

#[test]
fn a_self_signed_certificate_serves_https() {
    let dir = std::env::temp_dir().join(format!("tessera-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key, cert_pem) = certificate(&dir);
    let acceptor = load_acceptor(&cert, &key).expect("the certificate loads");

    let registry = common::models();
    common::register(&registry, MODEL, &common::engine_args("32MiB", 16));
    let addr = common::serve_with(registry, ServerConfig::default(), Some(acceptor));

    let mut roots = RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("der");
    roots.add(der).expect("root");
    let r = https(addr, &roots, "GET", "/health", b"");
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let body = json!({"prompt": "Hello", "max_tokens": 3, "ignore_eos": true}).to_string();
    let r = https(addr, &roots, "POST", "/v1/completions", body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = std::panic::catch_unwind(|| common::request(addr, "GET", "/health", b""));
    assert!(plain.map_or(true, |r| r.status != 200));
    // A client that does not trust the certificate fails its handshake, and
    // the server goes on serving.
    let untrusted =
        std::panic::catch_unwind(|| https(addr, &RootCertStore::empty(), "GET", "/health", b""));
    assert!(untrusted.is_err());
    assert_eq!(https(addr, &roots, "GET", "/health", b"").status, 200);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn bad_pem_files_are_named() {
    let dir = std::env::temp_dir().join(format!("tessera-badtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key, _) = certificate(&dir);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let e = load_acceptor(&garbage, &key).err().expect("no certificate");
    assert!(
        matches!(&e, TlsError::Pem { path, .. } if *path == garbage),
        "{e}"
    );
    let e = load_acceptor(&cert, &garbage).err().expect("no key");
    assert!(e.to_string().contains("garbage.pem"), "{e}");
    let missing = dir.join("missing.pem");
    let e = load_acceptor(&missing, &key).err().expect("missing");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
