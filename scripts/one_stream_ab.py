"""One stream on an older checkout against this tree: both stacks up, requests interleaved, so the
machine's drift hits both alike. Greedy, the default pair, 12 dev.jsonl prompts x 48 tokens.

    git worktree add /tmp/old <commit>
    .venv/bin/python scripts/one_stream_ab.py /tmp/old
"""
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

HERE = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, HERE)
from specdec.bench.command import DEFAULT_PROMPTS, read_records
from specdec.v1 import generation_pb2, generation_pb2_grpc


def up(tree, base):
    env = dict(os.environ, PYTHONPATH=tree)
    cmd = [sys.executable, "-m", "specdec", "up", "--port", str(base), "--draft-port", str(base + 1),
           "--target-port", str(base + 2), "--metrics-port", str(base + 3), "--http-port", "0"]
    return subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

stacks = {"old": (up(sys.argv[1], 51000), 51000), "new": (up(HERE, 52000), 52000)}
prompts = [r["messages"] for r in read_records(DEFAULT_PROMPTS)][:12]

async def one(address, msgs, draft):
    async with grpc.aio.insecure_channel(address) as ch:
        stub = generation_pb2_grpc.GenerationStub(ch)
        req = generation_pb2.GenerateRequest(messages=[generation_pb2.Message(role=m["role"], content=m["content"]) for m in msgs],
                                             max_new_tokens=48, draft=draft)
        started, tokens = time.perf_counter(), []
        async for chunk in stub.Generate(req, timeout=600):
            tokens += chunk.token_ids
        return tokens, time.perf_counter() - started

try:
    for proc, base in stacks.values():
        deadline = time.time() + 300
        while True:  # up, and warm
            try:
                asyncio.run(one(f"127.0.0.1:{base}", prompts[0], "none"))
                break
            except grpc.aio.AioRpcError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(2)
    res = {(n, d): [] for n in stacks for d in ("model", "none")}
    same = 0
    for i, p in enumerate(prompts):
        order = [("old", "model"), ("new", "model"), ("old", "none"), ("new", "none")]
        if i % 2: order.reverse()
        outs = {}
        for n, d in order:
            tokens, seconds = asyncio.run(one(f"127.0.0.1:{stacks[n][1]}", p, d))
            res[(n, d)].append(len(tokens) / seconds)
            outs[(n, d)] = tokens
        same += len({tuple(v) for v in outs.values()}) == 1
        print(i, {k: round(v[-1], 1) for k, v in res.items()}, flush=True)
    for d in ("model", "none"):
        o, n = statistics.median(res[("old", d)]), statistics.median(res[("new", d)])
        print(f"draft={d}: old {o:.1f} tok/s, new {n:.1f} tok/s, new/old {n/o:.2f}x (median over {len(prompts)} prompts)")
    print(f"outputs identical across all four runs: {same}/{len(prompts)} prompts")
finally:
    for proc, _ in stacks.values():
        proc.terminate()
        proc.wait()
