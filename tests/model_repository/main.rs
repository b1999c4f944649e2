//! The model repository and live model management, end to end: a real
//! server in-process over a repository directory the tests write (the
//! default model and tiny random models), driven over HTTP.

#[path = "../common/mod.rs"]
mod common;
mod lifecycle;
mod routing;
mod swap;
mod tiny;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tessera::engine_setup::Compute;
use tessera::serve::models::ServerLoader;
use tessera_manager::{KeepAlive, ManagerSettings, Repository};
use tessera_server::{AppState, ModelManager, ServerConfig};

use common::{engine_args, request_with, Response};

/// The admin key of every test server.
const ADMIN: &str = "sk-admin";

/// A test server over a repository directory.
struct RepoServer {
    addr: SocketAddr,
    models: Arc<ModelManager>,
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl RepoServer {
    /// Serves the repository `layout` wrote into a fresh directory, after
    /// reading it and loading what it serves.
    fn start(settings: ManagerSettings, layout: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        layout(&root);
        let loader = ServerLoader::new(Compute::cpu(), engine_args("16MiB", 4096).options());
        let repository = Repository::open(&root).expect("repository");
        let models = ModelManager::with_repository(Box::new(loader), settings, repository);
        let problems = models.sync_repository().expect("reads");
        assert!(problems.is_empty(), "{problems:?}");
        for name in models.model_names() {
            // Failures are the tests' business: they look at the states.
            let _ = models.load(&name, None).expect("known").wait_blocking();
        }
        let state = AppState::new(
            models.clone(),
            ServerConfig {
                admin_api_keys: vec![ADMIN.into()],
                ..ServerConfig::default()
            },
        )
        .expect("config");
        state.set_ready(true);
        let addr = common::serve_state(state, None);
        Self {
            addr,
            models,
            _dir: dir,
            root,
        }
    }

    /// A management call with the admin key.
    fn admin(&self, method: &str, path: &str, body: &Value) -> Response {
        let auth = format!("Bearer {ADMIN}");
        request_with(
            self.addr,
            method,
            path,
            &[("Authorization", &auth)],
            body.to_string().as_bytes(),
        )
    }

    /// A greedy completion of `model`: its version header and text.
    fn complete(&self, model: &str, headers: &[(&str, &str)], extra: Value) -> (u64, String) {
        let mut body = json!({"model": model, "prompt": "the cat sat on the", "max_tokens": 4, "temperature": 0});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = request_with(
            self.addr,
            "POST",
            "/v1/completions",
            headers,
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let version = version_of(&r);
        (
            version,
            r.json()["choices"][0]["text"]
                .as_str()
                .expect("text")
                .to_string(),
        )
    }

    /// `/v1/models` as id -> card.
    fn cards(&self) -> Vec<Value> {
        let r = common::request(self.addr, "GET", "/v1/models", b"");
        assert_eq!(r.status, 200);
        r.json()["data"].as_array().expect("data").clone()
    }

    fn card(&self, id: &str) -> Value {
        self.cards()
            .into_iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in /v1/models: {:?}", self.cards()))
    }

    /// The id's status; `absent` while it is not listed.
    fn status(&self, id: &str) -> String {
        self.cards()
            .into_iter()
            .find(|c| c["id"] == id)
            .map_or("absent".into(), |c| {
                c["status"].as_str().expect("status").to_string()
            })
    }

    fn wait_status(&self, id: &str, want: &str) {
        common::wait_for(&format!("{id} {want}"), Duration::from_secs(60), || {
            self.status(id) == want
        });
    }
}

/// The `x-tessera-model-version` of a response.
fn version_of(r: &Response) -> u64 {
    r.header("x-tessera-model-version")
        .unwrap_or_else(|| panic!("no version header: {:?}", r.headers))
        .parse()
        .expect("a number")
}

/// Settings with room for everything and no idle unloads.
fn roomy() -> ManagerSettings {
    ManagerSettings {
        memory_budget: 8 << 30,
        max_loaded_models: None,
        keep_alive: KeepAlive::Forever,
        autoload: true,
    }
}

/// `root/name/version/` holding the default GGUF (a hard link, or a copy).
fn default_version(root: &Path, name: &str, version: u64) {
    let dir = root.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).expect("mkdir");
    let to = dir.join("model.gguf");
    if std::fs::hard_link(common::DEFAULT_MODEL, &to).is_err() {
        std::fs::copy(common::DEFAULT_MODEL, &to).expect("copy the default model");
    }
}

/// `root/name/version/` holding a tiny random model.
fn tiny_version(root: &Path, name: &str, version: u64, seed: u64) {
    tiny::write(&root.join(name).join(version.to_string()), seed);
}

/// `root/name/model.toml`.
fn settings(root: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(root.join(name)).expect("mkdir");
    std::fs::write(root.join(name).join("model.toml"), text).expect("model.toml");
}
