//! The HTTP sink: each event POSTed as a CloudEvent 1.0 in binary mode
//! (attributes in `ce-*` headers, the body as the payload), the way KServe's
//! payload logger sends them, with `ce-inferenceservicename` naming the
//! model and `ce-modelversion` its version. Plain HTTP/1.1 over a short-lived
//! connection, with connect, read and write timeouts and three tries with
//! backoff; then the event is dropped and counted.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use prometheus::IntCounter;

use super::{Event, REQUEST_TYPE};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where an `http://` sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// Parses `http://[USER@]HOST[:PORT][/PATH]` (credentials are not sent).
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
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
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("'{url}' names no host"));
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL without credentials.
    pub(super) fn label(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("http://{}:{}{}", self.host, self.port, self.path)
        }
    }
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

fn post(target: &Target, request: &[u8]) -> Result<(), String> {
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut status = String::new();
    BufReader::new(stream)
        .read_line(&mut status)
        .map_err(|e| e.to_string())?;
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("answered '{}'", status.trim()))
    }
}

/// The sink's thread: delivers events one by one; ends when the logger is
/// dropped.
pub(super) fn run(target: Target, rx: Receiver<Event>, ok: IntCounter, failed: IntCounter) {
    while let Ok(event) = rx.recv() {
        let request = encode(&target, &event);
        let mut backoff = FIRST_BACKOFF;
        let mut result = Err(String::new());
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            result = post(&target, &request);
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
