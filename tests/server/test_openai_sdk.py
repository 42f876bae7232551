"""`modu serve` through the official `openai` SDK (max_retries=0, strict response validation).

The test model is Gemma 3 270M *base*: its text is not meaningful, so these tests check shapes,
invariants and agreement between equivalent requests, not answers.
"""

from __future__ import annotations

import json
import math
import time

import jsonschema
import openai
import pytest

import support
from support import MODEL_ID, assert_openai_error, req, sse_data, stream_post

FINISH = {"stop", "length", "tool_calls", "content_filter"}
USER = [{"role": "user", "content": "Write a few sentences about the history of Paris."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def _check_usage(usage, max_tokens: int | None = None) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens >= 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if max_tokens is not None:
        assert usage.completion_tokens <= max_tokens


# ------------------------------------------------------------------------------------ health, models


def test_health(server):
    r = req(server, "GET", "/health")
    assert r.status == 200, r
    assert r.json().get("status") == "ok", r


def test_models_list(client, server):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert ids == sorted([MODEL_ID, "exaone4-tiny"]), ids
    for m in page.data:
        assert m.object == "model" and isinstance(m.owned_by, str) and isinstance(m.created, int)
    raw = req(server, "GET", "/v1/models").json()
    assert raw["object"] == "list"


def test_models_retrieve(client):
    m = client.models.retrieve(MODEL_ID)
    assert m.id == MODEL_ID and m.object == "model"


def test_model_id_from_name_flag(secure_server):
    """`-m tiny=PATH` serves the model under the id `tiny`."""
    c = secure_server.client()
    assert [m.id for m in c.models.list().data] == ["tiny"]
    assert c.models.retrieve("tiny").id == "tiny"


# ------------------------------------------------------------------------------------------- chat


def test_chat_basic(client):
    c = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=16, temperature=0)
    assert c.object == "chat.completion"
    assert c.model == MODEL_ID
    assert abs(c.created - time.time()) < 3600, f"created must be Unix seconds: {c.created}"
    assert len(c.choices) == 1
    ch = c.choices[0]
    assert ch.index == 0 and ch.message.role == "assistant"
    assert isinstance(ch.message.content, str)
    assert ch.finish_reason in ("stop", "length")
    _check_usage(c.usage, 16)
    assert c.usage.completion_tokens >= 1
    if ch.finish_reason == "length":
        assert c.usage.completion_tokens == 16


def test_chat_max_completion_tokens(client):
    c = client.chat.completions.create(model=MODEL_ID, messages=USER, max_completion_tokens=3,
                                       temperature=0)
    _check_usage(c.usage, 3)


def test_chat_greedy_is_deterministic(client):
    kw = dict(model=MODEL_ID, messages=USER, max_tokens=24, temperature=0)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_chat_seed_reproducible(client):
    kw = dict(model=MODEL_ID, messages=USER, max_tokens=24, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_chat_system_and_multi_turn(client):
    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."}]
    c = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=8, temperature=0)
    assert c.choices[0].message.role == "assistant"


def test_chat_content_parts(client):
    """`content` as a list of text parts (what the SDK's typed params produce) is accepted."""
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hello"},
                                         {"type": "text", "text": " there."}]}]
    c = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=4, temperature=0)
    assert isinstance(c.choices[0].message.content, str)


def test_chat_n_choices(client):
    c = client.chat.completions.create(model=MODEL_ID, messages=USER, n=2, max_tokens=8,
                                       temperature=0.9, seed=3)
    assert sorted(ch.index for ch in c.choices) == [0, 1]
    for ch in c.choices:
        assert ch.message.role == "assistant" and ch.finish_reason in ("stop", "length")
    _check_usage(c.usage)

    stream = client.chat.completions.create(model=MODEL_ID, messages=USER, n=2, max_tokens=8,
                                            temperature=0.9, seed=3, stream=True)
    finished: dict[int, int] = {}
    for chunk in stream:
        for ch in chunk.choices:
            assert ch.index in (0, 1)
            if ch.finish_reason:
                finished[ch.index] = finished.get(ch.index, 0) + 1
    assert finished == {0: 1, 1: 1}


def test_chat_extra_sampling_params_accepted(client):
    c = client.chat.completions.create(
        model=MODEL_ID, messages=USER, max_tokens=4, temperature=0.7, top_p=0.9, seed=1,
        frequency_penalty=0.1, presence_penalty=0.1, logit_bias={"1": -100}, stop=["\n\n"],
        extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1})
    _check_usage(c.usage, 4)


def test_chat_template_kwargs_accepted(client):
    c = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=4, temperature=0,
                                       extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert c.choices[0].message.role == "assistant"


@pytest.mark.parametrize("where", ["top_level", "chat_template_kwargs"])
def test_request_chat_template_rejected(client, where):
    tpl = "{% for m in messages %}{{ m.content }}{% endfor %}"
    extra = {"chat_template": tpl} if where == "top_level" else \
        {"chat_template_kwargs": {"chat_template": tpl}}
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=2, extra_body=extra)
    assert ei.value.param == "chat_template", ei.value.body


# ------------------------------------------------------------------------------------ streaming


def test_chat_stream_include_usage_case25(client, server):
    """Reliability case 25: the happy-path stream, as the SDK and as raw SSE."""
    kw = dict(model=MODEL_ID, messages=USER, max_tokens=16, temperature=0, seed=7)
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks, "no chunks"
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"
    for c in chunks:
        assert c.object == "chat.completion.chunk"
        assert (c.id, c.created, c.model) == (chunks[0].id, chunks[0].created, chunks[0].model)
    assert chunks[0].model == MODEL_ID

    # choices-bearing chunks, then exactly one usage chunk with choices == [] at the very end
    *body, last = chunks
    assert last.choices == [] and last.usage is not None, last
    for c in body:
        assert c.usage is None, f"usage must be null before the last chunk: {c}"
        assert len(c.choices) == 1
    finishes = [c for c in body if c.choices[0].finish_reason is not None]
    assert len(finishes) == 1 and finishes[0] is body[-1], \
        "exactly one finish_reason, on the last choices-bearing chunk"
    assert finishes[0].choices[0].finish_reason in FINISH

    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == full.choices[0].message.content
    assert finishes[0].choices[0].finish_reason == full.choices[0].finish_reason
    u, fu = last.usage, full.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == \
        (fu.prompt_tokens, fu.completion_tokens, fu.total_tokens)
    _check_usage(u, 16)

    # raw SSE: content type, every data line JSON (strict UTF-8), usage chunk then [DONE]
    r = stream_post(server, "/v1/chat/completions",
                    {**kw, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status == 200, r
    assert (r.header("content-type") or "").startswith("text/event-stream")
    data = sse_data(r)
    assert data and data[-1] == "[DONE]", data[-3:]
    objs = [json.loads(d) for d in data[:-1]]
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == u.completion_tokens
    assert all(o.get("usage") is None for o in objs[:-1])


def test_chat_stream_token_count_matches_logprobs(client):
    """usage.completion_tokens equals the number of tokens the stream reported."""
    chunks = list(client.chat.completions.create(
        model=MODEL_ID, messages=USER, max_tokens=12, temperature=0, logprobs=True, stream=True,
        stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    n = sum(len(c.choices[0].logprobs.content or []) for c in chunks
            if c.choices and c.choices[0].logprobs is not None)
    finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    if finish == "length":
        assert n == usage.completion_tokens == 12
    else:  # whether the end-of-turn token is counted is the server's choice; not both ways
        assert usage.completion_tokens - 1 <= n <= usage.completion_tokens


def test_chat_stream_without_usage_option(client):
    chunks = list(client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=6,
                                                 temperature=0, stream=True))
    assert chunks
    for c in chunks:
        assert c.usage is None and len(c.choices) == 1


def _pick_stop(text: str) -> tuple[str, int] | None:
    for p in range(max(1, len(text) // 3), len(text) - 3):
        s = text[p:p + 3]
        if s.strip() == s and "\ufffd" not in s:
            return s, text.find(s)
    return None


def test_stop_sequences(client):
    """Output stops right before the first match of `stop`, in completions and in a chat stream."""
    prompt = "The history of the city of Paris begins"
    text = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=24,
                                     temperature=0).choices[0].text
    picked = _pick_stop(text)
    assert picked, f"the model produced too little text to test stop sequences: {text!r}"
    stop, idx = picked
    r = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=24, temperature=0,
                                  stop=[stop])
    assert r.choices[0].text == text[:idx] and r.choices[0].finish_reason == "stop", (stop, text)

    kw = dict(model=MODEL_ID, messages=USER, max_tokens=24, temperature=0)
    chat_text = client.chat.completions.create(**kw).choices[0].message.content
    picked = _pick_stop(chat_text)
    assert picked, f"the model produced too little text to test stop sequences: {chat_text!r}"
    stop, idx = picked
    chunks = list(client.chat.completions.create(**kw, stop=stop, stream=True))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == chat_text[:idx], (stop, chat_text)
    assert chunks[-1].choices[0].finish_reason == "stop"


# ------------------------------------------------------------------------------------ completions


def test_completions_basic(client):
    r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=12,
                                  temperature=0)
    assert r.object == "text_completion" and r.model == MODEL_ID
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert isinstance(r.choices[0].text, str) and r.choices[0].finish_reason in ("stop", "length")
    _check_usage(r.usage, 12)


def test_completions_stream_include_usage(client, server):
    kw = dict(model=MODEL_ID, prompt="Once upon a time", max_tokens=12, temperature=0)
    full = client.completions.create(**kw)
    # strict=False: see ModuServer.client (the SDK's Completion type rejects finish_reason null)
    lenient = server.client(strict=False)
    chunks = list(lenient.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None and len(c.choices) == 1 for c in body)
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].text for c in body) == full.choices[0].text
    finishes = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert body[-1].choices[0].finish_reason is not None
    assert last.usage.completion_tokens == full.usage.completion_tokens

    r = stream_post(server, "/v1/completions",
                    {**kw, "stream": True, "stream_options": {"include_usage": True}})
    data = sse_data(r)
    assert r.status == 200 and data[-1] == "[DONE]", data[-3:]
    objs = [json.loads(d) for d in data[:-1]]
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["total_tokens"] == full.usage.total_tokens


def test_completions_token_array_prompt(client):
    """A prompt given as token ids (OpenAI allows a list of ints); 2 is <bos>."""
    r = client.completions.create(model=MODEL_ID, prompt=[2, 818, 5279, 529], max_tokens=4,
                                  temperature=0)
    _check_usage(r.usage, 4)
    assert r.usage.prompt_tokens == 4, "token prompts are used as given (no second <bos>)"


# ------------------------------------------------------------------------------------------ tools


def test_tools_accepted(client):
    c = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "What is the weather in Seoul?"}],
        tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=32, temperature=0)
    ch = c.choices[0]
    if ch.message.tool_calls:  # a base model rarely calls tools; if it does, the shape must hold
        assert ch.finish_reason == "tool_calls"
        for tc in ch.message.tool_calls:
            assert tc.type == "function" and tc.id and tc.function.name == "get_weather"
            assert isinstance(json.loads(tc.function.arguments), dict)
    else:
        assert ch.finish_reason in ("stop", "length")


def test_tool_call_round_trip(client):
    """On the tiny EXAONE 4.0 checkpoint served beside Gemma: LG's template renders tool calls
    and grouped tool results (Gemma's own template has no tool role and answers 400)."""
    msgs = [
        {"role": "user", "content": "What is the weather in Seoul?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_0001", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Seoul"})}}]},
        {"role": "tool", "tool_call_id": "call_0001", "content": json.dumps({"temp_c": 21, "sky": "clear"})},
    ]
    c = client.chat.completions.create(model="exaone4-tiny", messages=msgs, tools=[WEATHER_TOOL],
                                       max_tokens=16, temperature=0)
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].finish_reason in FINISH
    _check_usage(c.usage, 16)
    chunks = list(client.chat.completions.create(model="exaone4-tiny", messages=msgs, tools=[WEATHER_TOOL],
                                                 max_tokens=8, temperature=0, stream=True))
    # Gemma's template refuses the tool role: a clean 400 naming the template's reason.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=4)
    assert "alternate" in str(e.value)
    assert chunks and chunks[-1].choices[0].finish_reason in FINISH


# -------------------------------------------------------------------------------- response_format

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20},
                   "age": {"type": "integer", "minimum": 0, "maximum": 150}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_output(client):
    c = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Describe a person as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}},
        max_tokens=200, temperature=0)
    content = c.choices[0].message.content
    assert c.choices[0].finish_reason == "stop", f"cut off: {content!r}"
    jsonschema.validate(json.loads(content), PERSON_SCHEMA)


def test_json_schema_streamed_and_sampled(client):
    """Streaming and sampling (n=2, temperature 1) follow the grammar too; each choice has its own."""
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Two people as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}},
        max_tokens=200, temperature=1.0, seed=7, n=2, stream=True, stream_options={"include_usage": True})
    text = {0: "", 1: ""}
    finish = {}
    for chunk in stream:
        for ch in chunk.choices:
            text[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert finish == {0: "stop", 1: "stop"}, (finish, text)
    for t in text.values():
        jsonschema.validate(json.loads(t), PERSON_SCHEMA)


def test_json_schema_with_logprobs(client):
    """Where the grammar allows fewer tokens than top_logprobs asks for, the alternatives list
    only allowed tokens, each a finite number (refused tokens have -inf, which JSON cannot hold)."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    c = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Is it ok?"}], max_tokens=100, temperature=0,
        logprobs=True, top_logprobs=20,
        response_format={"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}})
    jsonschema.validate(json.loads(c.choices[0].message.content), schema)
    content = c.choices[0].logprobs.content
    assert content
    assert any(len(t.top_logprobs) < 20 for t in content), "some step should allow fewer than 20 tokens"
    for t in content:
        assert math.isfinite(t.logprob)
        assert all(math.isfinite(a.logprob) for a in t.top_logprobs)


def _completes_to_object(text):
    """Whether `text` is the start of a JSON object: some closing of its open string, literal,
    key and containers parses as a dict."""
    closers, in_str, esc = [], False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            closers.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not closers or closers.pop() != ch:
                return False
    base = text + ("\\" if esc else "") + ('"' if in_str else "")
    for lit in ["", "e", "ue", "rue", "se", "lse", "alse", "l", "ll", "ull", "0"]:
        for tail in ["", "null", ":null", '"":null', '":null']:
            for body in (base + lit + tail, base.rstrip().rstrip(",") + lit + tail):
                try:
                    if isinstance(json.loads(body + "".join(reversed(closers))), dict):
                        return True
                except ValueError:
                    pass
    return False


def test_json_object_output(client):
    # The small base model closes its object on some prompts and lists keys until max_tokens on
    # others, and which ones shift with any change in rounding. So: a finished answer must be a
    # whole object, and one cut off by max_tokens must be the start of one.
    for p in ["What is 2+2? Answer as a JSON object with one key.", "Describe a cat as a JSON object."]:
        c = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": p}],
            response_format={"type": "json_object"}, max_tokens=60, temperature=0)
        content, finish = c.choices[0].message.content, c.choices[0].finish_reason
        if finish == "stop":
            assert isinstance(json.loads(content), dict), f"{p!r}: {content!r}"
        else:
            assert finish == "length" and _completes_to_object(content), f"{p!r} ({finish}): {content!r}"
    # The checker itself: it must reject text that is not the start of an object.
    assert _completes_to_object('{"a": [1, tr') and _completes_to_object('{\n  "k')
    assert not _completes_to_object('{"a": 1}} x') and not _completes_to_object('[1, 2') and not _completes_to_object('Sure! {"a": 1')


def test_completions_json_schema(client):
    """vLLM accepts response_format on /v1/completions as well; so does modu."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    c = client.completions.create(
        model=MODEL_ID, prompt="The answer as JSON:", max_tokens=50, temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}})
    assert c.choices[0].finish_reason == "stop", c.choices[0].text
    jsonschema.validate(json.loads(c.choices[0].text), schema)


@pytest.mark.parametrize("fmt,param", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "no-such"}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "xml"}, "response_format"),
])
def test_bad_response_format_is_400(client, fmt, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=5, response_format=fmt)
    assert ei.value.param == param, ei.value.body
    assert ei.value.code is None or isinstance(ei.value.code, str)
    # and the server still answers
    assert client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=2).choices


# --------------------------------------------------------------------------------------- logprobs


def test_chat_logprobs_shape(client):
    c = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=3)
    ch = c.choices[0]
    assert ch.logprobs is not None and ch.logprobs.content is not None
    lp = ch.logprobs.content
    n = c.usage.completion_tokens
    assert (len(lp) == n) if ch.finish_reason == "length" else (n - 1 <= len(lp) <= n)
    for e in lp:
        assert isinstance(e.token, str) and e.logprob <= 1e-6 and math.isfinite(e.logprob)
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-3
        # greedy: the chosen token is the most likely one
        assert e.top_logprobs[0].token == e.token and abs(tops[0] - e.logprob) < 1e-3
        if e.bytes is not None:
            assert all(0 <= b <= 255 for b in e.bytes)
    if all(e.bytes is not None for e in lp) and ch.finish_reason == "length":
        assert b"".join(bytes(e.bytes) for e in lp).decode("utf-8", "replace") == ch.message.content

    plain = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


def test_completions_logprobs_shape(client):
    r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=6,
                                  temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) >= 1
    assert all(x <= 1e-6 for x in lp.token_logprobs)
    if lp.top_logprobs is not None:
        assert len(lp.top_logprobs) == len(lp.tokens)
        assert all(1 <= len(d) <= 4 for d in lp.top_logprobs)
    if lp.text_offset is not None:
        assert len(lp.text_offset) == len(lp.tokens)
        assert lp.text_offset == sorted(lp.text_offset)


# ----------------------------------------------------------------------------- errors -> SDK types


def test_error_400_bad_request(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL_ID, messages=USER, temperature=-1)
    e = ei.value
    assert e.status_code == 400 and e.type == "invalid_request_error" and e.param == "temperature"
    assert isinstance(e.body, dict) and e.body.get("message")


def test_error_401_authentication(secure_server):
    bad = secure_server.client(api_key="sk-wrong-key")
    with pytest.raises(openai.AuthenticationError) as ei:
        bad.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    assert ei.value.status_code == 401 and ei.value.type == "authentication_error"
    ok = secure_server.client().chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    assert ok.choices[0].message.role == "assistant"


def test_error_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="does-not-exist", messages=USER, max_tokens=2)
    e = ei.value
    assert (e.status_code, e.code, e.param, e.type) == \
        (404, "model_not_found", "model", "invalid_request_error")
    with pytest.raises(openai.NotFoundError) as ei:
        client.models.retrieve("does-not-exist")
    assert ei.value.code == "model_not_found"


def test_error_413_payload_too_large(client):
    big = "a" * (support.DEFAULT_MAX_BODY + 1024)
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": big}],
                                       max_tokens=2)
    e = ei.value
    assert e.status_code == 413
    assert isinstance(e.body, dict) and e.body.get("message") and e.type, e.body


def test_unknown_route_is_json_404(server):
    r = req(server, "GET", "/v1/no-such-endpoint")
    assert_openai_error(r, 404)


# ---------------------------------------------------------------------------------------- metrics

METRIC_TYPES = {
    "modu_requests_total": "counter",
    "modu_prompt_tokens_total": "counter",
    "modu_generated_tokens_total": "counter",
    "modu_queue_depth": "gauge",
    "modu_running_sequences": "gauge",
    "modu_ttft_seconds": "histogram",
    "modu_inter_token_seconds": "histogram",
}


def test_metrics_exposed(server, client):
    r = req(server, "GET", "/metrics")
    assert r.status == 200 and (r.header("content-type") or "").startswith("text/plain"), r
    before = support.parse_metrics(r.text())
    for name, kind in METRIC_TYPES.items():
        # a counter's TYPE line may name the family without the _total suffix (OpenMetrics)
        declared = before.types.get(name) or before.types.get(name.removesuffix("_total"))
        assert declared == kind, f"{name}: TYPE {declared!r}, want {kind}"
    for h in ("modu_ttft_seconds", "modu_inter_token_seconds"):
        for suffix in ("_bucket", "_sum", "_count"):
            assert before.has(h + suffix), h + suffix

    c = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=8, temperature=0)
    after = support.wait_idle(server, 5)
    d = lambda n: after.total(n) - before.total(n)  # noqa: E731
    assert d("modu_requests_total") >= 1
    assert d("modu_generated_tokens_total") == c.usage.completion_tokens
    assert 0 < d("modu_prompt_tokens_total") <= c.usage.prompt_tokens
    assert d("modu_ttft_seconds_count") == 1
    assert d("modu_inter_token_seconds_count") >= c.usage.completion_tokens - 2
    assert after.total("modu_running_sequences") == 0 and after.total("modu_queue_depth") == 0


def test_lora_adapter_is_served_beside_its_base(logs_dir):
    """`--adapter NAME=DIR`: the adapter is model BASE:NAME next to BASE; it answers with the
    adapted weights (as `modu run --adapter` does), BASE stays unadapted, and an unknown adapter
    name is a 404."""
    import subprocess
    fixtures = support.ROOT / "tests" / "fixtures"
    base, adapter = fixtures / "gemma3", fixtures / "gemma3" / "lora" / "adapter"
    argv = support.server_argv([f"tinyg={base}"], "--port", "0", "--parallel", "2", "--adapter", f"peft={adapter}")
    srv = support.ModuServer(argv, logs_dir, "lora", "tinyg")
    srv.start(60)
    try:
        c = srv.client()
        ids = sorted(m.id for m in c.models.list().data)
        assert ids == ["tinyg", "tinyg:peft"]
        outs = {}
        for m in ids:
            r = c.completions.create(model=m, prompt="item 1 is", max_tokens=6, temperature=0, logprobs=1)
            outs[m] = (r.choices[0].text, r.choices[0].logprobs.token_logprobs)
        assert outs["tinyg"] != outs["tinyg:peft"], "the adapter changed nothing"
        for m, flag in (("tinyg", []), ("tinyg:peft", ["--adapter", str(adapter)])):
            cli = subprocess.run([str(support.modu_bin()), "run", "-m", str(base), *flag, "--temp", "0", "-n", "6", "item 1 is"],
                                 capture_output=True, timeout=120)
            assert cli.returncode == 0, cli.stderr.decode()
            assert cli.stdout.decode().removesuffix("\n") == outs[m][0], (m, cli.stdout, outs[m][0])
        with pytest.raises(openai.NotFoundError):
            c.completions.create(model="tinyg:nope", prompt="x", max_tokens=1)
        c.close()
    finally:
        srv.stop()
    # An adapter that does not fit its base stops the server at start-up with a clear message.
    bad = support.ModuServer(support.server_argv([f"tinyg={base}"], "--port", "0", "--adapter",
                                                 f"x={fixtures / 'exaone4_hybrid'}"), logs_dir, "lora-bad", "tinyg")
    bad.spawn()
    assert bad.proc.wait(timeout=60) != 0
    assert "adapter_config.json" in bad.stderr_text()
