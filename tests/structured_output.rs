//! Structured output and tool calling end to end: the in-process server over the default
//! model, driven by the official OpenAI Python SDK (`parse()` with a Pydantic
//! model, streamed and whole; JSON schemas with n > 1 and logprobs; vLLM's
//! `guided_*` / `structured_outputs`; 400s for bad schemas), and a property
//! check: outputs under many generated JSON schemas all validate with
//! Python's `jsonschema`, an independent validator; tools with `required`,
//! a named function and `auto` (its opening made likely by `logit_bias`),
//! whole and streamed (the SDK assembling the calls; per call `index`, `id`,
//! `type` and name in its first delta, then the arguments in fragments), a
//! text answer under `auto` as plain content, and a second turn with a
//! `tool` message.

mod common;

use std::process::Command;

#[test]
fn the_sdk_gets_outputs_that_match_their_schemas() {
    let python = common::python();
    let server = common::start();
    let base = format!("http://{}/v1", server.addr);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/structured_output/check_structured.py"
    );
    let out = Command::new(&python)
        .args([script, &base, common::MODEL, "40"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "structured-output checks failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
