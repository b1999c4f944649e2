"""Structured output and tool calling driven by the official OpenAI Python SDK, with every
output checked by Python's `jsonschema` (an independent validator).

Usage: check_structured.py BASE_URL MODEL

Prints one line per check and exits non-zero if any failed.
"""

import json
import random
import re
import sys
import traceback
import urllib.request

import jsonschema
from openai import OpenAI
from pydantic import BaseModel

BASE_URL, MODEL = sys.argv[1:3]
client = OpenAI(base_url=BASE_URL, api_key="none", max_retries=0, timeout=600)
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


class City(BaseModel):
    name: str
    country: str
    population: int


ASK = [{"role": "user", "content": "Describe Paris as JSON."}]


@check
def parse_returns_a_pydantic_object():
    done = client.chat.completions.parse(
        model=MODEL, messages=ASK, response_format=City, max_tokens=200, seed=1
    )
    choice = done.choices[0]
    assert choice.finish_reason == "stop", choice.finish_reason
    assert isinstance(choice.message.parsed, City), choice.message
    jsonschema.validate(json.loads(choice.message.content), City.model_json_schema())


@check
def parse_streamed_assembles_the_object():
    with client.chat.completions.stream(
        model=MODEL, messages=ASK, response_format=City, max_tokens=200, seed=2
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, City), final.choices[0].message


def schema_format(schema, name="out"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@check
def json_schema_streamed_equals_whole_with_a_seed():
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 20}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"],
        "additionalProperties": False,
    }
    args = dict(model=MODEL, messages=ASK, response_format=schema_format(schema),
                max_tokens=100, seed=7, temperature=0.8)
    whole = client.chat.completions.create(**args).choices[0].message.content
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args)
             if c.choices]
    assert "".join(parts) == whole, ("".join(parts), whole)
    jsonschema.validate(json.loads(whole), schema)


@check
def n_samples_each_follow_the_schema_and_logprobs_stay():
    schema = {"type": "object", "properties": {"k": {"enum": ["a", "b", "c"]}}, "required": ["k"],
              "additionalProperties": False}
    done = client.chat.completions.create(model=MODEL, messages=ASK, response_format=schema_format(schema),
                                          max_tokens=50, n=3, seed=3, logprobs=True, top_logprobs=2)
    assert len(done.choices) == 3
    for c in done.choices:
        jsonschema.validate(json.loads(c.message.content), schema)
        assert c.logprobs.content, "logprobs missing"


@check
def json_object_gives_an_object():
    done = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=300, seed=4,
                                          response_format={"type": "json_object"})
    c = done.choices[0]
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.message.content), dict), c.message.content
    else:
        assert c.finish_reason == "length" and c.message.content.startswith("{")


@check
def vllm_extras_on_completions_and_chat():
    comp = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10,
                                     extra_body={"guided_choice": ["Paris", "London", "Rome"]})
    assert comp.choices[0].text in ("Paris", "London", "Rome"), comp.choices[0].text
    comp = client.completions.create(model=MODEL, prompt="A phone number:", max_tokens=20, seed=5,
                                     extra_body={"structured_outputs": {"regex": r"\d{3}-\d{4}"}})
    assert re.fullmatch(r"\d{3}-\d{4}", comp.choices[0].text), comp.choices[0].text
    chat = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=20,
                                          extra_body={"structured_outputs": {"grammar": 'start: "yes" | "no"'}})
    assert chat.choices[0].message.content in ("yes", "no")


@check
def a_constraint_cut_by_max_tokens_ends_with_length():
    schema = {"type": "object", "properties": {"text": {"type": "string", "minLength": 200}},
              "required": ["text"]}
    c = client.chat.completions.create(model=MODEL, messages=ASK, response_format=schema_format(schema),
                                       max_tokens=8).choices[0]
    assert c.finish_reason == "length", c.finish_reason


@check
def bad_schemas_are_400s_naming_the_field():
    import openai
    cases = [
        (dict(response_format=schema_format({"type": "object", "if": {}})),
         "response_format.json_schema.schema", "if"),
        (dict(extra_body={"guided_regex": "(unclosed"}), "guided_regex", "unclosed"),
        (dict(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
         "response_format.json_schema.name", "required"),
    ]
    for extra, param, word in cases:
        try:
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, **extra)
        except openai.BadRequestError as e:
            body = e.body or {}
            assert body.get("param") == param, body
            assert word in body.get("message", ""), body
        else:
            raise AssertionError(f"{extra} was accepted")


def random_schema(rng, depth=0):
    """A schema drawn from objects, arrays, enums, nesting, bounded numbers,
    string patterns and lengths, required fields."""
    kinds = ["integer", "number", "string", "boolean", "enum", "pattern"]
    if depth < 2:
        kinds += ["object", "array"]
    kind = rng.choice(kinds)
    if kind == "integer":
        lo = rng.randint(-50, 50)
        return {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 100)}
    if kind == "number":
        return {"type": "number", "minimum": -10.5, "maximum": rng.choice([0, 3.25, 1000])}
    if kind == "string":
        return {"type": "string", "minLength": rng.randint(0, 3), "maxLength": rng.randint(4, 12)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", 1, 2.5, None, True], rng.randint(1, 4))}
    if kind == "pattern":
        return {"type": "string", "pattern": rng.choice([r"^[a-z]{2,5}$", r"^\d{3}-\d{2}$", r"^(yes|no)$"])}
    if kind == "array":
        lo = rng.randint(0, 2)
        return {"type": "array", "items": random_schema(rng, depth + 1), "minItems": lo,
                "maxItems": lo + rng.randint(0, 3)}
    props = {f"f{i}": random_schema(rng, depth + 1) for i in range(rng.randint(1, 4))}
    required = [k for k in props if rng.random() < 0.7]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


@check
def every_output_under_generated_schemas_validates():
    rng = random.Random(1234)
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    validated = 0
    for i in range(count):
        schema = random_schema(rng)
        if schema.get("type") != "object":
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"],
                      "additionalProperties": False}
        c = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Fill in this JSON."}],
            response_format=schema_format(schema), max_tokens=400, seed=i, temperature=1.0,
        ).choices[0]
        if c.finish_reason == "length":
            continue  # a cut-off value is documented as such; nothing to validate
        assert c.finish_reason == "stop", (schema, c)
        try:
            jsonschema.validate(json.loads(c.message.content), schema)
        except Exception as e:
            raise AssertionError(f"schema {json.dumps(schema)} output {c.message.content!r}: {e}")
        validated += 1
    assert validated >= count * 3 // 4, f"only {validated} of {count} finished"
    print(f"   {validated} of {count} outputs validated")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"],
    "additionalProperties": False}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_call(call, tools=(WEATHER, TIME)):
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.type == "function" and call.id.startswith("call_"), call
    assert call.function.name in schemas, call
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


@check
def required_tool_choice_gives_valid_calls_whole_and_streamed():
    for seed in range(3):
        done = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                                              tool_choice="required", max_tokens=150, seed=seed)
        c = done.choices[0]
        assert c.finish_reason == "tool_calls", c
        assert c.message.tool_calls, c.message
        for call in c.message.tool_calls:
            check_call(call)
    with client.chat.completions.stream(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                                        tool_choice="required", max_tokens=150, seed=5) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    c = final.choices[0]
    assert c.finish_reason == "tool_calls", c
    for call in c.message.tool_calls:
        check_call(call)


@check
def a_named_function_is_the_one_called_and_streams_like_openai():
    named = {"type": "function", "function": {"name": "get_time"}}
    done = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                                          tool_choice=named, max_tokens=150, seed=1)
    calls = done.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"], calls
    check_call(calls[0])
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                                                 tool_choice=named, max_tokens=150, seed=1, stream=True))
    deltas = [d for ch in chunks if ch.choices for d in (ch.choices[0].delta.tool_calls or [])]
    first = deltas[0]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function", first
    assert first.function.name == "get_time", first
    assert all(d.id is None and d.function.name is None for d in deltas[1:]), deltas
    args = "".join(d.function.arguments or "" for d in deltas)
    assert args == calls[0].function.arguments, (args, calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@check
def a_tool_result_goes_back_for_a_second_turn():
    first = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER],
                                           tool_choice="required", max_tokens=150, seed=2).choices[0].message
    call = first.tool_calls[0]
    history = ASK_WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
    ]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none",
                                            max_tokens=40, seed=2).choices[0]
    assert second.message.tool_calls is None and second.message.content, second
    auto = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=150,
                                          seed=2).choices[0]
    if auto.message.tool_calls:
        assert auto.finish_reason == "tool_calls"
    else:
        assert "<tool_call>" not in (auto.message.content or "") or auto.finish_reason == "length", auto


ROOT = BASE_URL.rsplit("/v1", 1)[0]


def tokens_of(text):
    """The default model's tokens for `text`, from the server's /tokenize."""
    body = json.dumps({"model": MODEL, "prompt": text, "add_special_tokens": False}).encode()
    req = urllib.request.Request(ROOT + "/tokenize", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["tokens"]


def streamed(**args):
    """A streamed reply as the SDK's stream helper assembles it, and its raw tool-call deltas."""
    deltas = []
    with client.chat.completions.stream(**args) as stream:
        for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                deltas.extend(event.chunk.choices[0].delta.tool_calls or [])
        final = stream.get_final_completion()
    return final.choices[0], deltas


def check_deltas_like_openai(deltas, calls):
    """Per call: index, id, type and name in its first delta only, then arguments in order."""
    by_index = {}
    for d in deltas:
        by_index.setdefault(d.index, []).append(d)
    assert sorted(by_index) == list(range(len(calls))), (list(by_index), calls)
    for i, call in enumerate(calls):
        first, *rest = by_index[i]
        assert first.id == call.id and first.type == "function" and first.function.name == call.function.name, first
        assert all(d.id is None and d.type is None and d.function.name is None for d in rest), rest
        assert "".join(d.function.arguments or "" for d in by_index[i]) == call.function.arguments


# The call's opening in the syntax tessera teaches a model without one (SmolLM2's ChatML).
OPENING = "<tool_call>"
FEW_SHOT = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps({"city": "Rome", "unit": "celsius"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 25}"},
    {"role": "assistant", "content": "It is 25 degrees in Rome."},
]


@check
def auto_calls_are_constrained_whole_and_streamed_in_fragments():
    # The opening's tokens made likely (the model orders them as in the call
    # it saw in the history); once it is written, the grammar holds the rest
    # to a call with schema-valid arguments, whatever the bias favours.
    bias = {str(t): 100 for t in tokens_of(OPENING)}
    args = dict(model=MODEL, messages=FEW_SHOT + ASK_WEATHER, tools=[WEATHER, TIME], tool_choice="auto",
                max_tokens=120, temperature=0, logit_bias=bias)
    whole = client.chat.completions.create(**args).choices[0]
    assert whole.finish_reason == "tool_calls", whole
    assert whole.message.tool_calls, whole.message
    for call in whole.message.tool_calls:
        check_call(call)
    assert OPENING not in (whole.message.content or ""), whole.message
    choice, deltas = streamed(**args)
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == \
        [(c.function.name, c.function.arguments) for c in whole.message.tool_calls], (calls, whole)
    check_deltas_like_openai(deltas, calls)
    fragments = [d.function.arguments for d in deltas if d.function.arguments]
    assert len(fragments) > len(calls), f"arguments came whole: {fragments}"


@check
def a_text_answer_under_auto_is_plain_content():
    # The opening's first token made impossible: the reply is text.
    bias = {str(tokens_of(OPENING)[0]): -100}
    args = dict(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
                tools=[WEATHER, TIME], tool_choice="auto", max_tokens=40, temperature=0, logit_bias=bias)
    whole = client.chat.completions.create(**args).choices[0]
    assert whole.message.tool_calls is None and whole.message.content, whole
    assert whole.finish_reason in ("stop", "length"), whole
    choice, deltas = streamed(**args)
    assert deltas == [] and choice.message.tool_calls is None, (deltas, choice)
    assert choice.message.content == whole.message.content, (choice.message.content, whole.message.content)


@check
def required_arguments_stream_in_fragments():
    choice, deltas = streamed(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required",
                              parallel_tool_calls=False, max_tokens=150, seed=3)
    assert choice.finish_reason == "tool_calls", choice
    check_deltas_like_openai(deltas, choice.message.tool_calls)
    fragments = [d.function.arguments for d in deltas if d.function.arguments]
    assert len(fragments) > 1, f"arguments came whole: {fragments}"


@check
def bad_tool_requests_are_400s():
    import openai
    cases = [
        (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                    "if": {}}}}],
              tool_choice="required"), "tools"),
    ]
    for extra, param in cases:
        try:
            client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, max_tokens=5, **extra)
        except openai.BadRequestError as e:
            assert (e.body or {}).get("param") == param, e.body
        else:
            raise AssertionError(f"{extra} was accepted")


failed = 0
for fn in CHECKS:
    try:
        fn()
        print(f"ok   {fn.__name__}")
    except Exception:
        failed += 1
        print(f"FAIL {fn.__name__}")
        traceback.print_exc()
sys.exit(1 if failed else 0)
