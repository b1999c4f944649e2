//! Sinks parsed, content hashed, the file sink rotated, events encoded.

use std::sync::mpsc::sync_channel;

use serde_json::json;

use super::*;

fn event(id: &str, kind: &'static str) -> Event {
    Event {
        id: id.into(),
        kind,
        source: "tessera".into(),
        time: "2026-01-01T00:00:00.000000Z".into(),
        model: "m".into(),
        version: 3,
        endpoint: "/v1/completions".into(),
        status: (kind == RESPONSE_TYPE).then_some(200),
        body: json!({"prompt": "hello", "max_tokens": 4}),
    }
}

#[test]
fn sinks_parse_and_bad_ones_are_named() {
    assert_eq!(
        Sink::parse("file:/tmp/p.jsonl"),
        Ok(Sink::File("/tmp/p.jsonl".into()))
    );
    assert!(Sink::parse("http://127.0.0.1:9/log").is_ok());
    assert_eq!(
        Sink::parse("http://user:pw@127.0.0.1:9/log").map(|s| s.label()),
        Ok("http://127.0.0.1:9/log".to_string()),
        "credentials never reach a label"
    );
    assert_eq!(
        Sink::parse("https://collector:8443/e").map(|s| s.label()),
        Ok("https://collector:8443/e".to_string())
    );
    assert_eq!(
        Sink::parse("https://collector/e").map(|s| s.label()),
        Ok("https://collector:443/e".to_string())
    );
    assert!(Sink::parse("file:").is_err());
    assert!(Sink::parse("kafka://x").unwrap_err().contains("file:PATH"));
    assert!(Sink::parse("http://h:port/").unwrap_err().contains("port"));
    assert_eq!(Mode::parse("response"), Ok(Mode::Response));
    assert!(Mode::parse("some").is_err());
}

#[test]
fn content_is_hashed_and_the_rest_kept() {
    let mut v = json!({
        "model": "m", "prompt": ["a", "b"], "max_tokens": 4,
        "messages": [{"role": "user", "content": "secret words"},
                     {"role": "user", "content": [{"type": "text", "text": "more"}]}],
        "choices": [{"text": "answer", "finish_reason": "length"}],
    });
    hash_content(&mut v);
    let text = v.to_string();
    for word in ["secret words", "\"more\"", "answer", "\"a\""] {
        assert!(!text.contains(word), "{word} in {text}");
    }
    assert_eq!(v["model"], "m");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["messages"][0]["role"], "user");
    let h = v["messages"][0]["content"].as_str().unwrap();
    assert_eq!(h.len(), "sha256:".len() + 64);
    // The same words hash alike, so logs can still be joined.
    assert_eq!(sha256("more"), v["messages"][1]["content"][0]["text"]);
}

#[test]
fn the_file_sink_rotates_without_losing_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("p.jsonl");
    let w = file::Rotating::new(path.clone(), 2_000, 100);
    let (tx, rx) = sync_channel(10_000);
    let ok = prometheus::IntCounter::new("ok", "ok").unwrap();
    let failed = prometheus::IntCounter::new("failed", "failed").unwrap();
    let (ok2, failed2) = (ok.clone(), failed.clone());
    let t = std::thread::spawn(move || file::run(w, rx, ok2, failed2));
    for i in 0..500 {
        tx.send(event(&format!("id-{i}"), REQUEST_TYPE)).unwrap();
    }
    drop(tx);
    t.join().unwrap();
    assert_eq!((ok.get(), failed.get()), (500, 0));
    let mut files = vec![path.clone()];
    let mut k = 1;
    loop {
        let mut p = path.clone().into_os_string();
        p.push(format!(".{k}"));
        let p = std::path::PathBuf::from(p);
        if !p.exists() {
            break;
        }
        files.push(p);
        k += 1;
    }
    assert!(files.len() > 10, "rotated: {files:?}");
    let mut ids = Vec::new();
    for f in files.iter().rev() {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.len() <= 2_000,
            "{} is {} bytes",
            f.display(),
            text.len()
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("whole JSON lines");
            ids.push(v["id"].as_str().unwrap().to_string());
        }
    }
    let want: Vec<String> = (0..500).map(|i| format!("id-{i}")).collect();
    assert_eq!(ids, want, "every line once, in order, oldest file first");
}

#[test]
fn old_rotations_beyond_the_limit_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.jsonl");
    let mut w = file::Rotating::new(path.clone(), 300, 2);
    for i in 0..50 {
        w.write_line(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)).as_bytes())
            .unwrap();
    }
    w.flush().unwrap();
    assert!(dir.path().join("p.jsonl.2").exists());
    assert!(!dir.path().join("p.jsonl.3").exists());
}

#[test]
fn cloudevents_are_binary_mode() {
    let target = http::Target::parse("http://127.0.0.1:8080/events").unwrap();
    let bytes = http::encode(&target, &event("req-1", RESPONSE_TYPE));
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /events HTTP/1.1\r\n"), "{head}");
    for h in [
        "ce-specversion: 1.0",
        "ce-id: req-1",
        "ce-source: tessera",
        "ce-type: org.kubeflow.serving.inference.response",
        "ce-inferenceservicename: m",
        "ce-modelversion: 3",
        "ce-statuscode: 200",
        "Content-Type: application/json",
    ] {
        assert!(head.lines().any(|l| l == h), "{h} not in {head}");
    }
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["prompt"], "hello");
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
}

#[test]
fn sampling_keeps_a_requests_events_together() {
    let registry = Registry::new();
    let dir = tempfile::tempdir().unwrap();
    let logger = PayloadLogger::start(
        PayloadLogConfig {
            sinks: vec![Sink::File(dir.path().join("p.jsonl"))],
            sample_rate: 0.3,
            ..PayloadLogConfig::default()
        },
        &registry,
    )
    .unwrap()
    .expect("a sink");
    let kept = (0..10_000)
        .filter(|i| logger.sampled(&format!("request-{i}")))
        .count();
    assert!((2_500..3_500).contains(&kept), "{kept}");
    assert_eq!(logger.sampled("x"), logger.sampled("x"));
    assert!(PayloadLogger::start(PayloadLogConfig::default(), &registry)
        .unwrap()
        .is_none());
}

/// A one-connection HTTPS collector on loopback with a certificate made here:
/// returns its port, the certificate's PEM, and the request it will receive.
fn https_collector() -> (u16, String, std::thread::JoinHandle<Option<String>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};

    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = made.cert.pem();
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(made.signing_key.serialize_pem().as_bytes()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let config = std::sync::Arc::new(config);
    // `localhost` may resolve to ::1 first: listen where the sink will connect.
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 0))
        .unwrap()
        .next()
        .unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().ok()?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .ok()?;
        let tls = StreamOwned::new(ServerConnection::new(config).ok()?, tcp);
        let mut reader = BufReader::new(tls);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))?
            .parse()
            .ok()?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let mut tls = reader.into_inner();
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .ok()?;
        tls.flush().ok()?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Some(head + &String::from_utf8(body).ok()?)
    });
    (port, cert_pem, server)
}

#[test]
fn https_sinks_deliver_over_tls_to_a_server_they_trust() {
    let (port, cert_pem, server) = https_collector();
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("ca.pem");
    std::fs::write(&roots, cert_pem).unwrap();
    let target = http::Target::parse(&format!("https://localhost:{port}/events")).unwrap();
    let tls = http::tls_client(Some(&roots)).unwrap();
    let (tx, rx) = sync_channel(4);
    let (ok, failed) = (
        prometheus::IntCounter::new("ok", "ok").unwrap(),
        prometheus::IntCounter::new("failed", "failed").unwrap(),
    );
    tx.send(event("req-tls", REQUEST_TYPE)).unwrap();
    drop(tx);
    http::run(target, Some(tls), rx, ok.clone(), failed.clone());
    let received = server.join().unwrap().expect("the collector got a request");
    assert!(
        received.starts_with("POST /events HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(
        received.lines().any(|l| l == "ce-id: req-tls"),
        "{received}"
    );
    let body: Value = serde_json::from_str(received.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["prompt"], "hello");
    assert_eq!((ok.get(), failed.get()), (1, 0));
}

#[test]
fn https_sinks_refuse_a_server_they_do_not_trust() {
    let (port, _, server) = https_collector();
    let target = http::Target::parse(&format!("https://localhost:{port}/events")).unwrap();
    // The built-in roots alone: the collector's self-signed certificate fails.
    let tls = http::tls_client(None).unwrap();
    let (tx, rx) = sync_channel(4);
    let (ok, failed) = (
        prometheus::IntCounter::new("ok", "ok").unwrap(),
        prometheus::IntCounter::new("failed", "failed").unwrap(),
    );
    tx.send(event("req-untrusted", REQUEST_TYPE)).unwrap();
    drop(tx);
    http::run(target, Some(tls), rx, ok.clone(), failed.clone());
    assert_eq!((ok.get(), failed.get()), (0, 1));
    assert_eq!(
        server.join().unwrap(),
        None,
        "no request reached the collector"
    );
}

#[test]
fn a_roots_file_without_certificates_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = http::tls_client(Some(&empty)).unwrap_err();
    assert!(err.contains("empty.pem"), "{err}");
}
