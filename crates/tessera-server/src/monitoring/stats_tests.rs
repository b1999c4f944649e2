//! The statistics against SciPy's values on the same samples.

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Fixture {
    ks: Vec<KsCase>,
    chi_squared: Vec<CountsCase>,
    psi: Vec<PsiCase>,
}

#[derive(Deserialize)]
struct KsCase {
    name: String,
    a: Vec<f64>,
    b: Vec<f64>,
    statistic: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct CountsCase {
    name: String,
    reference: Vec<u64>,
    current: Vec<u64>,
    statistic: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct PsiCase {
    name: String,
    reference: Vec<u64>,
    current: Vec<u64>,
    psi: f64,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../../tests/fixtures/drift_stats.json"))
        .expect("the committed fixture parses")
}

#[track_caller]
fn close(what: &str, got: f64, want: f64) {
    let tol = 1e-9 * want.abs();
    assert!(
        (got - want).abs() <= tol || (want == 0.0 && got.abs() < 1e-15),
        "{what}: got {got:e}, SciPy {want:e}"
    );
}

#[test]
fn ks_equals_scipy() {
    let f = fixture();
    assert!(f.ks.len() >= 5);
    for c in f.ks {
        let r = ks_2samp(&c.a, &c.b).expect("non-empty samples");
        close(&format!("{} statistic", c.name), r.statistic, c.statistic);
        close(&format!("{} p-value", c.name), r.p_value, c.p_value);
    }
}

#[test]
fn chi_squared_equals_scipy() {
    let f = fixture();
    assert!(f.chi_squared.len() >= 4);
    for c in f.chi_squared {
        let r = chi_squared(&c.reference, &c.current).expect("two categories");
        close(&format!("{} statistic", c.name), r.statistic, c.statistic);
        close(&format!("{} p-value", c.name), r.p_value, c.p_value);
    }
}

#[test]
fn psi_equals_numpy() {
    for c in fixture().psi {
        close(&c.name, psi(&c.reference, &c.current), c.psi);
    }
}

#[test]
fn degenerate_inputs_have_no_test() {
    assert_eq!(ks_2samp(&[], &[1.0]), None);
    assert_eq!(chi_squared(&[5, 0], &[0, 0]), None);
    assert_eq!(chi_squared(&[5, 0], &[7, 0]), None, "one category left");
    assert_eq!(psi(&[0, 0], &[1, 2]), 0.0);
    let same = ks_2samp(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!((same.statistic, same.p_value), (0.0, 1.0));
}
