"""The official OpenAI SDK against tessera's /v1/embeddings: float and base64
vectors (the SDK asks for base64 by default and decodes it with NumPy), token
ids as input, usage, and the SDK's error for a 400."""
import json
import sys

import numpy as np
import openai

base_url, fixture_path = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused")
cases = json.load(open(fixture_path))["cases"]
texts = [c["text"] for c in cases]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb)


default = client.embeddings.create(model="minilm", input=texts)
floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
assert default.object == "list" and default.model == "minilm", default
assert [d.index for d in default.data] == list(range(len(texts)))
assert default.usage.prompt_tokens == sum(len(c["token_ids"]) for c in cases), default.usage
assert default.usage.total_tokens == default.usage.prompt_tokens
for case, b64, fl in zip(cases, default.data, floats.data):
    assert len(b64.embedding) == 384
    # JSON floats are the f32 values' shortest decimal forms: equal as f32.
    assert np.array_equal(np.float32(b64.embedding), np.float32(fl.embedding)), "base64 and float differ"
    c = cosine(fl.embedding, case["embedding"])
    assert c >= 0.9999, (case["text"], c)

by_ids = client.embeddings.create(model="minilm", input=cases[0]["token_ids"], encoding_format="float")
assert by_ids.data[0].embedding == floats.data[0].embedding

try:
    client.embeddings.create(model="minilm", input="hello", dimensions=128)
    raise SystemExit("dimensions on a model without Matryoshka training was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "dimensions", e.body
print("embeddings: ok")
