//! `tessera serve`'s configuration as a process sees it: flags beat
//! `TESSERA_*` variables, which beat the `--config` file; bad settings stop
//! start-up naming the key; `--help` gives every option a default; and with
//! `--log-format json --log-requests`, one JSON line per request, bodies
//! logged, keys never.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `tessera serve ARGS` with only `env` as TESSERA_* variables.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("serve").args(args).current_dir(ROOT);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Runs to the end; a server that starts instead of failing is killed after
/// a minute (and the caller's assertions fail on its status).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = serve(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            rx.recv().expect("exits").expect("output")
        }
    }
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// The line of `--print-config` for `key`.
fn effective(args: &[&str], env: &[(&str, &str)], key: &str) -> String {
    let out = run(&[args, &["--print-config"]].concat(), env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let file = temp_file(
        "layers.toml",
        "port = 1111\nmax_num_seqs = 7\napi-key = [\"sk-file\"]\n",
    );
    let config = ["--config", path(&file)];
    assert_eq!(
        effective(&config, &[], "port"),
        "port = 1111  # config file"
    );
    let env = [("TESSERA_PORT", "2222")];
    assert_eq!(
        effective(&config, &env, "port"),
        "port = 2222  # environment"
    );
    let flag = [&config[..], &["--port", "3333"]].concat();
    assert_eq!(effective(&flag, &env, "port"), "port = 3333  # flag");
    assert_eq!(
        effective(&config, &[], "max-num-seqs"),
        "max-num-seqs = 7  # config file"
    );
    assert_eq!(
        effective(&[], &[], "max-num-seqs"),
        "max-num-seqs = 64  # default"
    );
    // The config file itself can come from the environment.
    let env = [("TESSERA_CONFIG", path(&file))];
    assert_eq!(effective(&[], &env, "port"), "port = 1111  # config file");
    // Secrets are never printed.
    let line = effective(&config, &[], "api-key");
    assert_eq!(line, "api-key = [\"[REDACTED]\"]  # config file");
    let env = [("TESSERA_API_KEYS", "sk-a,sk-b")];
    let line = effective(&[], &env, "api-key");
    assert_eq!(
        line,
        "api-key = [\"[REDACTED]\", \"[REDACTED]\"]  # environment"
    );
}

#[test]
fn no_vllm_metrics_is_a_flag_a_variable_and_a_key() {
    let key = "no-vllm-metrics";
    assert_eq!(
        effective(&[], &[], key),
        "no-vllm-metrics = false  # default"
    );
    let file = temp_file("vllm.toml", "no-vllm-metrics = true\n");
    let line = effective(&["--config", path(&file)], &[], key);
    assert_eq!(line, "no-vllm-metrics = true  # config file");
    let env = [("TESSERA_NO_VLLM_METRICS", "true")];
    assert_eq!(
        effective(&[], &env, key),
        "no-vllm-metrics = true  # environment"
    );
    let line = effective(&["--no-vllm-metrics"], &[], key);
    assert_eq!(line, "no-vllm-metrics = true  # flag");
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    // (file, its text, what the error must name)
    let cases = [
        (
            "unknown.toml",
            "max-num-seq = 4\n",
            "unknown key 'max-num-seq'",
        ),
        ("value.toml", "port = \"high\"\n", "key 'port'"),
        ("enum.toml", "log-format = \"xml\"\n", "key 'log-format'"),
        ("table.toml", "[serve]\nport = 1\n", "key 'serve'"),
        ("syntax.toml", "port = \n", "syntax.toml"),
        ("tls.toml", "tls-cert = \"cert.pem\"\n", "tls-cert"),
        (
            "window.toml",
            "rate-limit-window = \"0s\"\n",
            "rate-limit-window",
        ),
        (
            "keys.toml",
            "api-key-file = \"/nonexistent/keys\"\n",
            "api-key-file",
        ),
        ("threads.toml", "threads = 0\n", "key 'threads'"),
        (
            "origin.toml",
            "allowed-origins = [\"example.com\"]\n",
            "allowed-origins",
        ),
    ];
    for (name, text, want) in cases {
        let file = temp_file(name, text);
        let out = run(&["--config", path(&file), "--port", "0"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(want), "{name}: want {want:?} in {stderr}");
    }
    // The environment is checked as strictly.
    let out = run(&["--port", "0"], &[("TESSERA_MAX_N", "1000")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-n"));
    // An empty key list must not silently leave the server open.
    let out = run(&["--port", "0"], &[("TESSERA_API_KEYS", "")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'api-key'"));
}

/// `--threads` sizes the compute pool (the start-up report says so).
#[test]
fn threads_size_the_compute_pool() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "generate",
            "--threads",
            "1",
            "--prompt",
            "Hi",
            "--max-tokens",
            "1",
        ])
        .current_dir(ROOT)
        .env_remove("TESSERA_THREADS")
        .output()
        .expect("tessera runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("; 1 compute threads"), "{stderr}");
}

#[test]
fn help_documents_every_option_with_its_default() {
    let out = run(&["--help"], &[]);
    let help = String::from_utf8(out.stdout).expect("utf-8");
    // Each option's entry runs from its `--name` line to the next one.
    let starts: Vec<usize> = help
        .match_indices("\n      --")
        .map(|(i, _)| i + 1)
        .chain([help.len()])
        .collect();
    let mut seen = Vec::new();
    for w in starts.windows(2) {
        let entry = &help[w[0]..w[1]];
        let head = entry.lines().next().expect("head").trim();
        let name = head.split_whitespace().next().expect("name");
        seen.push(name);
        // Flags (no value) are off unless given.
        if !head.contains('<') {
            continue;
        }
        assert!(
            entry.contains("[default"),
            "{name} has no default:\n{entry}"
        );
        assert!(
            entry.contains("[env: TESSERA_"),
            "{name} has no variable:\n{entry}"
        );
    }
    assert!(seen.len() > 25, "{seen:?}");
    for option in [
        "--api-key",
        "--metrics-key",
        "--rate-limit-window",
        "--tls-cert",
        "--config",
    ] {
        assert!(seen.contains(&option), "{option} in {seen:?}");
    }
}

#[test]
fn json_logs_have_one_line_per_request_and_never_a_key() {
    let key = "sk-very-secret-key";
    let mut child = serve(
        &[
            "--port",
            "0",
            "--served-model-name",
            "smol",
            "--max-model-len",
            "512",
            "--kv-cache-memory",
            "32MiB",
            "--log-format",
            "json",
            "--log-requests",
        ],
        &[("TESSERA_API_KEYS", key)],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("ready line");
        lines.push(line.clone());
        if let Some(url) = line.split("ready at http://").nth(1) {
            break url.trim_end_matches("/v1").to_string();
        }
    };
    let body = format!(r#"{{"prompt": "Hi", "max_tokens": 2, "user": "{key}"}}"#);
    let mut stream = TcpStream::connect(&addr).expect("connect");
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         X-Request-Id: trace-7\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Wait for the request's line, then stop the server.
    let done = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a request line");
        lines.push(line.clone());
        if line.contains("request finished") {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(&done).expect("a JSON line");
    assert_eq!(v["request_id"], "trace-7");
    assert_eq!(v["model"], "smol");
    assert_eq!(v["status"], 200);
    assert_eq!(v["completion_tokens"], 2);
    assert_eq!(v["caller"], "key#0");
    for field in [
        "prompt_tokens",
        "queue_ms",
        "ttft_ms",
        "total_ms",
        "finish_reason",
    ] {
        assert!(!v[field].is_null(), "{field} in {done}");
    }
    let all = lines.join("\n");
    assert!(
        all.contains("request body") && all.contains("response body"),
        "{all}"
    );
    assert!(all.contains("[REDACTED]"), "{all}");
    assert!(!all.contains(key), "a key reached the log:\n{all}");
    for line in lines.iter().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
