"""tessera serve driven by the official OpenAI Python SDK.

Usage: check_openai_sdk.py BASE_URL MODEL API_KEY METRICS_KEY

Runs every check, prints one line per check, and exits non-zero if any failed.
Kept to the SDK and the Prometheus client (no pytest) so the venv stays small.
"""

import sys
import traceback

import urllib.error
import urllib.request

import openai
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

BASE_URL, MODEL, API_KEY, METRICS_KEY = sys.argv[1:5]
ROOT_URL = BASE_URL.removesuffix("/v1")
client = OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=300)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHECKS = []


def get(path, key=None):
    """GET on the server's root: (status, headers, body text)."""
    req = urllib.request.Request(f"{ROOT_URL}{path}")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def check(fn):
    CHECKS.append(fn)
    return fn


def collect_chat_stream(**kwargs):
    """Streams a chat completion; returns (chunks, text per choice)."""
    chunks = list(client.chat.completions.create(model=MODEL, stream=True, **kwargs))
    texts = {}
    for chunk in chunks:
        for c in chunk.choices:
            texts.setdefault(c.index, "")
            texts[c.index] += c.delta.content or ""
    return chunks, texts


@check
def models_are_listed():
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids, ids
    assert client.models.retrieve(MODEL).id == MODEL


@check
def versions_and_aliases_are_listed_and_served():
    models = {m.id: m for m in client.models.list()}
    for model_id in (MODEL, f"{MODEL}:1", f"{MODEL}@prod"):
        assert model_id in models, list(models)
    alias = models[f"{MODEL}@prod"]
    assert (alias.status, alias.version) == ("ready", 1), alias
    assert alias.resident_bytes > 0, alias
    raw = client.chat.completions.with_raw_response.create(
        model=f"{MODEL}@prod", messages=MESSAGES, max_tokens=8, temperature=0)
    assert raw.headers["x-tessera-model-version"] == "1", raw.headers
    by_alias = raw.parse().choices[0].message.content
    by_name = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0).choices[0].message.content
    assert by_alias and by_alias == by_name, (by_alias, by_name)


@check
def chat_whole_and_streamed_agree():
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    assert whole.system_fingerprint
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content, choice
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks, texts = collect_chat_stream(messages=MESSAGES, max_tokens=12, temperature=0)
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert all(c.usage is None for c in chunks), "no usage unless asked for"
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason
    assert texts[0] == choice.message.content, (texts[0], choice.message.content)


@check
def completions_whole_and_streamed_agree():
    kwargs = dict(model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0)
    whole = client.completions.create(**kwargs)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    text = whole.choices[0].text
    assert text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices)
    assert streamed == text, (streamed, text)
    batch = client.completions.create(model=MODEL, prompt=["The capital of France is", "Hello"], max_tokens=10, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == text


@check
def n_gives_independent_choices():
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, n=2, temperature=1.0, seed=3)
    assert sorted(c.index for c in whole.choices) == [0, 1]
    assert whole.choices[0].message.content != whole.choices[1].message.content
    _, texts = collect_chat_stream(messages=MESSAGES, max_tokens=16, n=2, temperature=1.0, seed=3)
    assert texts == {c.index: c.message.content for c in whole.choices}, texts


@check
def stop_strings_end_the_text():
    kwargs = dict(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0)
    free = client.completions.create(**kwargs).choices[0]
    assert "7" in free.text, free.text
    stopped = client.completions.create(stop=["7"], **kwargs).choices[0]
    assert stopped.finish_reason == "stop", stopped
    assert stopped.text == free.text[: free.text.index("7")], (stopped.text, free.text)
    chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, temperature=0, stop="Paris")
    assert "Paris" not in chat.choices[0].message.content


@check
def a_seed_reproduces_a_sample():
    kwargs = dict(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=1.0, top_p=0.95)
    a = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    b = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    assert a == b, (a, b)


@check
def chat_logprobs():
    whole = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens or whole.choices[0].finish_reason == "stop"
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes) == t.token.encode()
        assert len(t.top_logprobs) == 3
        # Greedy: the chosen token is the likeliest.
        assert t.top_logprobs[0].token == t.token


@check
def completion_logprobs():
    c = client.completions.create(model=MODEL, prompt="Hello, my name is", max_tokens=5, temperature=0, logprobs=2).choices[0]
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == c.text
    assert all(len(top) <= 2 and max(top.values()) >= chosen for top, chosen in zip(lp.top_logprobs, lp.token_logprobs))


@check
def include_usage_adds_a_final_usage_chunk():
    chunks, _ = collect_chat_stream(
        messages=MESSAGES, max_tokens=6, temperature=0, stream_options={"include_usage": True}
    )
    *body, last = chunks
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == 6 or body[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in body)
    chunks = list(client.completions.create(
        model=MODEL, prompt="Hi", max_tokens=4, temperature=0, stream=True, stream_options={"include_usage": True}
    ))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 4


@check
def extensions_pass_through_extra_body():
    c = client.completions.create(
        model=MODEL, prompt="The end.", max_tokens=12, temperature=0.7, seed=5,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True, "min_tokens": 12},
    )
    assert c.usage.completion_tokens == 12 and c.choices[0].finish_reason == "length", c


@check
def bad_requests_raise_bad_request_error():
    cases = [
        dict(temperature=-1),
        dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
             tool_choice={"type": "function", "function": {"name": "g"}}),
        dict(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        dict(extra_body={"not_a_field": 1}),
    ]
    for extra in cases:
        try:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, **extra)
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.body and e.body.get("message"), e
        else:
            raise AssertionError(f"accepted {extra}")
    try:
        client.completions.create(model=MODEL, prompt="x", max_tokens=100000)
    except openai.BadRequestError as e:
        assert e.code == "context_length_exceeded", e
        assert "maximum context length" in e.body["message"], e.body
    else:
        raise AssertionError("accepted a request over the context length")
    try:
        client.completions.create(model=MODEL, prompt="x", suffix="y")
    except openai.BadRequestError as e:
        assert e.param == "suffix", e
    else:
        raise AssertionError("accepted suffix")


@check
def unknown_models_raise_not_found_error():
    for call in (
        lambda: client.chat.completions.create(model="no-such-model", messages=MESSAGES),
        lambda: client.completions.create(model="no-such-model", prompt="x"),
        lambda: client.models.retrieve("no-such-model"),
    ):
        try:
            call()
        except openai.NotFoundError as e:
            assert e.status_code == 404, e
        else:
            raise AssertionError("an unknown model was served")


@check
def a_wrong_api_key_raises_authentication_error():
    wrong = OpenAI(base_url=BASE_URL, api_key="sk-wrong", max_retries=0)
    for call in (
        lambda: wrong.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2),
        lambda: wrong.models.list(),
    ):
        try:
            call()
        except openai.AuthenticationError as e:
            assert e.status_code == 401 and e.code == "invalid_api_key", e
        else:
            raise AssertionError("a wrong key was accepted")
    # Probes need no key.
    assert get("/health")[0] == 200


@check
def metrics_parse_with_the_official_prometheus_parser():
    assert get("/metrics")[0] == 401, "the metrics key is required"
    status, headers, text = get("/metrics", METRICS_KEY)
    assert status == 200, text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The parser strips _total from counter family names.
    for name, kind in [
        ("tessera_time_to_first_token_seconds", "histogram"),
        ("tessera_e2e_request_latency_seconds", "histogram"),
        ("tessera_requests_finished", "counter"),
        ("tessera_generation_tokens", "counter"),
        ("tessera_kv_cache_usage_ratio", "gauge"),
        # vLLM's names, which inference routers read (labelled model_name).
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:num_requests_running", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:gpu_cache_usage_perc", "gauge"),
    ]:
        assert families[name].type == kind, (name, families.get(name))
    # tessera's version label rides along.
    assert [s.labels for s in families["vllm:num_requests_running"].samples] == [
        {"model_name": MODEL, "version": "1"}]
    generated = [s.value for s in families["tessera_generation_tokens"].samples
                 if s.name == "tessera_generation_tokens_total" and s.labels["model"] == MODEL]
    assert generated and generated[0] > 0, generated
    ttft = [s.value for s in families["tessera_time_to_first_token_seconds"].samples
            if s.name.endswith("_count")]
    assert ttft and ttft[0] > 0, ttft
    assert headers["x-request-id"], "every response has a request id"


def main():
    failed = 0
    for fn in CHECKS:
        try:
            fn()
            print(f"ok   {fn.__name__}", flush=True)
        except Exception:  # noqa: BLE001 - report every failure, then fail
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc()
    print(f"{len(CHECKS) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
