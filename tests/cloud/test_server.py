"""test_server.py - `tongyun serve` end to end on loopback, with the official `openai` client and raw sockets.

Run through test_server.sh, which sets TONGYUN (the CLI), TY_TEST_MODEL (the tiny random-weight Qwen3 fixture as
GGUF) and TY_TEST_WORK (a scratch folder). Random weights write gibberish, so behaviour that needs the model to
choose something (a tool call, a <think> block) is tested through the protocol (history the server must render) and
at the C level (tests/cloud/test_cloud_units.c); everything else runs for real.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import httpx
import openai
import pytest

TONGYUN = os.environ["TONGYUN"]
MODEL = os.environ["TY_TEST_MODEL"]
WORK = os.environ["TY_TEST_WORK"]
NAME = "qwen3-tiny"


class Server:
    """A `tongyun serve` process on a free port; its log goes to a file."""

    def __init__(self, *args, tag="srv", model=MODEL):
        self.log_path = os.path.join(WORK, f"{tag}-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "w")
        cmd = [TONGYUN, "serve", *(["-m", model] if model else []), "--name", NAME, "--port", "0", "--threads", "1",
               *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 30
        self.port = None
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {open(self.log_path).read()}")
            m = re.search(r'"event":"listening".*?"port":(\d+)', open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.05)
        assert self.port, open(self.log_path).read()
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def metrics(self):
        text = httpx.get(self.url + "/metrics").text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def metric(self, name):
        for k, v in self.metrics().items():
            if k.split("{")[0] == name:
                return v
        raise KeyError(name)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc

    def text_log(self):
        return open(self.log_path).read()


@pytest.fixture(scope="module")
def srv():
    s = Server("--max-seqs", "8", "--ctx", "1024", "--read-timeout", "2", "--max-body", "65536", tag="main")
    yield s
    assert s.stop() == 0  # a clean drain; under ASan also no leak (LeakSanitizer fails the exit status)


def chat(srv, content, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return srv.client().chat.completions.create(model=NAME, messages=[{"role": "user", "content": content}], **kw)


# ==== Chat, streamed and not ====


def test_chat_and_stream_agree(srv):
    r = chat(srv, "Hello there", max_tokens=10)
    assert r.object == "chat.completion" and r.model == NAME
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    stream = srv.client().chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Hello there"}], max_tokens=10, temperature=0,
        stream=True, stream_options={"include_usage": True})
    text, finish, usage, roles = "", None, None, 0
    chunks = list(stream)
    for ch in chunks:
        assert ch.object == "chat.completion.chunk" and ch.id == chunks[0].id
        if ch.usage:
            usage = ch.usage
            assert ch.choices == [] and ch is chunks[-1]
        for choice in ch.choices:
            if choice.delta.role:
                roles += 1
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert roles == 1
    assert text == c.message.content and finish == c.finish_reason
    assert usage.completion_tokens == r.usage.completion_tokens and usage.prompt_tokens == r.usage.prompt_tokens


def test_completions(srv):
    r = srv.client().completions.create(model=NAME, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and isinstance(r.choices[0].text, str)
    assert r.usage.completion_tokens <= 6
    s = "".join(c.choices[0].text for c in srv.client().completions.create(
        model=NAME, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert s == r.choices[0].text


# ==== Tools and reasoning through the protocol ====

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def detok(srv, tokens):
    return httpx.post(srv.url + "/detokenize", json={"tokens": tokens}).json()["prompt"]


def test_tool_round_trip(srv):
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny, 21C"},
    ]
    r = srv.client().chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # what the model was shown: the tool definitions, the call and its result in Qwen's format
    t = httpx.post(srv.url + "/tokenize", json={"messages": msgs, "tools": TOOLS}).json()
    prompt = detok(srv, t["tokens"])
    assert t["count"] == len(t["tokens"]) == r.usage.prompt_tokens
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\nsunny, 21C\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # tool_choice "none" renders no tools
    t2 = httpx.post(srv.url + "/v1/chat/completions", json={
        "model": NAME, "messages": msgs, "tools": TOOLS, "tool_choice": "none", "max_tokens": 2})
    assert t2.status_code == 200 and t2.json()["usage"]["prompt_tokens"] < t["count"]


def test_reasoning_switch_and_history(srv):
    on = httpx.post(srv.url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    off = httpx.post(srv.url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}],
                                                   "chat_template_kwargs": {"enable_thinking": False}}).json()
    assert detok(srv, off["tokens"]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not detok(srv, on["tokens"]).endswith("</think>\n\n")
    r = srv.client().chat.completions.create(
        model=NAME, max_tokens=4, temperature=0, extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        messages=[{"role": "user", "content": "a"},
                  {"role": "assistant", "content": "b", "reasoning_content": "thought"},
                  {"role": "user", "content": "c"}])
    assert r.usage.prompt_tokens == off["count"] + 8 or r.usage.prompt_tokens > off["count"]
    # thinking off: nothing is read as reasoning
    assert getattr(r.choices[0].message, "reasoning_content", None) in (None, "")


def test_json_schema_unsupported_keyword_refused_clearly(srv):
    # json_schema itself is served (see "Constrained decoding" below); a keyword it cannot enforce is a clear 400
    with pytest.raises(openai.BadRequestError) as e:
        chat(srv, "x", response_format={"type": "json_schema", "json_schema": {
            "name": "a", "schema": {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}}})
    assert "#/properties/d: 'format' is not supported" in str(e.value)


# ==== Sampling parameters ====


def test_stop_strings(srv):
    full = srv.client().completions.create(model=NAME, prompt="The sky", max_tokens=30, temperature=0)
    text = full.choices[0].text
    cands = [i for i, ch in enumerate(text) if ch.isascii() and ch.isalnum() and i >= 2]
    assert cands, f"no ASCII letter in {text!r}"
    stop = text[cands[0]]
    cut = srv.client().completions.create(model=NAME, prompt="The sky", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    # streamed: the stop string never leaks, even when it arrives split over tokens
    st = "".join(c.choices[0].text for c in srv.client().completions.create(
        model=NAME, prompt="The sky", max_tokens=30, temperature=0, stop=[stop], stream=True) if c.choices)
    assert st == cut.choices[0].text


def test_n_choices(srv):
    r = chat(srv, "pick", n=3, temperature=1.0, seed=11, max_tokens=8)
    assert [c.index for c in r.choices] == [0, 1, 2]
    again = chat(srv, "pick", n=3, temperature=1.0, seed=11, max_tokens=8)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    assert len({c.message.content for c in r.choices}) > 1  # each choice samples its own stream
    g = chat(srv, "pick", n=2, temperature=0, max_tokens=8)
    assert g.choices[0].message.content == g.choices[1].message.content
    assert 3 <= r.usage.completion_tokens <= 3 * 8


def test_logprobs(srv):
    r = chat(srv, "numbers", logprobs=True, top_logprobs=3, max_tokens=6)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    for e in lp:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert abs(e.logprob - tops[0]) < 1e-5  # greedy takes the most likely token
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token or "\ufffd" in e.token
    c = srv.client().completions.create(model=NAME, prompt="x", max_tokens=4, temperature=0, logprobs=2)
    l2 = c.choices[0].logprobs
    assert len(l2.tokens) == len(l2.token_logprobs) == len(l2.top_logprobs) == len(l2.text_offset)


# ==== Batching correctness ====


def stream_text(url, prompt, max_tokens):
    body = {"model": NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    out = ""
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for ch in json.loads(line[6:])["choices"]:
                    out += ch["delta"].get("content") or ""
    return out


def test_32_concurrent_greedy_streams_equal_alone(srv):
    prompts = [f"Story number {i}: " + "once " * (i * 7 % 40) for i in range(32)]
    alone = [stream_text(srv.url, p, 24) for p in prompts]
    together = [None] * 32

    def run(i):
        together[i] = stream_text(srv.url, prompts[i], 24)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    assert srv.metric("tongyun_prefix_cache_queries_total") > 0


def test_shared_prompt_kv_is_exact():
    """A repeated prompt starts after its cached blocks (the prefix cache is on by default: no --prefix-cache), and
    n > 1 choices share the prompt's KV (copy-on-write when they diverge): the greedy answers equal that of a lone
    request that computed everything itself. With --prefix-cache 0 nothing is reused after a request ends."""
    off = Server("--max-seqs", "4", "--ctx", "512", "--prefix-cache", "0", tag="prefix-off")
    try:
        prompt = "A prefix shared by several requests: " + "block " * 40 + "end"
        chat(off, prompt, max_tokens=4)
        chat(off, prompt, max_tokens=4)
        assert off.metric("tongyun_prefix_cache_hits_total") == 0
    finally:
        assert off.stop() == 0
    s = Server("--max-seqs", "4", "--ctx", "512", tag="prefix")
    try:
        prompt = "A prefix shared by several requests: " + "block " * 40 + "end"
        lone = chat(s, prompt, max_tokens=10).choices[0].message.content
        hits = s.metric("tongyun_prefix_cache_hits_total")
        again = chat(s, prompt, max_tokens=10)
        assert s.metric("tongyun_prefix_cache_hits_total") > hits
        assert again.choices[0].message.content == lone
        many = chat(s, prompt + "!", n=3, max_tokens=10)
        alone = chat(s, prompt + "!", max_tokens=10).choices[0].message.content
        assert [c.message.content for c in many.choices] == [alone] * 3
    finally:
        assert s.stop() == 0


def slow_model():
    """A one-layer model of Qwen3-0.6B's shape (its 151,936 x 1,024 output matrix): a few milliseconds a token, where
    the tiny fixture decodes its whole 256-token context in a few milliseconds."""
    slow = os.path.join(WORK, "qwen3-0.6b-1layer-q4_0.gguf")
    if not os.path.exists(slow):
        subprocess.run([TONGYUN, "mkmodel", "--preset", "qwen3-0.6b", "--type", "q4_0", "--layers", "1", slow],
                       check=True, capture_output=True)
    return slow


@pytest.fixture(scope="module")
def slow_srv():
    s = Server("--max-seqs", "4", "--ctx", "1024", tag="slow", model=slow_model())
    yield s
    assert s.stop() == 0


@pytest.mark.parametrize("stream", [True, False])
def test_cancellation_frees_kv(slow_srv, stream):
    srv = slow_srv
    before = srv.metric("tongyun_requests_cancelled_total")
    # 900 tokens of the slow model take seconds, far longer than the moment until the hang-up below, so the request
    # is cut short (the tiny fixture could finish first: its context holds 196 more tokens, a few milliseconds)
    body = {"model": NAME, "prompt": "long " * 20, "max_tokens": 900, "temperature": 0, "stream": stream}
    s = socket.create_connection(("127.0.0.1", srv.port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(data)).encode() + b"\r\n\r\n" + data)
    if stream:
        assert b"200" in s.recv(4096)
    else:
        deadline = time.time() + 10
        while srv.metric("tongyun_num_requests_running") == 0 and time.time() < deadline:
            time.sleep(0.005)
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        m = srv.metrics()
        used = [v for k, v in m.items() if k.startswith("tongyun_kv_blocks_used")][0]
        running = [v for k, v in m.items() if k.startswith("tongyun_num_requests_running")][0]
        if used == 0 and running == 0:
            break
        time.sleep(0.05)
    assert used == 0 and running == 0
    assert srv.metric("tongyun_requests_cancelled_total") == before + 1
    assert '"status":499' in srv.text_log()
    assert srv.metric("tongyun_kv_blocks_free") == srv.metric("tongyun_kv_blocks_total")


# ==== Malformed input ====


def raw(port, payload, read=True, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(payload)
    out = b""
    if read:
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
                if b"\r\n\r\n" in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    m = re.search(rb"Content-Length: (\d+)", head, re.I)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except socket.timeout:
            pass
    s.close()
    return out


def post(srv, path, body, headers=None):
    return httpx.post(srv.url + path, content=body, headers={"Content-Type": "application/json", **(headers or {})})


BAD = [
    ("bad json", b'{"messages": [', 400),
    ("not an object", b"[1, 2]", 400),
    ("empty body", b"", 400),
    ("messages wrong type", b'{"messages": "hi"}', 400),
    ("unknown role", b'{"messages": [{"role": "wizard", "content": "x"}]}', 400),
    ("negative max_tokens", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', 400),
    ("huge max_tokens", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000000000}', 400),
    ("max_tokens string", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "7"}', 400),
    ("temperature range", b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}', 400),
    ("n zero", b'{"messages": [{"role": "user", "content": "x"}], "n": 0}', 400),
    ("top_logprobs without logprobs", b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}', 400),
    ("invalid utf-8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
    ("nul escape", b'{"messages": [{"role": "user", "content": "a\\u0000"}]}', 400),
    ("unknown model", b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404),
    ("unknown field", b'{"messages": [{"role": "user", "content": "x"}], "frobnicate": 1}', 400),
    ("deep nesting", b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
]


@pytest.mark.parametrize("name,body,status", BAD, ids=[b[0] for b in BAD])
def test_malformed(srv, name, body, status):
    r = post(srv, "/v1/chat/completions", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    assert httpx.get(srv.url + "/health").status_code == 200


def test_context_overflow_states_counts(srv):
    r = post(srv, "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 5}).encode())
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "1024" in msg and re.search(r"\d+ in the messages", msg)
    r2 = post(srv, "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1020}).encode())
    assert r2.status_code == 400 and "1020 in the completion" in r2.json()["error"]["message"]


def test_huge_body_and_bad_routes(srv):
    r = post(srv, "/v1/chat/completions", b'{"x": "' + b"a" * 200000 + b'"}')
    assert r.status_code == 413
    assert httpx.get(srv.url + "/v1/nothing").status_code == 404
    assert httpx.get(srv.url + "/v1/chat/completions").status_code == 405
    assert httpx.get(srv.url + "/health").status_code == 200


def test_slow_sender_is_cut_off(srv):
    # headers trickled in slower than --read-timeout (2 s) in total: the server closes the connection
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    t0 = time.time()
    closed = False
    try:
        for ch in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n":
            s.sendall(bytes([ch]))
            time.sleep(0.1)  # each byte well inside the per-read timeout
            if time.time() - t0 > 8:
                break
        s.settimeout(5)
        closed = s.recv(100) in (b"",) or True
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    assert closed and time.time() - t0 < 8
    s.close()
    assert httpx.get(srv.url + "/health").status_code == 200
    # many idle connections do not stop others being served
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(50)]
    assert chat(srv, "still here", max_tokens=2).choices
    for c in idle:
        c.close()


def test_connection_cap():
    """At --max-conns open connections the server stops accepting: one more client waits (here: times out) until a
    connection closes, and the held connections are served meanwhile."""
    s = Server("--max-conns", "2", "--read-timeout", "20", tag="cap")
    try:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(2)]
        time.sleep(0.3)  # the server has accepted both
        with pytest.raises(httpx.TimeoutException):
            httpx.get(s.url + "/health", timeout=1.0)
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in held[0].recv(4096)
        held[1].close()
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
        held[0].close()
    finally:
        assert s.stop() == 0


def test_keep_alive(srv):
    with httpx.Client() as c:
        for _ in range(3):
            assert c.get(srv.url + "/health").status_code == 200
        r = c.post(srv.url + "/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert r.status_code == 200 and r.headers.get("connection", "keep-alive").lower() != "close"


# ==== Keys, limits and the ledger ====


def make_key(keys, name, *limits):
    out = subprocess.run([TONGYUN, "keys", "create", "--file", keys, "--name", name, *limits],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def usage_rows(db):
    out = subprocess.run([TONGYUN, "usage", "--db", db, "--json"], capture_output=True, text=True, check=True)
    return {json.loads(l)["key"]: json.loads(l) for l in out.stdout.splitlines()}


def test_auth_limits_and_ledger(tmp_path):
    keys, db = str(tmp_path / "keys.tsv"), str(tmp_path / "usage.db")
    k1 = make_key(keys, "alice", "--rpm", "3")
    k2 = make_key(keys, "bob")
    assert k1.startswith("sk-ty-") and k1 not in open(keys).read()
    listing = subprocess.run([TONGYUN, "keys", "list", "--file", keys], capture_output=True, text=True).stdout
    assert "alice" in listing and "bob" in listing and k1 not in listing

    s = Server("--api-keys", keys, "--db", db, tag="auth")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client("sk-ty-wrong").completions.create(model=NAME, prompt="x", max_tokens=2)
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        for _ in range(3):
            s.client(k1).completions.create(model=NAME, prompt="x", max_tokens=2)
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2},
                       headers={"Authorization": f"Bearer {k1}"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        s.client(k2).completions.create(model=NAME, prompt="x", max_tokens=2)
        assert s.stop() == 0  # SIGTERM: drained and flushed
    finally:
        s.stop(signal.SIGKILL)
    rows = usage_rows(db)
    assert rows["alice"]["requests"] == 4 and rows["alice"]["errors"] == 1
    assert rows["alice"]["completion_tokens"] > 0 and rows["bob"]["requests"] == 1

    # revoked keys stop working; usage survives a restart and kill -9
    subprocess.run([TONGYUN, "keys", "revoke", "--file", keys, "bob"], check=True, capture_output=True)
    s = Server("--api-keys", keys, "--db", db, tag="auth2")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client(k2).completions.create(model=NAME, prompt="x", max_tokens=2)
        rl = s.client(k1)
        with pytest.raises(openai.RateLimitError):  # the bucket is per process: a fresh one allows 3, then refuses
            for _ in range(4):
                rl.completions.create(model=NAME, prompt="x", max_tokens=2)
    finally:
        s.stop(signal.SIGKILL)
    rows = usage_rows(db)
    assert rows["alice"]["requests"] == 8 and rows["alice"]["errors"] == 2


# ==== SIGTERM drain ====


def test_sigterm_drains(tmp_path):
    s = Server("--max-seqs", "2", tag="drain")
    results = [None] * 6
    started = threading.Barrier(7)

    def run(i):
        body = {"model": NAME, "prompt": f"drain {i}", "max_tokens": 200, "temperature": 0, "stream": True}
        done, n = False, 0
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            started.wait()
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    n += 1
        results[i] = (r.status_code, done, n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    started.wait()  # every request was accepted (response headers received)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert s.proc.wait(timeout=30) == 0
    assert re.search(r'"event":"draining","signal":"SIGTERM","in_flight":\d+', s.text_log())
    assert '"event":"stopped","in_flight":0' in s.text_log()
    assert all(r == (200, True, r[2]) and r[2] > 1 for r in results), results
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health")
    s.log.close()


# ==== Constrained decoding: response_format, tool_choice, logit_bias (helper "json") ====
# The fixture's random weights would write anything; under a constraint whatever they pick must still parse and
# validate. Schemas here bound every string, so the output completes within max_tokens.

import jsonschema  # noqa: E402  (pinned in test_server.sh)

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    "ok": {"type": "boolean"},
    "pet": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"kind": {"const": "cat"}},
                                           "required": ["kind"], "additionalProperties": False}]}},
    "required": ["name", "age", "ok", "pet"], "additionalProperties": False}
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


def token_id(srv, text):
    ids = httpx.post(srv.url + "/tokenize", json={"prompt": text}).json()["tokens"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_validates(srv, seed):
    r = chat(srv, "Describe a person as JSON.", max_tokens=400, temperature=1.0, seed=seed,
             response_format=schema_format(PERSON), extra_body=NO_THINK)
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    jsonschema.validate(json.loads(c.message.content), PERSON)
    # streamed, the same request gives the same text
    stream = srv.client().chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=400,
        temperature=1.0, seed=seed, response_format=schema_format(PERSON), extra_body=NO_THINK, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == c.message.content


def test_json_schema_each_choice_validates(srv):
    r = chat(srv, "People as JSON.", n=3, max_tokens=400, temperature=1.0, seed=21,
             response_format=schema_format(PERSON), extra_body=NO_THINK)
    assert len(r.choices) == 3 and len({c.message.content for c in r.choices}) > 1
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        jsonschema.validate(json.loads(c.message.content), PERSON)


def test_json_object_output_parses(srv):
    close = token_id(srv, "}")
    for stream in (False, True):
        # a nudge towards "}" so the random model closes what it opens within max_tokens
        kw = dict(model=NAME, messages=[{"role": "user", "content": "JSON please"}], max_tokens=120, temperature=0.7,
                  seed=5, response_format={"type": "json_object"}, logit_bias={str(close): 4},
                  extra_body=NO_THINK)
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in srv.client().chat.completions.create(
                stream=True, **kw) if ch.choices)
        else:
            r = srv.client().chat.completions.create(**kw)
            assert r.choices[0].finish_reason == "stop"
            text = r.choices[0].message.content
        assert isinstance(json.loads(text), dict), text


def test_json_schema_after_reasoning(srv):
    # thinking on: the reasoning is free text and the constraint starts after </think> (forced here with logit_bias,
    # which the random model would not write by itself)
    think_end = token_id(srv, "</think>")
    r = chat(srv, "Think, then answer in JSON.", max_tokens=400, seed=9, temperature=1.0,
             response_format=schema_format(PERSON), logit_bias={str(think_end): 100})
    c = r.choices[0]
    assert c.finish_reason == "stop"
    assert getattr(c.message, "reasoning_content", None) in (None, "")
    jsonschema.validate(json.loads(c.message.content), PERSON)


BOUNDED_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer"}},
        "required": ["unit", "days"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"utc": {"type": "boolean"}}, "required": ["utc"]}}},
]


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_tool_choice_forces_a_call(srv, choice):
    tc = choice if choice == "required" else {"type": "function", "function": {"name": choice}}
    msgs = [{"role": "user", "content": "What now?"}]
    r = srv.client().chat.completions.create(model=NAME, messages=msgs, tools=BOUNDED_TOOLS, tool_choice=tc,
                                             max_tokens=100, temperature=0, extra_body=NO_THINK)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    names = {t["function"]["name"]: t["function"]["parameters"] for t in BOUNDED_TOOLS}
    assert call.function.name in names and (choice == "required" or call.function.name == choice)
    jsonschema.validate(json.loads(call.function.arguments), names[call.function.name])
    # streamed: the call arrives as tool_calls deltas that add up to the same call
    stream = srv.client().chat.completions.create(model=NAME, messages=msgs, tools=BOUNDED_TOOLS, tool_choice=tc,
                                                  max_tokens=100, temperature=0, extra_body=NO_THINK, stream=True)
    name, args, finish = "", "", None
    for ch in stream:
        for d in ch.choices:
            for t in d.delta.tool_calls or []:
                name += t.function.name or ""
                args += t.function.arguments or ""
            finish = d.finish_reason or finish
    assert (name, json.loads(args), finish) == (call.function.name, json.loads(call.function.arguments), "tool_calls")


def test_logit_bias_forces_and_bans(srv):
    x = token_id(srv, "Q")
    r = srv.client().completions.create(model=NAME, prompt="Fruit:", max_tokens=4, temperature=0,
                                        logit_bias={str(x): 100})
    assert r.choices[0].text == "Q" * 4
    first = srv.client().completions.create(model=NAME, prompt="Fruit:", max_tokens=1, temperature=0).choices[0].text
    banned = token_id(srv, first)
    again = srv.client().completions.create(model=NAME, prompt="Fruit:", max_tokens=1, temperature=0,
                                            logit_bias={str(banned): -100})
    assert again.choices[0].text != first


BAD_CONSTRAINTS = [
    ("bias value", {"logit_bias": {"5": 101}}, "logit_bias"),
    ("bias key", {"logit_bias": {"five": 1}}, "logit_bias"),
    ("bias id past vocab", {"logit_bias": {"99999999": 1}}, "logit_bias"),
    ("format type", {"response_format": {"type": "xml"}}, "response_format"),
    ("schema not object", {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}},
     "response_format"),
    ("schema name", {"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}},
     "response_format"),
    ("pattern", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "a", "schema": {"type": "string", "pattern": "x"}}}}, "response_format"),
    ("overlapping oneOf", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "a", "schema": {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}}}}, "response_format"),
    ("unknown tool", {"tools": BOUNDED_TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ("required without tools", {"tool_choice": "required"}, "tool_choice"),
]


@pytest.mark.parametrize("name,extra,param", BAD_CONSTRAINTS, ids=[b[0] for b in BAD_CONSTRAINTS])
def test_constraint_errors_are_400(srv, name, extra, param):
    body = {"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, **extra}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]


# ==== Keep-alive of a waiting stream ====


def test_waiting_stream_is_kept_alive():
    """A streamed request queued behind another for longer than --io-timeout gets SSE comments meanwhile, so the
    socket stays alive and the stream completes. The slow model makes the first request take seconds."""
    s = Server("--max-seqs", "1", "--ctx", "1024", "--io-timeout", "1", tag="keepalive", model=slow_model())
    try:
        body = {"model": NAME, "stream": True, "max_tokens": 400, "temperature": 0,
                "messages": [{"role": "user", "content": "Tell me a long story."}]}
        results = {}

        def run(i):
            t0 = time.monotonic()
            with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=300) as r:
                text = r.read().decode()
                results[i] = (r.status_code, text, time.monotonic() - t0)

        first = threading.Thread(target=run, args=(1,))
        first.start()
        time.sleep(0.3)
        run(2)
        first.join()
        for i in (1, 2):
            status, text, _ = results[i]
            assert status == 200 and text.rstrip().endswith("data: [DONE]"), text[-300:]
        waited = results[2][2] - results[1][2] / 2
        assert results[2][2] > 1.0, f"the queued stream finished in {results[2][2]:.2f} s: nothing was tested"
        assert ": keep-alive" in results[2][1], f"no keep-alive comment in a stream that waited ~{waited:.1f} s"
    finally:
        assert s.stop() == 0


# ==== The bundled model ====


def test_bundled_model_is_served_without_m():
    """Without -m the server loads the bundled Tongyun-Mini (built from data/tongyun-mini/) and answers a definition
    question in its trained dictionary format."""
    env_model = os.environ.pop("TONGYUN_MODEL", None)
    try:
        s = Server("--ctx", "256", tag="mini", model=None)
    finally:
        if env_model is not None:
            os.environ["TONGYUN_MODEL"] = env_model
    try:
        assert "bundled Tongyun-Mini" in s.text_log()
        r = s.client().chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": 'What does "water" mean?'}], max_tokens=48,
            temperature=0, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        text = r.choices[0].message.content
        assert re.match(r"[A-Z][^:]*( \((noun|verb|adjective|adverb)\): | has [0-9] common meanings:)", text), text
    finally:
        assert s.stop() == 0
