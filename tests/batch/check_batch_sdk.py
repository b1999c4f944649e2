"""The Files and Batches APIs driven by the official OpenAI Python SDK.

Usage: check_batch_sdk.py BASE_URL KEY OTHER_KEY DATA_DIR MAX_FILE_BYTES
Exits non-zero (an AssertionError or an SDK error) on any mismatch.
"""

import io
import json
import os
import sys
import time

import openai
from openai import OpenAI

BASE, KEY, OTHER, DATA_DIR, MAX_FILE_BYTES = sys.argv[1:6]
MODEL = "smol"
client = OpenAI(base_url=BASE, api_key=KEY, max_retries=0)
other = OpenAI(base_url=BASE, api_key=OTHER, max_retries=0)
FINAL = {"completed", "failed", "expired", "cancelled"}


def jsonl(lines):
    return io.BytesIO(("\n".join(json.dumps(l) for l in lines) + "\n").encode())


def line(custom_id, url, body):
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def wait(batch_id, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in FINAL:
            return b
        assert time.monotonic() < deadline, f"batch {batch_id} still {b.status}"
        time.sleep(0.3)


def content_lines(file_id):
    text = client.files.content(file_id).text
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def stored_files():
    return sorted(os.listdir(os.path.join(DATA_DIR, "files")))


def expect_status(status, fn):
    try:
        fn()
    except openai.APIStatusError as e:
        assert e.status_code == status, f"expected {status}, got {e.status_code}: {e}"
        return e
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


# --- a chat batch: greedy outputs equal the same requests online -------------
chat_bodies = {
    f"chat-{i}": {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
        "temperature": 0,
    }
    for i, prompt in enumerate(
        ["Name a colour.", "What is 2 + 2?", "Say hello in French.", "Name a planet."]
    )
}
bad_body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": -1}
lines = [line(cid, "/v1/chat/completions", body) for cid, body in chat_bodies.items()]
lines.insert(2, line("chat-bad", "/v1/chat/completions", bad_body))
upload = client.files.create(file=("chat.jsonl", jsonl(lines)), purpose="batch")
assert upload.purpose == "batch" and upload.filename == "chat.jsonl" and upload.bytes > 0
assert client.files.retrieve(upload.id).id == upload.id
uploaded = client.files.content(upload.id).text
assert [json.loads(l) for l in uploaded.splitlines()] == lines

created = client.batches.create(
    input_file_id=upload.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"job": "sdk-test"},
)
assert created.status in ("validating", "in_progress"), created.status
assert created.metadata == {"job": "sdk-test"}
done = wait(created.id)
assert done.status == "completed", done
counts = done.request_counts
assert (counts.total, counts.completed, counts.failed) == (5, 4, 1), counts
assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
assert done.expires_at > done.created_at
assert done.failed_at is None and done.cancelled_at is None and done.errors is None

outputs = content_lines(done.output_file_id)
assert [o["custom_id"] for o in outputs] == list(chat_bodies), outputs
for o in outputs:
    assert o["error"] is None and o["id"].startswith("batch_req_")
    assert o["response"]["status_code"] == 200
    online = client.chat.completions.create(**chat_bodies[o["custom_id"]])
    body = o["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == online.choices[0].message.content, (
        body,
        online,
    )
    assert body["choices"][0]["finish_reason"] == online.choices[0].finish_reason
    assert body["usage"]["completion_tokens"] == online.usage.completion_tokens
errors = content_lines(done.error_file_id)
assert [e["custom_id"] for e in errors] == ["chat-bad"], errors
assert errors[0]["response"]["status_code"] == 400
assert errors[0]["response"]["body"]["error"]["param"] == "temperature"
output_file = client.files.retrieve(done.output_file_id)
assert output_file.purpose == "batch_output"

# --- a completions batch ----------------------------------------------------
cmpl_bodies = {
    f"c{i}": {"model": MODEL, "prompt": p, "max_tokens": 12, "temperature": 0}
    for i, p in enumerate(["The capital of France is", "One, two, three,"])
}
upload2 = client.files.create(
    file=("cmpl.jsonl", jsonl([line(c, "/v1/completions", b) for c, b in cmpl_bodies.items()])),
    purpose="batch",
)
done2 = wait(
    client.batches.create(
        input_file_id=upload2.id, endpoint="/v1/completions", completion_window="24h"
    ).id
)
assert done2.status == "completed" and done2.error_file_id is None, done2
for o in content_lines(done2.output_file_id):
    online = client.completions.create(**cmpl_bodies[o["custom_id"]])
    assert o["response"]["body"]["choices"][0]["text"] == online.choices[0].text

# --- an embeddings batch answers as online does (here: a chat model refuses it) ----
emb_body = {"model": MODEL, "input": ["a text"]}
try:
    client.embeddings.create(**emb_body)
    raise AssertionError("a chat model served embeddings")
except openai.BadRequestError as e:
    online_error = e.body
emb_file = client.files.create(
    file=("emb.jsonl", jsonl([line("e0", "/v1/embeddings", emb_body)])), purpose="batch"
)
emb = wait(client.batches.create(
    input_file_id=emb_file.id, endpoint="/v1/embeddings", completion_window="24h").id)
assert emb.status == "completed" and emb.output_file_id is None, emb
emb_error = content_lines(emb.error_file_id)[0]["response"]
assert emb_error["status_code"] == 400
assert emb_error["body"]["error"]["message"] == online_error["message"], (emb_error, online_error)

# --- list and paging -----------------------------------------------------------
page = client.batches.list(limit=1)
assert [b.id for b in page.data] == [emb.id] and page.has_more
page = client.batches.list(limit=10, after=emb.id)
assert [b.id for b in page.data] == [done2.id, done.id] and not page.has_more
file_ids = {f.id for f in client.files.list().data}
assert {upload.id, upload2.id, done.output_file_id, done.error_file_id} <= file_ids

# --- malformed input: every bad line with its number, the batch fails ---------
good = {"model": MODEL, "prompt": "x", "max_tokens": 1}
raw = "\n".join(
    [
        json.dumps(line("ok-1", "/v1/completions", good)),
        "{this is not json",
        json.dumps({"method": "POST", "url": "/v1/completions", "body": good}),
        json.dumps(line("ok-1", "/v1/completions", good)),
        json.dumps(line("wrong-url", "/v1/chat/completions", good)),
        json.dumps(line("no-model", "/v1/completions", {**good, "model": "no-such-model"})),
        json.dumps(line("bad-body", "/v1/completions", [1, 2])),
        json.dumps(line("streamed", "/v1/completions", {**good, "stream": True})),
    ]
)
bad_file = client.files.create(file=("bad.jsonl", io.BytesIO(raw.encode())), purpose="batch")
failed = wait(
    client.batches.create(
        input_file_id=bad_file.id, endpoint="/v1/completions", completion_window="24h"
    ).id
)
assert failed.status == "failed" and failed.failed_at is not None, failed
got = [(e.line, e.code) for e in failed.errors.data]
assert got == [
    (2, "invalid_json_line"),
    (3, "missing_custom_id"),
    (4, "duplicate_custom_id"),
    (5, "mismatched_url"),
    (6, "model_not_found"),
    (7, "invalid_body"),
    (8, "invalid_body"),
], got
assert failed.output_file_id is None and failed.request_counts.total == 0

# --- bad requests to the APIs themselves -----------------------------------------
for kwargs, param in [
    ({"endpoint": "/v1/moderations"}, "endpoint"),
    ({"completion_window": "1h"}, "completion_window"),
]:
    args = {"input_file_id": upload.id, "endpoint": "/v1/completions", "completion_window": "24h"}
    args.update(kwargs)
    e = expect_status(400, lambda: client.batches.create(**args))
    assert e.body["param"] == param, e.body
e = expect_status(400, lambda: client.files.list(extra_query={"order": "asc"}))
assert e.body["param"] == "order", e.body
expect_status(400, lambda: client.batches.list(limit=0))
expect_status(404, lambda: client.batches.create(
    input_file_id="file-nope", endpoint="/v1/completions", completion_window="24h"))
expect_status(400, lambda: client.files.create(file=("x.jsonl", jsonl([good])), purpose="fine-tune"))

# --- oversized and non-JSONL uploads leave storage untouched ----------------------
before_files, before_list = stored_files(), {f.id for f in client.files.list().data}
big = io.BytesIO(b'{"a": 1}\n' * (int(MAX_FILE_BYTES) // 9 + 10))
expect_status(413, lambda: client.files.create(file=("big.jsonl", big), purpose="batch"))
for name, data in [
    ("table.csv", b"custom_id,prompt\na,hello\n"),
    ("array.json", b'[{"custom_id": "a"}]'),
    ("binary.jsonl", b'{"a": 1}\n\xff\xfe\x00\n'),
]:
    e = expect_status(
        400, lambda: client.files.create(file=(name, io.BytesIO(data)), purpose="batch")
    )
    assert e.body["code"] == "invalid_file_format", e.body
assert stored_files() == before_files
assert {f.id for f in client.files.list().data} == before_list

# --- ownership: another key sees none of it ---------------------------------------
for call in [
    lambda: other.files.retrieve(upload.id),
    lambda: other.files.content(done.output_file_id),
    lambda: other.files.delete(upload.id),
    lambda: other.batches.retrieve(done.id),
    lambda: other.batches.cancel(done.id),
    lambda: other.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    ),
]:
    expect_status(404, call)
assert other.files.list().data == [] and other.batches.list().data == []

# --- cancel: finished lines kept, the rest marked cancelled, one line each ----------
slow = [
    line(f"s{i}", "/v1/completions",
         {"model": MODEL, "prompt": f"Story {i}:", "max_tokens": 48, "ignore_eos": True})
    for i in range(40)
]
slow_file = client.files.create(file=("slow.jsonl", jsonl(slow)), purpose="batch")
slow_batch = client.batches.create(
    input_file_id=slow_file.id, endpoint="/v1/completions", completion_window="24h"
)
deadline = time.monotonic() + 300
while client.batches.retrieve(slow_batch.id).request_counts.completed < 1:
    assert time.monotonic() < deadline, "no line of the slow batch finished"
    time.sleep(0.2)
# A batch queued behind the running one is cancelled at once.
queued = client.batches.create(
    input_file_id=slow_file.id,
    endpoint="/v1/completions", completion_window="24h",
)
queued_cancel = client.batches.cancel(queued.id)
assert queued_cancel.status == "cancelled", queued_cancel
assert queued_cancel.cancelled_at is not None and queued_cancel.output_file_id is None
assert client.batches.retrieve(slow_batch.id).status == "in_progress"
cancelling = client.batches.cancel(slow_batch.id)
assert cancelling.status in ("cancelling", "cancelled"), cancelling
cancelled = wait(slow_batch.id)
assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None, cancelled
kept = content_lines(cancelled.output_file_id) if cancelled.output_file_id else []
dropped = content_lines(cancelled.error_file_id)
assert sorted(o["custom_id"] for o in kept + dropped) == sorted(l["custom_id"] for l in slow)
assert all(d["error"]["code"] == "batch_cancelled" for d in dropped), dropped
assert len(dropped) > 0
assert cancelled.request_counts.completed == len(kept)
expect_status(409, lambda: client.batches.cancel(done.id))

# --- delete ----------------------------------------------------------------------
deleted = client.files.delete(upload2.id)
assert deleted.deleted and deleted.id == upload2.id
expect_status(404, lambda: client.files.retrieve(upload2.id))
print("batch SDK checks passed")
