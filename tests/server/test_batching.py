"""Batch invariance: requests that share a batch get exactly the text they get alone, and no
request's prompt (marked by a unique canary) shows up in another's output."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from support import MODEL_ID, RunningSampler, assert_alive, assert_no_leak, canary_prompts

N = 8
MAX_TOKENS = 32


def _chat(server, prompt: str, stream: bool, gate: threading.Barrier | None = None, **kw) -> str:
    c = server.client()
    try:
        if gate is not None:
            gate.wait()
        msgs = [{"role": "user", "content": prompt}]
        if stream:
            parts = []
            for chunk in c.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=MAX_TOKENS,
                                                   stream=True, **kw):
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
            return "".join(parts)
        r = c.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=MAX_TOKENS, **kw)
        return r.choices[0].message.content
    finally:
        c.close()


def _run(server, prompts: list[str], streams: list[bool], **kw) -> tuple[list[str], list[str], RunningSampler]:
    alone = [_chat(server, p, s, **kw) for p, s in zip(prompts, streams)]
    gate = threading.Barrier(len(prompts))
    with RunningSampler(server) as sampler, ThreadPoolExecutor(len(prompts)) as ex:
        futures = [ex.submit(_chat, server, p, s, gate, **kw) for p, s in zip(prompts, streams)]
        together = [f.result() for f in futures]
    return alone, together, sampler


def _assert_same(alone: list[str], together: list[str]) -> None:
    diffs = [i for i in range(len(alone)) if alone[i] != together[i]]
    assert not diffs, "outputs differ between alone and batched for requests %s:\n%s" % (
        diffs, "\n".join(f"  alone:    {alone[i]!r}\n  together: {together[i]!r}" for i in diffs[:3]))


def test_batch_invariance_greedy(server):
    items = canary_prompts(N, tag="B")
    canaries, prompts = [c for c, _ in items], [p for _, p in items]
    alone, together, sampler = _run(server, prompts, [False] * N, temperature=0)
    assert_no_leak(canaries, alone)
    assert_no_leak(canaries, together)
    _assert_same(alone, together)
    assert sampler.max_running >= 2, "the 8 requests were never batched together"
    assert_alive(server)


def test_batch_invariance_mixed_streaming(server):
    """Streaming and non-streaming requests, and different prompt lengths, in one batch."""
    items = canary_prompts(N, mixed_lengths=True, tag="M")
    canaries, prompts = [c for c, _ in items], [p for _, p in items]
    alone, together, _ = _run(server, prompts, [i % 2 == 0 for i in range(N)], temperature=0)
    assert_no_leak(canaries, together)
    _assert_same(alone, together)
    assert_alive(server)


def test_batch_invariance_seeded_sampling(server):
    """A seeded sample depends on the request alone, not on what shares its batch."""
    items = canary_prompts(N, tag="R")
    canaries, prompts = [c for c, _ in items], [p for _, p in items]
    alone, together, _ = _run(server, prompts, [False] * N, temperature=0.8, seed=99)
    assert_no_leak(canaries, together)
    _assert_same(alone, together)
    assert_alive(server)
