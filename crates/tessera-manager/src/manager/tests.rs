//! The manager over a fake loader whose models are real engines on a fake
//! runner: states, budget, eviction, keep-alive, aliases, drains.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_engine::batch::Batch;
use tessera_engine::detokenize::TokenDecoder;
use tessera_engine::engine::{spawn, EngineConfig, EngineHandle, OutputStream};
use tessera_engine::request::{Priority, Request};
use tessera_engine::runner::{Logits, Runner};
use tessera_engine::SamplingParams;

use super::*;
use crate::aliases::{Mirror, WeightedVersion};
use crate::lifecycle::UnloadCause;
use crate::repository::{ModelOptions, ModelSettings};

const VOCAB: usize = 8;

/// Logits that always pick token 1, a millisecond a step, with room for
/// sequences far longer than any test runs: a request runs until aborted.
struct FakeRunner;

impl Runner for FakeRunner {
    type Error = std::io::Error;
    fn block_size(&self) -> usize {
        4
    }
    fn num_blocks(&self) -> usize {
        1 << 20
    }
    fn max_model_len(&self) -> usize {
        1 << 22
    }
    fn execute(&mut self, batch: &Batch) -> Result<Logits, Self::Error> {
        std::thread::sleep(Duration::from_millis(1));
        let rows = batch.num_logit_rows();
        let mut data = vec![0.0; rows * VOCAB];
        for r in 0..rows {
            data[r * VOCAB + 1] = 10.0;
        }
        Ok(Logits {
            vocab_size: VOCAB,
            data,
        })
    }
}

struct Letters;

impl TokenDecoder for Letters {
    fn decode(&self, ids: &[u32], _: bool) -> Result<String, String> {
        Ok(ids.iter().map(|&i| char::from(b'a' + i as u8)).collect())
    }
}

struct Fake {
    engine: EngineHandle,
    version: u64,
}

impl Servable for Fake {
    fn engine(&self) -> &EngineHandle {
        &self.engine
    }
}

/// Loads fakes; a path whose file name is `broken` fails; every model
/// takes `bytes` of the budget.
struct FakeLoader {
    bytes: u64,
    loads: Arc<AtomicUsize>,
    delay: Duration,
}

impl Loader<Fake> for FakeLoader {
    fn plan(&self, _: &Path, _: &ModelOptions, _: u64) -> Result<u64, String> {
        Ok(self.bytes)
    }
    fn load(&self, t: &LoadTarget<'_>) -> Result<Fake, String> {
        std::thread::sleep(self.delay);
        if t.path.file_name().is_some_and(|f| f == "broken") {
            return Err("corrupt file".into());
        }
        self.loads.fetch_add(1, Ordering::SeqCst);
        let engine = spawn(
            FakeRunner,
            Arc::new(Letters),
            EngineConfig {
                vocab_size: VOCAB,
                ..EngineConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Fake {
            engine,
            version: t.version,
        })
    }
}

fn settings(budget: u64) -> ManagerSettings {
    ManagerSettings {
        memory_budget: budget,
        max_loaded_models: None,
        keep_alive: KeepAlive::Forever,
        autoload: true,
    }
}

fn manager(budget: u64, bytes: u64) -> (Arc<ModelManager<Fake>>, Arc<AtomicUsize>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = FakeLoader {
        bytes,
        loads: loads.clone(),
        delay: Duration::ZERO,
    };
    (ModelManager::new(Box::new(loader), settings(budget)), loads)
}

fn spec(name: &str, versions: &[u64], settings: ModelSettings) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        versions: versions
            .iter()
            .map(|&v| (v, std::path::PathBuf::from(format!("/m/{name}/{v}"))))
            .collect(),
        settings,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn state(m: &ModelManager<Fake>, name: &str, version: u64) -> ModelState {
    m.versions()
        .into_iter()
        .find(|s| s.name == name && s.version == version)
        .map_or(ModelState::Unavailable, |s| s.state)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// A request that runs until its stream is dropped.
fn hold(route: &Route<Fake>) -> OutputStream {
    route
        .model
        .engine
        .submit(Request {
            prompt_token_ids: vec![2, 3],
            params: SamplingParams {
                max_tokens: 1_000_000,
                ignore_eos: true,
                ..SamplingParams::default()
            },
            priority: Priority::Interactive,
        })
        .expect("accepted")
}

#[test]
fn versions_load_route_and_unload_through_their_states() {
    let (m, loads) = manager(1000, 100);
    m.add_model(spec("a", &[1, 2], ModelSettings::default()));
    assert_eq!(state(&m, "a", 2), ModelState::Unavailable);
    assert_eq!(
        m.resolve(Some("a"), None).err(),
        Some(ResolveError::NotLoaded {
            name: "a".into(),
            version: 2
        })
    );
    // Concurrent loads of one version coalesce into one.
    let w1 = m.load("a", None).expect("known");
    let w2 = m.load("a", Some(2)).expect("known");
    assert_eq!(w1.versions(), [2]);
    assert_eq!(block_on(w1.wait()), Ok(vec![2]));
    assert_eq!(block_on(w2.wait()), Ok(vec![2]));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(state(&m, "a", 2), ModelState::Ready);
    assert_eq!(m.memory(), (1000, 100));
    let route = m.resolve(Some("a"), None).expect("ready");
    assert_eq!((route.version, route.model.version), (2, 2));
    assert_eq!(m.resolve(None, None).expect("first model").version, 2);
    assert!(matches!(
        m.resolve(Some("a:1"), None),
        Err(ResolveError::NotLoaded { version: 1, .. })
    ));
    assert!(matches!(
        m.resolve(Some("a:7"), None),
        Err(ResolveError::UnknownVersion { version: 7, .. })
    ));
    assert!(matches!(
        m.resolve(Some("b"), None),
        Err(ResolveError::UnknownModel(_))
    ));

    // Unload drains: in flight work finishes first, memory comes back after.
    let stream = hold(&route);
    drop(route);
    assert_eq!(m.unload("a", Some(2)), Ok(vec![2]));
    assert_eq!(state(&m, "a", 2), ModelState::Draining);
    assert!(matches!(
        m.resolve(Some("a:2"), None),
        Err(ResolveError::Unavailable {
            state: ModelState::Draining,
            ..
        })
    ));
    assert_eq!(m.memory().1, 100, "still reserved while draining");
    drop(stream);
    wait_for("the unload", || {
        state(&m, "a", 2) == ModelState::Unavailable
    });
    assert_eq!(m.memory().1, 0);
}

#[test]
fn a_failed_load_leaves_what_serves_untouched() {
    let (m, _) = manager(1000, 100);
    let mut s = spec("a", &[1], ModelSettings::default());
    s.versions.insert(2, "/m/a/broken".into());
    m.add_model(s);
    block_on(m.load("a", Some(1)).expect("known").wait()).expect("loads");
    let err = block_on(m.load("a", Some(2)).expect("known").wait()).expect_err("fails");
    assert_eq!(err, "version 2: corrupt file");
    let failed = m
        .versions()
        .into_iter()
        .find(|s| s.version == 2)
        .expect("listed");
    assert_eq!(failed.state, ModelState::Failed);
    assert_eq!(failed.reason.as_deref(), Some("corrupt file"));
    assert_eq!(
        m.memory().1,
        100,
        "the failed load gave its reservation back"
    );
    // The bare name still routes to the version that works.
    assert_eq!(m.resolve(Some("a"), None).expect("serves").version, 1);
    assert!(matches!(
        m.resolve(Some("a:2"), None),
        Err(ResolveError::Unavailable {
            state: ModelState::Failed,
            ..
        })
    ));
}

#[test]
fn a_full_budget_evicts_the_least_recently_used_idle_model() {
    let (m, loads) = manager(250, 100);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    m.set_observer(move |e| seen.lock().expect("lock").push(e.clone()));
    for name in ["a", "b", "c"] {
        m.add_model(spec(name, &[1], ModelSettings::default()));
    }
    block_on(m.load("a", None).expect("a").wait()).expect("a");
    block_on(m.load("b", None).expect("b").wait()).expect("b");
    m.touch("a", 1, None); // b is now the least recently used
    block_on(m.load("c", None).expect("c").wait()).expect("c fits after evicting b");
    assert_eq!(state(&m, "b", 1), ModelState::Unavailable);
    assert_eq!(state(&m, "a", 1), ModelState::Ready);
    assert_eq!(m.memory().1, 200);
    assert!(events
        .lock()
        .expect("lock")
        .contains(&ManagerEvent::Retired {
            name: "b".into(),
            version: 1,
            cause: UnloadCause::Evicted
        }));
    // A model with a request in flight is never evicted: a is busy, so
    // loading b again evicts c although c was used more recently.
    let busy = hold(&m.resolve(Some("a"), None).expect("a"));
    m.touch("c", 1, None);
    block_on(m.load("b", None).expect("b").wait()).expect("b reloads");
    assert_eq!(state(&m, "c", 1), ModelState::Unavailable);
    assert_eq!(state(&m, "a", 1), ModelState::Ready);
    assert_eq!(loads.load(Ordering::SeqCst), 4);
    // Nothing idle to evict: the load fails and says why.
    let _busy_b = hold(&m.resolve(Some("b"), None).expect("b"));
    let err = block_on(m.load("c", None).expect("c").wait()).expect_err("no room");
    assert!(err.contains("requests in flight"), "{err}");
    drop(busy);
}

#[test]
fn max_loaded_models_caps_the_count() {
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = FakeLoader {
        bytes: 1,
        loads,
        delay: Duration::ZERO,
    };
    let m = ModelManager::new(
        Box::new(loader),
        ManagerSettings {
            max_loaded_models: Some(1),
            ..settings(1000)
        },
    );
    m.add_model(spec("a", &[1], ModelSettings::default()));
    m.add_model(spec("b", &[1], ModelSettings::default()));
    block_on(m.load("a", None).expect("a").wait()).expect("a");
    block_on(m.load("b", None).expect("b").wait()).expect("b");
    assert_eq!(state(&m, "a", 1), ModelState::Unavailable);
    assert_eq!(state(&m, "b", 1), ModelState::Ready);
}

#[test]
fn idle_models_unload_after_their_keep_alive() {
    let (m, _) = manager(1000, 10);
    let fast = ModelSettings {
        keep_alive: Some(KeepAlive::For(Duration::from_millis(200))),
        ..ModelSettings::default()
    };
    m.add_model(spec("short", &[1], fast));
    m.add_model(spec("long", &[1], ModelSettings::default()));
    m.add_model(spec("once", &[1], ModelSettings::default()));
    block_on(m.load("short", None).expect("known").wait()).expect("loads");
    // A busy model is never idle.
    let stream = hold(&m.resolve(Some("short"), None).expect("short"));
    for name in ["long", "once"] {
        block_on(m.load(name, None).expect("known").wait()).expect("loads");
    }
    // A request's keep_alive 0: unload as soon as it is idle.
    m.touch("once", 1, Some(KeepAlive::For(Duration::ZERO)));
    wait_for("once to unload", || {
        state(&m, "once", 1) == ModelState::Unavailable
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&m, "short", 1), ModelState::Ready);
    drop(stream);
    wait_for("short to unload", || {
        state(&m, "short", 1) == ModelState::Unavailable
    });
    assert_eq!(
        state(&m, "long", 1),
        ModelState::Ready,
        "the default keeps it forever"
    );
}

#[test]
fn aliases_move_after_loading_roll_back_and_keep_previous() {
    let (m, _) = manager(1000, 10);
    let s = ModelSettings {
        aliases: [("prod".to_string(), 1)].into(),
        default: Some("prod".into()),
        ..ModelSettings::default()
    };
    m.add_model(spec("a", &[1, 2], s));
    block_on(m.load("a", Some(1)).expect("a").wait()).expect("v1");
    assert_eq!(
        m.resolve(Some("a"), None).expect("default alias").version,
        1
    );
    assert_eq!(m.resolve(Some("a@prod"), None).expect("alias").version, 1);
    // Moving the alias loads version 2 first.
    block_on(m.set_alias("a", "prod", Target::version(2), None)).expect("moves");
    assert_eq!(state(&m, "a", 2), ModelState::Ready);
    assert_eq!(m.resolve(Some("a@prod"), None).expect("moved").version, 2);
    assert_eq!(m.resolve(Some("a"), None).expect("default").version, 2);
    assert_eq!(
        m.resolve(Some("a@prod.previous"), None)
            .expect("previous")
            .version,
        1
    );
    let back = block_on(m.rollback_alias("a", "prod")).expect("rolls back");
    assert_eq!(back, Target::version(1));
    assert_eq!(m.resolve(Some("a@prod"), None).expect("back").version, 1);
    assert_eq!(
        m.resolve(Some("a@prod.previous"), None)
            .expect("previous")
            .version,
        2
    );
    let listed: Vec<String> = m.aliases().iter().map(|a| a.alias.clone()).collect();
    assert_eq!(listed, ["prod", "prod.previous"]);
    // Refusals.
    assert!(matches!(
        block_on(m.set_alias("a", "../x", Target::version(1), None)),
        Err(AliasError::Invalid(_))
    ));
    assert!(matches!(
        block_on(m.set_alias("a", "x", Target::version(9), None)),
        Err(AliasError::NotFound(ResolveError::UnknownVersion { .. }))
    ));
    assert!(matches!(
        m.delete_alias("a", "prod"),
        Err(AliasError::Invalid(_))
    ));
    assert!(matches!(
        block_on(m.rollback_alias("a", "nope")),
        Err(AliasError::NotFound(_))
    ));
    block_on(m.set_alias("a", "canary", Target::version(2), None)).expect("new alias");
    assert!(matches!(
        block_on(m.rollback_alias("a", "canary")),
        Err(AliasError::Invalid(_))
    ));
    m.delete_alias("a", "canary").expect("deleted");
    assert!(matches!(
        m.resolve(Some("a@canary"), None),
        Err(ResolveError::UnknownAlias { .. })
    ));
}

#[test]
fn weighted_aliases_split_within_binomial_bounds_and_mirror_without_routing() {
    let (m, _) = manager(1000, 10);
    m.add_model(spec("a", &[3, 4], ModelSettings::default()));
    let split = Target::Weighted {
        versions: vec![
            WeightedVersion {
                version: 3,
                weight: 90,
            },
            WeightedVersion {
                version: 4,
                weight: 10,
            },
        ],
    };
    let mirror = Mirror {
        version: 4,
        percent: 20.0,
    };
    block_on(m.set_alias("a", "prod", split, Some(mirror))).expect("set");
    let (mut fours, mut mirrored) = (0, 0);
    for _ in 0..1000 {
        let route = m.resolve(Some("a@prod"), None).expect("routes");
        fours += usize::from(route.version == 4);
        if let Some((v, shadow)) = &route.mirror {
            assert_eq!((*v, shadow.version), (4, 4));
            mirrored += 1;
        }
    }
    // Binomial(1000, 0.1): mean 100, sd 9.5; 5 sd either side.
    assert!(
        (52..=148).contains(&fours),
        "{fours} of 1000 went to version 4"
    );
    // Binomial(1000, 0.2): mean 200, sd 12.6.
    assert!(
        (137..=263).contains(&mirrored),
        "{mirrored} of 1000 mirrored"
    );
    for session in ["s1", "s2", "s3", "s4", "s5"] {
        let first = m
            .resolve(Some("a@prod"), Some(session))
            .expect("routes")
            .version;
        for _ in 0..50 {
            assert_eq!(
                m.resolve(Some("a@prod"), Some(session))
                    .expect("routes")
                    .version,
                first
            );
        }
    }
}
