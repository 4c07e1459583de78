"""`adapterkit serve` as a real uvicorn process on 127.0.0.1, spoken to with a real HTTP client: every endpoint, each
class of bad request, concurrent mixed-adapter requests checked against `predict`, the admin endpoints and the API
key, the bind check, and SIGTERM with requests in flight."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import cli, cli_start, wait_for

pytestmark = pytest.mark.slow  # the runs these serve are trained once per session


def as_json(rows):
    return json.loads(json.dumps(rows))  # tuples become lists, as they do over HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, method: str = "GET", body=None, key: str | None = None, raw: bytes | None = None):
    """(status, parsed JSON or text) of one HTTP request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def start(*argv, port: int):
    proc = cli_start("serve", *argv, "--port", port, stdout=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return call(url + "/health")[0] == 200
        except OSError:
            return False

    wait_for(proc, up, "the server answering /health", timeout=120)
    return proc, url


def stop(proc) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def server(base_runs):
    proc, url = start(base_runs["lora0"], base_runs["lora1"], base_runs["bottleneck0"], base_runs["ia3"],
                      base_runs["ner"], "--max-wait-ms", "20", port=free_port())
    yield url
    code, _, err = stop(proc)
    assert code == 0, err


def test_health_models_predict_and_metrics(server, base_runs):
    from adapterkit.inference import predict

    assert call(server + "/health") == (200, {"status": "ok", "adapters": 5})
    status, models = call(server + "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["lora0", "lora1", "bottleneck0", "ia3", "ner"]
    assert {m["task"] for m in models["data"]} == {"sequence_classification", "token_classification"}
    texts = ["a good thing", "bad bad awful"]
    status, body = call(server + "/v1/predict", "POST", {"adapter": "ia3", "texts": texts})
    assert status == 200 and body == {"adapter": "ia3", "predictions": as_json(predict(base_runs["ia3"], texts))}
    status, body = call(server + "/v1/predict", "POST", {"adapter": "ner", "texts": ["John went to Paris"]})
    assert status == 200 and body["predictions"] == as_json(predict(base_runs["ner"], ["John went to Paris"]))
    assert set(body["predictions"][0]) == {"text", "tags", "entities"}
    status, text = call(server + "/metrics")
    assert status == 200
    assert 'adapterkit_requests_total{adapter="ia3",endpoint="/v1/predict",status="200"}' in text
    assert 'adapterkit_request_seconds_bucket{adapter="ia3",endpoint="/v1/predict",le=' in text
    assert 'adapterkit_batch_size_count{adapter="ia3",kind="predict"}' in text and "adapterkit_adapters_loaded 5.0" in text


@pytest.mark.parametrize("method,path,body,raw,status,says", [
    ("POST", "/v1/predict", {"adapter": "nope", "texts": ["x"]}, None, 404, "no adapter named 'nope'"),
    ("POST", "/v1/predict", None, b'{"adapter": "lora0", "texts": [', 400, "not JSON"),
    ("POST", "/v1/predict", None, b'["lora0"]', 400, "JSON object"),
    ("POST", "/v1/predict", {"adapter": "lora0", "texts": ["x"] * 65}, None, 413, "at most 64"),
    ("POST", "/v1/predict", {"adapter": "lora0", "texts": ["x" * 20_001]}, None, 422, "at most 20000"),
    ("POST", "/v1/predict", {"adapter": "lora0"}, None, 422, "texts: Field required"),
    ("POST", "/v1/predict", {"adapter": "lora0", "texts": "x"}, None, 422, "texts"),
    ("GET", "/v1/predict", None, None, 405, "GET is not allowed"),
    ("GET", "/v1/nothing", None, None, 404, "no endpoint"),
    ("POST", "/v1/completions", {"model": "lora0", "prompt": "x"}, None, 400, "no completions"),
    ("POST", "/v1/adapters", {"path": "/anywhere"}, None, 403, "--allow-admin"),
    ("DELETE", "/v1/adapters/lora0", None, None, 403, "--allow-admin"),
])
def test_bad_requests_get_a_4xx_and_one_json_line(server, method, path, body, raw, status, says):
    got, answer = call(server + path, method, body, raw=raw)
    assert got == status, answer
    assert isinstance(answer, dict) and list(answer) == ["error"] and says in answer["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000000\r\n\r\n")
        answer = b""
        while b"}" not in answer:  # headers and body may come in separate packets
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413") and '{"error":"request body over 4194304 bytes"}' in answer


def test_concurrent_mixed_requests_each_equal_predict_of_their_run(server, base_runs):
    import random

    from adapterkit.inference import predict

    names = ["lora0", "lora1", "bottleneck0", "ia3"]
    texts = ["a good thing", "bad bad awful", "fine", "what a lovely day", "broken again"]
    alone = {n: dict(zip(texts, predict(base_runs[n], texts))) for n in names}
    rnd = random.Random(1)
    asks = [(rnd.choice(names), rnd.sample(texts, rnd.randint(1, 3))) for _ in range(48)]
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda a: call(server + "/v1/predict", "POST", {"adapter": a[0], "texts": a[1]}), asks))
    for (name, sent), (status, body) in zip(asks, answers):
        assert status == 200 and body["predictions"] == [alone[name][t] for t in sent]
    text = call(server + "/metrics")[1]
    batches = [l for l in text.splitlines() if l.startswith('adapterkit_batch_size_sum{adapter="",kind="predict"}')]
    counts = [l for l in text.splitlines() if l.startswith('adapterkit_batch_size_count{adapter="",kind="predict"}')]
    assert float(batches[0].split()[-1]) / float(counts[0].split()[-1]) > 1.5  # requests were batched together


def test_admin_api_key_and_openai_completions(lm_runs, tmp_path):
    from adapterkit.inference import generate

    proc, url = start(lm_runs["lm1"], "--allow-admin", "--api-key", "s3cret", port=free_port())
    try:
        assert call(url + "/health")[0] == 200  # health needs no key: load balancers probe it
        assert call(url + "/v1/models") == (401, {"error": "missing or wrong API key (Authorization: Bearer KEY)"})
        assert call(url + "/v1/models", key="wrong")[0] == 401
        status, body = call(url + "/v1/adapters", "POST", {"path": str(lm_runs["lm2"])}, key="s3cret")
        assert status == 201 and body == {"loaded": "lm2", "adapters": ["lm1", "lm2"]}
        prompt = "what color is item 1 ?"
        for name in ("lm1", "lm2"):
            status, body = call(url + "/v1/completions", "POST", {"model": name, "prompt": [prompt]}, key="s3cret")
            assert status == 200 and body["object"] == "text_completion" and body["model"] == name
            assert body["choices"][0]["text"] == generate(lm_runs[name], [prompt])[0]["completion"]
            assert body["usage"]["prompt_tokens"] > 0
        chat = {"model": "lm2", "messages": [{"role": "user", "content": prompt}]}
        status, body = call(url + "/v1/chat/completions", "POST", chat, key="s3cret")
        assert status == 200 and body["object"] == "chat.completion"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": generate(lm_runs["lm2"], [prompt])[0]["completion"]}
        assert call(url + "/v1/chat/completions", "POST", {**chat, "stream": True}, key="s3cret")[0] == 400
        assert call(url + "/v1/adapters/lm1", "DELETE", key="s3cret") == (200, {"unloaded": "lm1", "adapters": ["lm2"]})
        assert call(url + "/v1/completions", "POST", {"model": "lm1", "prompt": "x"}, key="s3cret")[0] == 404
        status, body = call(url + "/v1/adapters", "POST", {"path": str(tmp_path)}, key="s3cret")
        assert status == 400 and "not a finished adapterkit run" in body["error"]
    finally:
        code, _, err = stop(proc)
    assert code == 0, err


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(base_runs):
    from adapterkit.inference import predict

    proc, url = start(base_runs["lora0"], "--max-wait-ms", "800", port=free_port())
    results = []

    def ask(i):
        results.append(call(url + "/v1/predict", "POST", {"adapter": "lora0", "texts": [f"text {i}"]}))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the requests wait in the batcher (800 ms) when the signal comes
    code, out, err = stop(proc)
    for t in threads:
        t.join()
    assert code == 0, err
    assert sorted(r[1]["predictions"][0]["text"] for r in results) == [f"text {i}" for i in range(6)]
    assert all(r[0] == 200 for r in results)
    assert [r[1]["predictions"][0] for r in results[:1]] == predict(base_runs["lora0"], [results[0][1]["predictions"][0]["text"]])
    assert "every request in flight was answered" in out
    with pytest.raises(OSError):
        call(url + "/health")


def test_a_non_loopback_address_needs_an_api_key(base_runs, no_model, monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_API_KEY", raising=False)
    res = cli("serve", base_runs["lora0"], "--host", "0.0.0.0")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "--host 0.0.0.0: not a loopback address" in res.err and "--api-key" in res.err
