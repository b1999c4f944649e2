//! The scripted server of `scripted_server.rs`: an SSE server on a raw
//! socket whose reply is chosen by the request's prompt, with known delays.
//!
//! Scripts (the prompt): anything else streams `TOKENS` chunks after `TTFT_MS`,
//! `ITL_MS` apart, then usage and `[DONE]`; `no-usage` the same without the
//! usage chunk; `http-500`; `truncated` (closes after 2 chunks); `stream-error`
//! (an error object after 2 chunks); `slow` (headers, then 5 s of nothing);
//! `one-per-connection` (a keep-alive stream, then the connection is closed
//! when the next request arrives on it, as llama-server does).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The script: first token after 150 ms, then 4 more 60 ms apart.
pub const TTFT_MS: u64 = 150;
pub const ITL_MS: u64 = 60;
pub const TOKENS: usize = 5;

/// Starts the scripted server on its own thread; returns its root URL.
pub fn start_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("listener");
            loop {
                let (sock, _) = listener.accept().await.expect("accept");
                tokio::spawn(handle(sock));
            }
        });
    });
    format!("http://{addr}")
}

/// Reads one request: its path and JSON body; `None` if the client closed
/// the connection first.
async fn read_request(sock: &mut TcpStream) -> Option<(String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).expect("path").to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    Some((path, body))
}

async fn respond_json(sock: &mut TcpStream, status: &str, body: Value) {
    let body = body.to_string();
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(reply.as_bytes()).await.expect("write");
}

async fn event(sock: &mut TcpStream, data: &str) {
    sock.write_all(format!("data: {data}\n\n").as_bytes())
        .await
        .expect("write event");
    sock.flush().await.expect("flush");
}

fn text_chunk(text: &str) -> String {
    json!({"choices": [{"index": 0, "text": text, "finish_reason": null}]}).to_string()
}

async fn handle(mut sock: TcpStream) {
    let Some((path, body)) = read_request(&mut sock).await else {
        return;
    };
    match path.as_str() {
        "/v1/models" => {
            return respond_json(&mut sock, "200 OK", json!({"data": [{"id": "scripted"}]})).await
        }
        // One token per word, vLLM's shape.
        "/tokenize" => {
            let n = body["prompt"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .count();
            let tokens: Vec<usize> = (1..=n).collect();
            return respond_json(&mut sock, "200 OK", json!({"tokens": tokens, "count": n})).await;
        }
        "/v1/completions" => {}
        other => return respond_json(&mut sock, "404 Not Found", json!({"error": other})).await,
    }
    let script = body["prompt"].as_str().unwrap_or("").to_string();
    if script == "http-500" {
        return respond_json(
            &mut sock,
            "500 Internal Server Error",
            json!({"error": {"message": "scripted failure"}}),
        )
        .await;
    }
    if script == "one-per-connection" {
        return one_per_connection(sock).await;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    sock.write_all(head.as_bytes()).await.expect("head");
    if script == "slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
        return;
    }
    tokio::time::sleep(Duration::from_millis(TTFT_MS)).await;
    for i in 0..TOKENS {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(ITL_MS)).await;
        }
        event(&mut sock, &text_chunk("tok ")).await;
        match (script.as_str(), i) {
            ("truncated", 1) => return, // closes the connection without [DONE]
            ("stream-error", 1) => {
                return event(&mut sock, r#"{"error": {"message": "engine died"}}"#).await
            }
            _ => {}
        }
    }
    event(
        &mut sock,
        &json!({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}).to_string(),
    )
    .await;
    if script != "no-usage" {
        let usage =
            json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": TOKENS}});
        event(&mut sock, &usage.to_string()).await;
    }
    event(&mut sock, "[DONE]").await;
}

/// Like llama-server: a chunked, keep-alive stream, and then the connection
/// is closed unannounced, here when the next request arrives on it (so the
/// client always sends one request into a closing connection).
async fn one_per_connection(mut sock: TcpStream) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    sock.write_all(head.as_bytes()).await.expect("head");
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": TOKENS}});
    let mut events = vec![text_chunk("a"); TOKENS];
    events.extend([usage.to_string(), "[DONE]".to_string()]);
    for data in events {
        let event = format!("data: {data}\n\n");
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        sock.write_all(chunk.as_bytes()).await.expect("chunk");
    }
    sock.write_all(b"0\r\n\r\n").await.expect("last chunk");
    // Take the next request whole (so the close is a FIN, not a reset), and
    // close without answering.
    let _ = read_request(&mut sock).await;
}
