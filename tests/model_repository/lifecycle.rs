//! Loading and unloading: failed loads, the memory budget and eviction,
//! keep-alive, polling the repository, and what the management API refuses.

use std::time::Duration;

use serde_json::json;

use super::*;

#[test]
fn a_failing_load_leaves_the_old_version_serving() {
    let server = RepoServer::start(roomy(), |root| {
        tiny_version(root, "m", 1, 1);
        let broken = root.join("m/2");
        std::fs::create_dir_all(&broken).expect("mkdir");
        // A GGUF header that ends where its counts should be.
        std::fs::write(broken.join("model.gguf"), b"GGUF\x03\x00\x00\x00garbage").expect("write");
        settings(
            root,
            "m",
            "version_policy = { specific = [1] }\naliases = { prod = 1 }\n",
        );
    });
    let (v, before) = server.complete("m@prod", &[], json!({}));
    assert_eq!(v, 1);
    let r = server.admin(
        "PUT",
        "/v2/repository/models/m/aliases/prod",
        &json!({"version": 2}),
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_load_failed");
    assert!(
        r.text().contains("model.gguf"),
        "names the file: {}",
        r.text()
    );
    // The alias did not move; version 1 serves as before.
    assert_eq!(
        server.complete("m@prod", &[], json!({})),
        (1, before.clone())
    );
    let failed = server.card("m:2");
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("model.gguf")),
        "{failed}"
    );
    let index = server.admin("POST", "/v2/repository/index", &json!({}));
    let rows = index.json();
    let row = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["version"] == "2")
        .expect("version 2 listed")
        .clone();
    assert_eq!(
        (row["name"].as_str(), row["state"].as_str()),
        (Some("m"), Some("FAILED"))
    );
    // A request for it says why, in OpenAI's shape.
    let r = common::post(
        server.addr,
        "/v1/completions",
        &json!({"model": "m:2", "prompt": "hi"}),
    );
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("failed")));
}

#[test]
fn a_budget_for_two_of_three_evicts_the_least_recently_used() {
    let root = tempfile::tempdir().expect("tempdir");
    tiny_version(root.path(), "probe", 1, 9);
    let per_model = tiny_bytes(root.path().join("probe/1").as_path());
    let server = RepoServer::start(
        ManagerSettings {
            memory_budget: per_model * 5 / 2,
            ..roomy()
        },
        |root| {
            for (name, seed) in [("a", 1), ("b", 2), ("c", 3)] {
                tiny_version(root, name, 1, seed);
                settings(root, name, KV);
            }
        },
    );
    // At start two fit; which two depends on load order, so unload all and
    // go through them by requests.
    for name in ["a", "b", "c"] {
        let r = server.admin(
            "POST",
            &format!("/v2/repository/models/{name}/unload"),
            &json!({}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for name in ["a", "b", "c"] {
        server.wait_status(name, "unavailable");
    }
    server.complete("a", &[], json!({}));
    server.complete("b", &[], json!({}));
    server.complete("a", &[], json!({})); // b is now the least recently used
    server.complete("c", &[], json!({})); // needs room: evicts b
    assert_eq!(server.status("a"), "ready");
    server.wait_status("b", "unavailable");
    assert_eq!(server.status("c"), "ready");
    // A request for b reloads it (and evicts a, now the least recently used).
    assert_eq!(server.complete("b", &[], json!({})).0, 1);
    assert_eq!(server.status("b"), "ready");
    server.wait_status("a", "unavailable");
    let metrics = common::request(server.addr, "GET", "/metrics", b"").text();
    for (model, n) in [("a", 1), ("b", 1)] {
        let line = format!("tessera_model_evictions_total{{model=\"{model}\",version=\"1\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

/// Engine options of the eviction test's models: a small KV cache.
const KV: &str = "kv-cache-memory = \"1MiB\"\nmax-model-len = 256\n";

/// What a tiny model with [`KV`] reserves: its weights file and 1 MiB.
fn tiny_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("model.safetensors"))
        .expect("weights")
        .len()
        + (1 << 20)
}

#[test]
fn keep_alive_zero_unloads_after_the_request_and_autoload_brings_it_back() {
    let server = RepoServer::start(roomy(), |root| tiny_version(root, "m", 1, 4));
    assert_eq!(server.status("m"), "ready");
    server.complete("m", &[], json!({"keep_alive": 0}));
    server.wait_status("m", "unavailable");
    // The next request loads it again.
    assert_eq!(server.complete("m", &[], json!({"keep_alive": "-1"})).0, 1);
    assert_eq!(server.status("m"), "ready");
    let r = common::post(
        server.addr,
        "/v1/completions",
        &json!({"model": "m", "prompt": "hi", "keep_alive": "soon"}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("keep_alive"))
    );
}

#[test]
fn polling_picks_up_a_new_version_before_the_old_one_leaves() {
    let server = RepoServer::start(roomy(), |root| tiny_version(root, "m", 1, 5));
    assert_eq!(server.complete("m", &[], json!({})).0, 1);
    server.models.start_polling(Duration::from_millis(100));
    // A version directory is written elsewhere and moved in whole, as an
    // operator's deployment would.
    let staged = server.root.join(".staging");
    tiny_version(&staged, "m", 2, 6);
    std::fs::rename(staged.join("m/2"), server.root.join("m/2")).expect("move in");
    server.wait_status("m:2", "ready");
    common::wait_for(
        "the bare name to route to 2",
        Duration::from_secs(60),
        || server.complete("m", &[], json!({})).0 == 2,
    );
    // The policy (latest 1) retires version 1 once 2 serves.
    server.wait_status("m:1", "unavailable");
    // A removed version directory is unloaded too.
    std::fs::remove_dir_all(server.root.join("m/2")).expect("remove");
    common::wait_for("m:2 to leave", Duration::from_secs(60), || {
        server.cards().iter().all(|c| c["id"] != "m:2")
    });
}

#[test]
fn names_resolve_only_inside_the_repository() {
    let server = RepoServer::start(roomy(), |root| tiny_version(root, "m", 1, 3));
    for path in [
        "/v2/repository/models/..%2F..%2Fetc/load",
        "/v2/repository/models/%2Ftmp/load",
        "/v2/repository/models/.staging/load",
        "/v2/repository/models/nope/load",
    ] {
        let r = server.admin("POST", path, &json!({}));
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "model_not_found", "{path}");
    }
    let r = server.admin(
        "POST",
        "/v2/repository/models/m/load",
        &json!({"parameters": {"version": 9}}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = server.admin(
        "POST",
        "/v2/repository/models/m/load",
        &json!({"parameters": {"version": "../1"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = server.admin(
        "PUT",
        "/v2/repository/models/m/aliases/..%2Fx",
        &json!({"version": 1}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    for model in ["../m", "m:../1", "/etc/passwd", "m@../prod"] {
        let r = common::post(
            server.addr,
            "/v1/completions",
            &json!({"model": model, "prompt": "hi"}),
        );
        assert_eq!(r.status, 404, "{model}: {}", r.text());
    }
    // The management API wants the admin key; a wrong one or none is 401.
    let r = common::request(server.addr, "POST", "/v2/repository/index", b"{}");
    assert_eq!(r.status, 401);
    let r = request_with(
        server.addr,
        "POST",
        "/v2/repository/index",
        &[("Authorization", "Bearer sk-wrong")],
        b"{}",
    );
    assert_eq!(r.status, 401);
    let r = server.admin(
        "POST",
        "/v2/repository/models/m/load",
        &json!({"parameters": {"version": 1}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["versions"], json!([1]));
}

#[test]
fn without_an_admin_key_the_management_api_is_off_and_client_keys_never_open_it() {
    let models = common::models();
    let addr = common::serve_with(
        models,
        ServerConfig {
            api_keys: vec!["sk-client".into()],
            ..ServerConfig::default()
        },
        None,
    );
    let r = request_with(
        addr,
        "POST",
        "/v2/repository/index",
        &[("Authorization", "Bearer sk-client")],
        b"{}",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("--admin-api-key"), "{}", r.text());
}
