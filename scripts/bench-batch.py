"""scripts/bench-batch's client: submits a batch of random-word prompts over
the OpenAI SDK and either waits for it (printing its output throughput),
leaves it running, or cancels every running batch.

Usage: bench-batch.py BASE_URL LINES INPUT_WORDS OUTPUT_TOKENS wait|leave|cancel-all
"""

import io
import json
import random
import sys
import time

from openai import OpenAI

base, lines, input_len, output_len, mode = sys.argv[1:6]
client = OpenAI(base_url=base, api_key="unused", max_retries=0)

if mode == "cancel-all":
    for b in client.batches.list(limit=100).data:
        if b.status in ("validating", "in_progress"):
            client.batches.cancel(b.id)
    sys.exit(0)

rng = random.Random(0)
words = "the of and to in is was for on that with as by at from it an be this are".split()
body = io.StringIO()
for i in range(int(lines)):
    # Distinct first words: no prompt shares a cached prefix with another.
    prompt = f"{i} " + " ".join(rng.choice(words) for _ in range(int(input_len) - 1))
    body.write(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
        "body": {"model": "smol", "prompt": prompt, "max_tokens": int(output_len),
                 "ignore_eos": True, "temperature": 0},
    }) + "\n")
f = client.files.create(file=("bench.jsonl", io.BytesIO(body.getvalue().encode())), purpose="batch")
start = time.monotonic()
b = client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
print(f"batch {b.id}: {lines} lines submitted")
if mode == "leave":
    sys.exit(0)
while b.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(0.2)
    b = client.batches.retrieve(b.id)
elapsed = time.monotonic() - start
assert b.status == "completed", b
tokens = 0
for line in client.files.content(b.output_file_id).text.splitlines():
    tokens += json.loads(line)["response"]["body"]["usage"]["completion_tokens"]
print(f"batch of {lines} lines: {elapsed:.1f} s, {tokens} output tokens, "
      f"{tokens / elapsed:.2f} output tok/s, {int(lines) / elapsed:.3f} req/s")
