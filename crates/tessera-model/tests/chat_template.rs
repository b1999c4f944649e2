//! Chat templates render what transformers' `apply_chat_template` renders: the
//! default model's own template gives the prompts llama.cpp's fixtures were made
//! with, and real Llama 3, Qwen2.5 and Mistral templates give their documented
//! formats for system messages, multi-turn and `add_generation_prompt`, and
//! tools with tool-call turns exactly as transformers renders them.

mod common;

use tessera_model::chat::{self, ChatMessage, ChatTemplate};
use tessera_model::gguf::GgufFile;
use tessera_model::ModelError;

fn template(name: &str, bos: &str, eos: &str) -> ChatTemplate {
    let path = common::repo_root()
        .join("tests/fixtures/templates")
        .join(name);
    let source = std::fs::read_to_string(&path).expect("template fixture");
    ChatTemplate::new(source, Some(bos.into()), Some(eos.into())).expect("template compiles")
}

fn default_model_template() -> ChatTemplate {
    let file = GgufFile::open(&common::default_model()).expect("GGUF opens");
    let (bos, eos) = chat::gguf_special_tokens(file.metadata());
    ChatTemplate::from_gguf(file.metadata(), bos, eos)
        .expect("template compiles")
        .expect("the default model has a chat template")
}

#[test]
fn default_model_template_gives_the_fixture_prompts() {
    let template = default_model_template();
    let fixtures = common::fixture_lines("smollm2-logits.jsonl");
    let mut checked = 0;
    for case in &fixtures {
        let prompt = case["prompt"].as_str().expect("prompt");
        let Some(rest) = prompt.split("<|im_start|>user\n").nth(1) else {
            continue; // a raw completion prompt
        };
        let question = rest.split("<|im_end|>").next().expect("user turn");
        let rendered = template
            .render(&[ChatMessage::user(question)], true)
            .expect("renders");
        assert_eq!(rendered, prompt);
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} chat prompts in the fixture");
}

#[test]
fn llama3_system_and_multi_turn() {
    let t = template("llama3-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
    let messages = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("2+2?"),
    ];
    let head = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
        <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
        <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
        <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>";
    assert_eq!(t.render(&messages, false).expect("renders"), head);
    assert_eq!(
        t.render(&messages, true).expect("renders"),
        format!("{head}<|start_header_id|>assistant<|end_header_id|>\n\n")
    );
}

#[test]
fn qwen25_adds_its_default_system_message() {
    let t = template("qwen2.5-instruct.jinja", "", "<|im_end|>");
    let rendered = t.render(&[ChatMessage::user("Hi")], true).expect("renders");
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let own = t
        .render(&[ChatMessage::system("S"), ChatMessage::user("Hi")], false)
        .expect("renders");
    assert_eq!(
        own,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn mistral_puts_the_system_message_in_the_last_user_turn() {
    let t = template("mistral-7b-instruct-v0.3.jinja", "<s>", "</s>");
    let messages = [
        ChatMessage::system("S"),
        ChatMessage::user("A"),
        ChatMessage::assistant("B"),
        ChatMessage::user("C"),
    ];
    assert_eq!(
        t.render(&messages, true).expect("renders"),
        "<s>[INST] A[/INST] B</s>[INST] S\n\nC[/INST]"
    );
}

#[test]
fn a_template_exception_is_a_clear_error() {
    let t = template("mistral-7b-instruct-v0.3.jinja", "<s>", "</s>");
    let err = t
        .render(&[ChatMessage::user("A"), ChatMessage::user("B")], true)
        .expect_err("two user turns in a row are refused by the template");
    let text = err.to_string();
    assert!(matches!(err, ModelError::Template(_)), "{text}");
    assert!(text.contains("roles must alternate"), "{text}");
}

#[test]
fn a_model_without_a_template_refuses_chat() {
    let err = chat::require(None).expect_err("no template");
    assert!(err.to_string().contains("no chat template"), "{err}");
}

#[test]
fn a_template_that_does_not_parse_fails_at_load() {
    let err = ChatTemplate::new("{% for %}", None, None).expect_err("syntax error");
    assert!(err.to_string().contains("invalid chat template"), "{err}");
}

/// Tools, an assistant's tool call and a tool result render as transformers
/// renders them (tests/fixtures/templates/tools-rendered.json, made by
/// scripts/tool-template-fixtures with transformers' renderer).
#[test]
fn tools_and_tool_turns_render_as_transformers_renders_them() {
    let path = common::repo_root().join("tests/fixtures/templates/tools-rendered.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let messages = fixture["messages"].as_array().expect("messages").clone();
    let extra = serde_json::json!({ "tools": fixture["tools"] });
    let cases = fixture["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["template"].as_str().expect("name");
        let t = template(
            name,
            case["bos_token"].as_str().expect("bos"),
            case["eos_token"].as_str().expect("eos"),
        );
        let got = t.render_json(&messages, true, &extra).expect("renders");
        assert_eq!(got, case["rendered"].as_str().expect("text"), "{name}");
    }
}
