//! `hub::pull` against a fake Hugging Face hub: a std-only HTTP/1.1 server on
//! 127.0.0.1 that answers the two requests hf-hub 0.4 makes (the repo listing and
//! ranged `resolve` downloads).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tessera_model::hub::{pull, PullOptions};
use tessera_model::ModelError;

const REPO: &str = "acme/tiny";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The files of the one repo the fake hub serves.
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let weights: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    [
        (
            "config.json",
            br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec(),
        ),
        ("tokenizer.json", br#"{"version":"1.0"}"#.to_vec()),
        ("model.safetensors", weights),
        ("README.md", b"# tiny\n".to_vec()),
        ("tiny.Q4_K_M.gguf", b"GGUF fake".to_vec()),
        ("extra/notes.txt", b"notes\n".to_vec()),
    ]
    .into_iter()
    .map(|(name, bytes)| (name.to_string(), bytes))
    .collect()
}

/// A running fake hub: its base URL and the request lines it has seen.
struct FakeHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let files = Arc::new(repo_files());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, files) = (Arc::clone(&seen), Arc::clone(&files));
                std::thread::spawn(move || serve(stream, &files, &seen));
            }
        });
        FakeHub { endpoint, requests }
    }

    /// How many file downloads (`/resolve/` requests) the hub has answered.
    fn resolve_count(&self) -> usize {
        let requests = self.requests.lock().expect("lock");
        requests.iter().filter(|r| r.contains("/resolve/")).count()
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(stream: TcpStream, files: &BTreeMap<String, Vec<u8>>, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    seen.lock().expect("lock").push(format!("GET {path}"));
    let path = path.split('?').next().unwrap_or("");

    let listing = format!("/api/models/{REPO}/revision/main");
    let resolve = format!("/{REPO}/resolve/main/");
    let (status, headers, body) = if path == listing {
        let siblings: Vec<String> = files
            .keys()
            .map(|f| format!(r#"{{"rfilename":"{f}"}}"#))
            .collect();
        let json = format!(
            r#"{{"id":"{REPO}","sha":"{SHA}","siblings":[{}]}}"#,
            siblings.join(",")
        );
        (
            "200 OK",
            vec![("Content-Type", "application/json".to_string())],
            json.into_bytes(),
        )
    } else if let Some(bytes) = path.strip_prefix(&resolve).and_then(|f| files.get(f)) {
        let (start, end) = parse_range(range.as_deref(), bytes.len());
        let headers = vec![
            ("ETag", format!("\"{:016x}\"", fnv1a(bytes))),
            ("X-Repo-Commit", SHA.to_string()),
            (
                "Content-Range",
                format!("bytes {start}-{end}/{}", bytes.len()),
            ),
        ];
        ("206 Partial Content", headers, bytes[start..=end].to_vec())
    } else {
        (
            "404 Not Found",
            vec![("X-Error-Code", "RepoNotFound".to_string())],
            b"{\"error\":\"Repository not found\"}".to_vec(),
        )
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut stream = &stream;
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

/// The inclusive byte range a `Range: bytes=a-b` or `bytes=a-` header asks for.
fn parse_range(range: Option<&str>, len: usize) -> (usize, usize) {
    let last = len - 1;
    let Some((a, b)) = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
    else {
        return (0, last);
    };
    let start = a.parse().unwrap_or(0).min(last);
    let end = b.parse().unwrap_or(last).clamp(start, last);
    (start, end)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("tessera-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(include: &[&str]) -> PullOptions {
    PullOptions {
        revision: None,
        include: include.iter().map(|s| s.to_string()).collect(),
        progress: false,
    }
}

fn hub_error(result: tessera_model::Result<PathBuf>) -> String {
    match result {
        Err(ModelError::Hub(msg)) => msg,
        other => panic!("expected a hub error, got {other:?}"),
    }
}

fn assert_same_bytes(dir: &Path, file: &str, files: &BTreeMap<String, Vec<u8>>) {
    let got = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(got == files[file], "{file}: bytes differ from the hub's");
}

// Everything that sets the process-wide HF_* variables lives in this one test.
#[test]
fn pull_from_a_fake_hub() {
    let hub = FakeHub::start();
    let home = TempDir::new("hf-home");
    std::env::set_var("HF_HOME", &home.0);
    std::env::set_var("HF_ENDPOINT", &hub.endpoint);
    for var in [
        "HF_TOKEN",
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
    ] {
        std::env::remove_var(var);
    }
    let files = repo_files();

    // Default selection: config, tokenizer and safetensors, not README, gguf or extra/.
    let dir = pull(REPO, &options(&[])).expect("default pull");
    assert!(
        dir.starts_with(&home.0),
        "{} is outside HF_HOME",
        dir.display()
    );
    assert!(
        dir.ends_with(SHA),
        "{} is not the snapshot dir",
        dir.display()
    );
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_same_bytes(&dir, file, &files);
    }
    for file in ["README.md", "tiny.Q4_K_M.gguf", "extra/notes.txt"] {
        assert!(!dir.join(file).exists(), "{file} pulled by default");
    }

    // A second pull is served from the cache: same directory, no download.
    let downloads = hub.resolve_count();
    assert_eq!(pull(REPO, &options(&[])).expect("cached pull"), dir);
    assert_eq!(
        hub.resolve_count(),
        downloads,
        "second pull downloaded again"
    );

    // Include patterns choose the files, subfolders included.
    let dir2 = pull(REPO, &options(&["*.gguf", "extra/*"])).expect("filtered pull");
    assert_eq!(dir2, dir);
    assert_same_bytes(&dir, "tiny.Q4_K_M.gguf", &files);
    assert_same_bytes(&dir, "extra/notes.txt", &files);
    assert!(!dir.join("README.md").exists());
    assert_eq!(
        hub.resolve_count(),
        downloads + 2 * 2,
        "expected a metadata and a body request per file"
    );

    // Nothing matching the patterns is an error naming the repo and the patterns.
    let msg = hub_error(pull(REPO, &options(&["*.bin"])));
    assert!(msg.contains(REPO) && msg.contains("*.bin"), "{msg}");

    // A repo the hub does not know.
    let msg = hub_error(pull("acme/missing", &options(&[])));
    assert!(msg.contains("acme/missing"), "{msg}");

    // Malformed ids are refused before any request.
    let before = hub.requests.lock().expect("lock").len();
    for bad in ["../etc", "a/b/c", "", "acme/"] {
        hub_error(pull(bad, &options(&[])));
    }
    assert_eq!(hub.requests.lock().expect("lock").len(), before);
}
