//! The HTTP sink: each event POSTed as a CloudEvent 1.0 in binary mode
//! (attributes in `ce-*` headers, the body as the payload), the way KServe's
//! payload logger sends them, with `ce-inferenceservicename` naming the
//! model and `ce-modelversion` its version. HTTP/1.1 over a short-lived
//! connection, plain or TLS, with connect, read and write timeouts and three
//! tries with backoff; then the event is dropped and counted.
//!
//! An `https://` sink verifies its server against the Mozilla roots built into
//! the binary (no system store needed in a slim container) plus the PEM
//! certificates of the file `SSL_CERT_FILE` names, for a collector behind a
//! private CA.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{Event, REQUEST_TYPE};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where an `http://` or `https://` sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// Parses `http[s]://[USER@]HOST[:PORT][/PATH]` (credentials are not sent).
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("'{url}' is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]` alone splits inside the brackets: no port then.
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("'{url}': '{p}' is not a port"))?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("'{url}' names no host"));
        }
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL without credentials.
    pub(super) fn label(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }

    /// Whether the sink speaks TLS.
    pub(super) fn is_tls(&self) -> bool {
        self.tls
    }
}

/// The TLS client settings of `https://` sinks: the built-in Mozilla roots
/// plus every certificate in `extra_roots` (a PEM file), if given.
pub(super) fn tls_client(extra_roots: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_roots {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{shown}: no certificate in the file"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{shown}: {e}"))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The request bytes of `event` in CloudEvents binary mode.
pub(super) fn encode(target: &Target, event: &Event) -> Vec<u8> {
    let body = serde_json::to_vec(&event.body).unwrap_or_default();
    // Header values come from ids and names the server checked; control
    // characters are dropped anyway so no value can break the framing.
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nce-specversion: 1.0\r\nce-id: {}\r\n\
         ce-source: {}\r\nce-type: {}\r\nce-time: {}\r\nce-inferenceservicename: {}\r\n\
         ce-modelversion: {}\r\nce-endpoint: {}\r\n",
        target.path,
        if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        },
        target.port,
        body.len(),
        clean(&event.id),
        clean(&event.source),
        event.kind,
        event.time,
        clean(&event.model),
        event.version,
        clean(&event.endpoint),
    );
    if let Some(status) = event.status {
        head.push_str(&format!("ce-statuscode: {status}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

fn post(target: &Target, tls: Option<&Arc<ClientConfig>>, request: &[u8]) -> Result<(), String> {
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let status = match tls {
        None => exchange(stream, request)?,
        Some(config) => {
            let name = ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
            let connection =
                ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
            exchange(StreamOwned::new(connection, stream), request)?
        }
    };
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("answered '{}'", status.trim()))
    }
}

/// Sends `request` and reads the status line of the answer.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<String, String> {
    stream.write_all(request).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut status = String::new();
    BufReader::new(stream)
        .read_line(&mut status)
        .map_err(|e| e.to_string())?;
    Ok(status)
}

/// The sink's thread: delivers events one by one; ends when the logger is
/// dropped. `tls` is the client of an `https://` target.
pub(super) fn run(
    target: Target,
    tls: Option<Arc<ClientConfig>>,
    rx: Receiver<Event>,
    ok: IntCounter,
    failed: IntCounter,
) {
    while let Ok(event) = rx.recv() {
        let request = encode(&target, &event);
        let mut backoff = FIRST_BACKOFF;
        let mut result = Err(String::new());
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            result = post(&target, tls.as_ref(), &request);
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(()) => ok.inc(),
            Err(e) => {
                failed.inc();
                let what = if event.kind == REQUEST_TYPE {
                    "request"
                } else {
                    "response"
                };
                tracing::warn!(sink = %target.label(), id = %event.id, error = %e,
                    "payload log: {what} event dropped after {TRIES} tries");
            }
        }
    }
}
