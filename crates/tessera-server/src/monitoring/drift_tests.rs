//! The monitor on synthetic observations.

use super::*;

fn config() -> DriftConfig {
    DriftConfig {
        reference_size: 40,
        window_size: 40,
        ..DriftConfig::default()
    }
}

fn request(prompt: f64, completion: f64, ttft: f64) -> Observation {
    vec![
        (Signal::PromptTokens, prompt),
        (Signal::CompletionTokens, completion),
        (Signal::TimeToFirstToken, ttft),
        (
            Signal::FinishReason,
            super::super::signals::finish_reason_value("length"),
        ),
    ]
}

fn signal<'a>(r: &'a VersionReport, name: &str) -> &'a SignalReport {
    r.signals.iter().find(|s| s.signal == name).expect("signal")
}

fn gauge(registry: &Registry, name: &str, signal: &str) -> Option<f64> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .find(|m| m.get_label().iter().any(|l| l.value() == signal))
        .map(|m| m.get_gauge().get_value())
}

#[test]
fn a_moved_signal_drifts_and_a_steady_one_does_not() {
    let registry = Registry::new_custom(Some("tessera".into()), None).unwrap();
    let m = DriftMonitor::new(config(), &registry).unwrap();
    for i in 0..40 {
        m.observe("m", 1, &request(10.0 + (i % 5) as f64, 16.0, 0.02));
    }
    let before = m.report();
    assert!(before[0].reference_complete);
    assert!(!signal(&before[0], "prompt_tokens").drifted);
    assert_eq!(signal(&before[0], "prompt_tokens").psi, Some(0.0));
    for i in 0..40 {
        m.observe("m", 1, &request(100.0 + (i % 7) as f64, 16.0, 0.02));
    }
    let after = m.report();
    let prompt = signal(&after[0], "prompt_tokens");
    assert!(prompt.drifted, "{prompt:?}");
    assert!(prompt.psi.unwrap() > 0.25 && prompt.p_value.unwrap() < 1e-6);
    let completion = signal(&after[0], "completion_tokens");
    assert!(!completion.drifted);
    assert_eq!(completion.p_value, Some(1.0));
    assert!(!signal(&after[0], "finish_reason").drifted);
    assert_eq!(
        gauge(&registry, "tessera_drift_detected", "prompt_tokens"),
        Some(1.0)
    );
    assert_eq!(
        gauge(&registry, "tessera_drift_psi", "prompt_tokens"),
        prompt.psi
    );
    assert_eq!(
        gauge(&registry, "tessera_drift_detected", "completion_tokens"),
        Some(0.0)
    );
}

#[test]
fn no_statistics_before_the_reference_is_full() {
    let registry = Registry::new_custom(Some("tessera".into()), None).unwrap();
    let m = DriftMonitor::new(config(), &registry).unwrap();
    for _ in 0..39 {
        m.observe("m", 1, &request(10.0, 16.0, 0.02));
    }
    let r = m.report();
    assert!(!r[0].reference_complete);
    assert_eq!(signal(&r[0], "prompt_tokens").psi, None);
    assert_eq!(gauge(&registry, "tessera_drift_psi", "prompt_tokens"), None);
}

#[test]
fn windows_stay_bounded_and_versions_are_forgotten() {
    let registry = Registry::new_custom(Some("tessera".into()), None).unwrap();
    let m = DriftMonitor::new(config(), &registry).unwrap();
    for i in 0..1000 {
        m.observe("m", 1, &request(i as f64, 16.0, 0.02));
        m.observe("m", 2, &request(5.0, 16.0, 0.02));
    }
    let r = m.report();
    let prompt = signal(&r[0], "prompt_tokens");
    assert_eq!((prompt.reference.count, prompt.current.count), (40, 40));
    assert_eq!(prompt.current.mean, Some(979.5), "the last 40 values");
    let cmp = m.compare("m", 2, 1).expect("both observed");
    assert!(cmp[0].drifted);
    assert!(m.compare("m", 1, 3).is_none());
    m.retain(&[("m".to_string(), 2)]);
    assert_eq!(m.report().len(), 1);
    assert!(registry
        .gather()
        .iter()
        .flat_map(|f| f.get_metric().iter())
        .all(|x| !x
            .get_label()
            .iter()
            .any(|l| l.name() == "version" && l.value() == "1")));
}

#[test]
fn a_baseline_is_the_reference_from_the_first_request() {
    let registry = Registry::new_custom(Some("tessera".into()), None).unwrap();
    let baseline = Baseline {
        model: "m".into(),
        signals: [("prompt_tokens".to_string(), vec![10.0; 100])].into(),
    };
    let m = DriftMonitor::new(
        DriftConfig {
            baselines: vec![baseline],
            ..config()
        },
        &registry,
    )
    .unwrap();
    for _ in 0..40 {
        m.observe("m", 1, &request(300.0, 16.0, 0.02));
    }
    let r = m.report();
    assert_eq!(r[0].reference_source, "baseline");
    let prompt = signal(&r[0], "prompt_tokens");
    assert_eq!(
        prompt.reference.count, 40,
        "spread down to the reference size"
    );
    assert_eq!(prompt.reference.mean, Some(10.0));
    assert!(prompt.drifted, "{prompt:?}");
    // Signals the baseline lacks take their reference from traffic.
    assert_eq!(
        signal(&r[0], "completion_tokens").reference.mean,
        Some(16.0)
    );
}

#[test]
fn a_timed_window_holds_only_recent_values() {
    let registry = Registry::new_custom(Some("tessera".into()), None).unwrap();
    let m = DriftMonitor::new(
        DriftConfig {
            window_duration: Some(std::time::Duration::from_secs(1)),
            ..config()
        },
        &registry,
    )
    .unwrap();
    for _ in 0..30 {
        m.observe("m", 1, &request(10.0, 16.0, 0.02));
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(signal(&m.report()[0], "prompt_tokens").current.count, 0);
    for _ in 0..5 {
        m.observe("m", 1, &request(12.0, 16.0, 0.02));
    }
    let r = m.report();
    let prompt = signal(&r[0], "prompt_tokens");
    assert_eq!((prompt.current.count, prompt.current.mean), (5, Some(12.0)));
    assert_eq!(
        prompt.reference.count, 35,
        "the reference keeps its first values"
    );
}
