"""``seq2seq serve``: answers equal the Python API's, concurrent requests are batched, every
bad request is a 4xx JSON error naming the field, SIGTERM finishes what is in flight, and the
web page works in a real browser.

Three tiny trained runs (a translator with attention, a classifier, a character language
model) are served by one server on a free loopback port for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
import yaml

from seq2seq import Classifier, Generator, Translator
from seq2seq.serving.app import create_app
from seq2seq.serving.batching import Batcher, Job
from seq2seq.serving.models import load_model
from seq2seq.serving.schemas import Limits

from .cli_helpers import assert_user_error, run_cli
from .test_classification import sentiment_rows, tiny_raw, write_tsv
from .test_cli_translation import tiny_config
from .test_language_model import PANGRAM, conditioned_config, stream_config, write_conditioned

ROOT = Path(__file__).resolve().parents[1]
LIMITS = Limits(max_texts=8, max_chars=100, max_tokens=120, max_body_bytes=4000, max_beam_size=6,
                max_samples=3)


def train_cli(config: Path, run: Path, *overrides: str) -> Path:
    sets = [a for o in overrides for a in ("--set", o)]
    result = run_cli("train", config, "--run-dir", run, "-q", *sets)
    assert result.exit_code == 0, result.output
    return run


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"digits": translator, "sentiment": classifier, "pangram": language model}."""
    directory = tmp_path_factory.mktemp("serve")
    digits = train_cli(tiny_config(directory), directory / "digits", "training.max_steps=80",
                       "training.validate_every=80", "training.learning_rate=0.01",
                       "decoding.length_penalty=0.6")  # not the page's HTML default: it must load it
    train = write_tsv(directory / "sst.tsv", sentiment_rows(300, 0))
    dev = write_tsv(directory / "sst_dev.tsv", sentiment_rows(40, 1))
    raw = tiny_raw(train, dev, max_steps=30, validate_every=30)
    sentiment = train_cli(write_yaml(directory / "sst.yaml", {"name": "sst", **raw}),
                          directory / "sentiment")
    (directory / "pangram.txt").write_text(PANGRAM * 60, encoding="utf-8")
    lm = stream_config(directory / "pangram.txt", steps=40)
    pangram = train_cli(write_yaml(directory / "lm.yaml", {"name": "lm", **lm}), directory / "pangram")
    return {"digits": digits, "sentiment": sentiment, "pangram": pangram}


class ServerThread:
    """An app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        sock = socket.socket()
        # inherited by the accepted connections: without it a response written in two parts
        # waits ~40 ms for the client's delayed ACK (uvicorn sets it only on sockets it binds)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def models(runs):
    # two workers, as `seq2seq serve` runs on 2 cores: batches may run at once
    return {name: load_model(name, path, LIMITS, "cpu", budget=4096, max_wait=0.002, workers=2)
            for name, path in runs.items()}


@pytest.fixture(scope="module")
def server(models):
    running = ServerThread(create_app(models, LIMITS))
    yield running
    running.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as session:
        yield session


def post(client: httpx.Client, path: str, body) -> httpx.Response:
    return client.post(path, json=body)


def recording(batcher: Batcher, monkeypatch) -> list[tuple[object, list]]:
    """Record every call the batcher makes: (key, inputs)."""
    calls = []
    run = batcher.run

    def recorded(key, inputs):
        calls.append((key, list(inputs)))
        return run(key, inputs)

    monkeypatch.setattr(batcher, "run", recorded)
    return calls


def concurrently(client: httpx.Client, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Send the requests at once (a barrier releases every thread together)."""
    barrier = threading.Barrier(len(requests))

    def send(request):
        barrier.wait()
        return client.post(request[0], json=request[1])

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


# ---- the happy path --------------------------------------------------------------------

def test_health_and_models_describe_every_run(client, models):
    assert client.get("/healthz").json() == {"status": "ok", "models": list(models)}
    described = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert {name: m["head"] for name, m in described.items()} == {
        "digits": "translation", "sentiment": "classification", "pangram": "language_model"}
    for name, served in models.items():
        assert described[name]["parameters"] == sum(
            p.numel() for p in served.inference.model.parameters())
    assert described["sentiment"]["labels"] == ["neg", "pos"]
    assert described["digits"]["attention"] is True
    assert described["digits"]["training"]["metric"] == "bleu"
    assert described["digits"]["training"]["steps"] == 80
    assert described["pangram"]["defaults"]["max_tokens"] <= LIMITS.max_tokens


def test_translate_equals_the_python_api(client, runs):
    translator = Translator.from_pretrained(runs["digits"], device="cpu")
    texts = ["1 2 3", "", "9 8 7 6"]
    answer = post(client, "/v1/translate", {"model": "digits", "texts": texts, "beam_size": 3,
                                            "n_best": 3, "length_penalty": 0.5,
                                            "attention": True})
    assert answer.status_code == 200, answer.text
    expected = translator.translate_n_best(texts, beam_size=3, n_best=3, length_penalty=0.5)
    got = answer.json()["translations"]
    for row, hyps in zip(got, expected):
        assert row["n_best"] == [{"text": h.text, "score": h.score, "log_prob": h.log_prob}
                                 for h in hyps]
        assert (row["text"], row["score"]) == (hyps[0].text, hyps[0].score)
    assert got[0]["text"]  # the tiny model writes something
    source, target, weights = translator.attention(texts[0], got[0]["text"])
    attention = got[0]["attention"]
    assert (attention["source"], attention["target"]) == (source, target)
    assert attention["weights"] == [[round(float(w), 4) for w in row] for row in weights]
    assert got[1]["attention"] is None  # an empty text has nothing to attend to


def test_concurrent_translations_are_batched_and_equal_the_python_api(client, models, runs,
                                                                      monkeypatch):
    """Requests arriving together are answered by few batched searches; each batch's
    answers are exactly those of one Translator call over its texts, and each request's
    translations are those of translating it alone."""
    batcher = models["digits"].batcher
    monkeypatch.setattr(batcher, "max_wait", 0.5)
    calls = recording(batcher, monkeypatch)
    before = batcher.requests
    texts = [["1 2 3"], ["4 5", "6"], ["7 7 8 9"], ["0"], ["3 1 4 1 5"], ["2 6"], ["5 3"], ["8"]]
    requests = [("/v1/translate", {"texts": t, "beam_size": 2 + i % 2, "n_best": 2})
                for i, t in enumerate(texts)]
    answers = concurrently(client, requests)
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert batcher.requests - before == len(texts)
    assert len(calls) < len(texts)  # gathered: fewer searches than requests
    assert {key[1] for key, _ in calls} == {2, 3}  # beam sizes never share a search
    translator = Translator.from_pretrained(runs["digits"], device="cpu")
    served = {text: row for t, a in zip(texts, answers)  # every text is in one request only
              for text, row in zip(t, a.json()["translations"])}
    for key, batch_texts in calls:
        direct = translator.translate_n_best(batch_texts, beam_size=key[1], n_best=key[2])
        assert [served[text]["n_best"] for text in batch_texts] == [
            [{"text": h.text, "score": h.score, "log_prob": h.log_prob} for h in hyps]
            for hyps in direct]
    for (_, body), answer in zip(requests, answers):
        alone = translator.translate_n_best(body["texts"], beam_size=body["beam_size"], n_best=2)
        for row, hyps in zip(answer.json()["translations"], alone):
            assert [h["text"] for h in row["n_best"]] == [h.text for h in hyps]
            # scores: the same up to float32 rounding (padding changes the order of sums)
            assert [h["score"] for h in row["n_best"]] == pytest.approx(
                [h.score for h in hyps], abs=1e-5)


def test_concurrent_classifications_are_batched_and_equal_the_python_api(client, models, runs,
                                                                         monkeypatch):
    batcher = models["sentiment"].batcher
    monkeypatch.setattr(batcher, "max_wait", 0.5)
    calls = recording(batcher, monkeypatch)
    texts = [["w1 good w2"], ["w3 not good", "bad"], ["w4 awful w5 w6"], ["great"],
             ["not bad w7"], ["w8"]]
    answers = concurrently(client, [("/v1/classify", {"texts": t, "top_k": 1 + i % 2})
                                    for i, t in enumerate(texts)])
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert len(calls) < len(texts)
    classifier = Classifier.from_pretrained(runs["sentiment"], device="cpu")
    by_text = {}
    for _, batch_texts in calls:
        for text, found in zip(batch_texts, classifier.predict(batch_texts, top_k=2)):
            by_text[text] = found
    for i, (t, answer) in enumerate(zip(texts, answers)):
        for text, row in zip(t, answer.json()["predictions"]):
            expected = by_text[text]
            assert row["label"] == expected.label and row["probability"] == expected.probability
            assert row["top"] == [{"label": label, "probability": p}
                                  for label, p in expected.top[: 1 + i % 2]]
            alone = classifier.predict([text], top_k=2)[0]
            assert row["label"] == alone.label
            assert row["probability"] == pytest.approx(alone.probability, abs=1e-6)


def test_generate_equals_the_python_api(client, runs):
    generator = Generator.from_pretrained(runs["pangram"], device="cpu")
    for options in [{"seed": 7, "temperature": 0.8, "top_p": 0.9, "max_tokens": 40},
                    {"greedy": True, "max_tokens": 25}, {"seed": 3, "top_k": 2, "num_samples": 2,
                                                         "max_tokens": 10},
                    {"seed": 1, "temperature": 1e-300, "max_tokens": 10}]:  # greedy in effect
        answer = post(client, "/v1/generate", {"prompt": "pack my", **options})
        assert answer.status_code == 200, answer.text
        expected = generator.generate("pack my", **options)
        assert answer.json()["samples"] == [
            {"text": g.text, "continuation": g.continuation, "tokens": g.tokens,
             "finished": g.finished, "log_prob": g.log_prob, "seed": g.seed} for g in expected]
    fresh = post(client, "/v1/generate", {"max_tokens": 5}).json()["samples"][0]
    assert isinstance(fresh["seed"], int)  # a drawn seed is returned, to reproduce the text
    again = generator.generate("", max_tokens=5, seed=fresh["seed"])[0]
    assert again.text == fresh["text"]


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_generate_streams_server_sent_events(client, runs):
    body = {"prompt": "pack", "seed": 11, "max_tokens": 30, "temperature": 0.7, "stream": True}
    response = post(client, "/v1/generate", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response)
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"token"} and len(names) > 5
    expected = Generator.from_pretrained(runs["pangram"], device="cpu").generate(
        "pack", seed=11, max_tokens=30, temperature=0.7)[0]
    assert "".join(data["text"] for name, data in events[:-1]) == expected.continuation
    assert events[-1][1]["samples"][0]["text"] == expected.text


def test_a_stream_closed_by_its_client_stops_generating(runs, monkeypatch):
    served = load_model("lm", runs["pangram"], Limits(max_tokens=50_000), "cpu")
    outcomes = []
    run = served.batcher.run

    def recorded(key, inputs):
        try:
            result = run(key, inputs)
        except Exception as err:
            outcomes.append(type(err).__name__)
            raise
        outcomes.append("finished")
        return result

    monkeypatch.setattr(served.batcher, "run", recorded)
    running = ServerThread(create_app({"lm": served}, Limits(max_tokens=50_000)))
    try:
        body = {"seed": 2, "max_tokens": 50_000, "stream": True}
        with httpx.stream("POST", f"{running.url}/v1/generate", json=body, timeout=60) as response:
            assert next(response.iter_lines()).startswith("event: token")
        deadline = time.monotonic() + 60
        while not outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outcomes == ["_ClientGone"]  # stopped at a token, long before 50,000
    finally:
        running.stop()


def test_a_conditioned_model_generates_for_the_condition_given(tmp_path):
    write_conditioned(tmp_path / "train.tsv")
    raw = conditioned_config(tmp_path / "train.tsv", "label", "init")
    raw["training"].update(max_steps=4, validate_every=4)
    run = train_cli(write_yaml(tmp_path / "cond.yaml", raw), tmp_path / "run")
    running = ServerThread(create_app({"updown": load_model("updown", run, LIMITS, "cpu")}, LIMITS))
    generator = Generator.from_pretrained(run, device="cpu")
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            assert client.get("/v1/models").json()["models"][0]["conditions"] == ["down", "up"]
            for condition in ("up", "down"):
                answer = post(client, "/v1/generate", {"condition": condition, "seed": 4,
                                                       "max_tokens": 8})
                expected = generator.generate(condition=condition, seed=4, max_tokens=8)[0]
                assert answer.json()["samples"][0]["text"] == expected.text
            for body, words in [({}, "give a condition"), ({"condition": "sideways"}, "sideways")]:
                refused = post(client, "/v1/generate", body)
                assert refused.status_code == 422 and refused.json()["field"] == "condition"
                assert words in refused.json()["error"]
    finally:
        running.stop()


def test_docs_openapi_and_page(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/translate", "/v1/classify", "/v1/generate", "/v1/models", "/healthz"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<select id=\"model\"" in page.text
    assets = ["/", "/docs", "/static/app.js", "/static/docs.js", "/static/style.css"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200
        text = response.text
        assert "http://" not in text and "https://" not in text  # nothing from the network


# ---- bad requests --------------------------------------------------------------------------

LONG = "1 " * 60  # 120 characters: over max_chars
BAD_REQUESTS = [
    # (path, body: dict, or bytes sent as is, status, field)
    ("/v1/translate", b'{"texts": ["1 2"', 400, "body"),
    ("/v1/translate", b"[1, 2]", 400, "body"),
    ("/v1/translate", b"", 400, "body"),
    ("/v1/translate", b"\xff\xfe", 400, "body"),
    ("/v1/translate", {}, 422, "texts"),
    ("/v1/translate", {"texts": "1 2 3"}, 422, "texts"),
    ("/v1/translate", {"texts": ["1", 2]}, 422, "texts[1]"),
    ("/v1/translate", {"texts": ["1"], "beam": 3}, 422, "beam"),
    ("/v1/translate", {"texts": ["1"], "beam_size": "3"}, 422, "beam_size"),
    ("/v1/translate", {"texts": ["1"], "beam_size": 2.5}, 422, "beam_size"),
    ("/v1/translate", {"texts": ["1"], "attention": "yes"}, 422, "attention"),
    ("/v1/translate", {"texts": ["1"], "model": 3}, 422, "model"),
    ("/v1/translate", {"texts": ["1"], "model": "nope"}, 404, "model"),
    ("/v1/translate", {"texts": ["1"], "model": "sentiment"}, 422, "model"),
    ("/v1/translate", {"texts": []}, 422, "texts"),
    ("/v1/translate", {"texts": ["1"] * 9}, 413, "texts"),
    ("/v1/translate", {"texts": ["1", LONG]}, 413, "texts[1]"),
    ("/v1/translate", {"texts": ["1"], "beam_size": 0}, 422, "beam_size"),
    ("/v1/translate", {"texts": ["1"], "beam_size": 7}, 422, "beam_size"),
    ("/v1/translate", {"texts": ["1"], "beam_size": 2, "n_best": 3}, 422, "n_best"),
    ("/v1/translate", {"texts": ["1"], "n_best": 0}, 422, "n_best"),
    ("/v1/translate", {"texts": ["1"], "length_penalty": -1}, 422, "length_penalty"),
    ("/v1/classify", {"texts": ["w1"], "top_k": 0}, 422, "top_k"),
    ("/v1/classify", {"texts": [None]}, 422, "texts[0]"),
    ("/v1/classify", {"texts": ["w1"], "model": "digits"}, 422, "model"),
    ("/v1/generate", {"prompt": 5}, 422, "prompt"),
    ("/v1/generate", {"prompt": LONG}, 413, "prompt"),
    ("/v1/generate", {"temperature": 0}, 422, "temperature"),
    ("/v1/generate", {"temperature": -1.5}, 422, "temperature"),
    ("/v1/generate", {"top_p": 0}, 422, "top_p"),
    ("/v1/generate", {"top_p": 1.5}, 422, "top_p"),
    ("/v1/generate", {"top_k": -1}, 422, "top_k"),
    ("/v1/generate", {"max_tokens": 0}, 422, "max_tokens"),
    ("/v1/generate", {"max_tokens": 121}, 422, "max_tokens"),
    ("/v1/generate", {"seed": -1}, 422, "seed"),
    ("/v1/generate", {"seed": 2**70}, 422, "seed"),
    ("/v1/generate", {"num_samples": 4}, 422, "num_samples"),
    ("/v1/generate", {"greedy": True, "num_samples": 2}, 422, "num_samples"),
    ("/v1/generate", {"num_samples": 2, "stream": True}, 422, "stream"),
    ("/v1/generate", {"condition": "pos"}, 422, "condition"),
    ("/v1/generate", {"stream": "yes"}, 422, "stream"),
    ("/v1/translate", b'{"texts": ["1", "\\ud800 hola"]}', 422, "texts[1]"),
    ("/v1/generate", b'{"prompt": "ROMEO \\udc80"}', 422, "prompt"),
    ("/v1/translate", b'{"texts": ["\xff"]}', 400, "body"),
    ("/v1/translate", b'{"texts": ' + b"[" * 1500 + b"]" * 1500 + b"}", 400, "body"),
]


@pytest.mark.parametrize("path,body,status,field", BAD_REQUESTS,
                         ids=[f"{p.split('/')[-1]}-{i}" for i, (p, *_) in enumerate(BAD_REQUESTS)])
def test_a_bad_request_is_a_4xx_json_error_naming_the_field(client, path, body, status, field):
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert error["error"].startswith(f"{field}: ") and "\n" not in error["error"]
    assert "Traceback" not in response.text


def test_oversize_bodies_unknown_routes_and_methods(client):
    big = json.dumps({"texts": ["1 " * 3000]})
    response = client.post("/v1/translate", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"

    def chunks():  # no Content-Length: the server counts what arrives
        for _ in range(10):
            yield b" " * 1000

    chunked = client.post("/v1/translate", content=chunks(),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["field"] == "body"
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/nothing").json() == {"error": "Not Found"}
    assert client.get("/v1/translate").status_code == 405
    assert "error" in client.get("/v1/translate").json()
    slash = client.post("/v1/translate/", json={"texts": ["1"]})  # no redirect
    assert slash.status_code == 404 and slash.json() == {"error": "Not Found"}
    assert client.head("/healthz").status_code == 200


def test_json_sent_as_text_is_refused_and_top_k_past_the_labels_gives_them_all(client):
    response = client.post("/v1/translate", content=json.dumps({"texts": ["1"]}),
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["field"] == "body"
    assert "application/json" in response.json()["error"]
    top = post(client, "/v1/classify", {"texts": ["w1"], "top_k": 5}).json()
    assert len(top["predictions"][0]["top"]) == 2  # as Classifier.predict(top_k=5) gives


def test_bad_requests_sent_with_good_ones_change_no_answer(client, models, monkeypatch):
    monkeypatch.setattr(models["digits"].batcher, "max_wait", 0.3)
    good = {"texts": ["1 2 3", "4 4"], "beam_size": 2}
    alone = post(client, "/v1/translate", good).json()
    bad = [{"texts": ["1"], "beam_size": 99}, {"texts": [3]}, {"texts": ["1"] * 20}]
    answers = concurrently(client, [("/v1/translate", b) for b in [bad[0], good, *bad[1:]]])
    assert [a.status_code for a in answers] == [422, 200, 422, 413]
    assert answers[1].json() == alone  # exactly: the refused ones never joined its batch


def test_a_failing_job_fails_alone_in_its_batch():
    """A batch whose call raises is retried job by job: only the faulty job gets the error."""
    calls = []

    def run(key, inputs):
        calls.append(list(inputs))
        if "boom" in inputs:
            raise ValueError("boom")
        return [x.upper() for x in inputs]

    async def main():
        batcher = Batcher("test", run, budget=100, max_wait=0.2)
        batcher.start()
        jobs = [Job("k", ["a", "b"]), Job("k", ["boom"]), Job("k", ["c"])]
        results = await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert results[0] == ["A", "B"] and results[2] == ["C"]
    assert isinstance(results[1], ValueError)
    assert calls[0] == ["a", "b", "boom", "c"]  # first one batch, then each job alone
    assert calls[1:] == [["a", "b"], ["boom"], ["c"]]


def test_clients_answered_by_a_call_are_waited_for_and_a_lone_client_never_waits():
    """After a call, the batcher waits (at most max_wait) only until as many jobs wait as were
    active: closed-loop clients, each sending its next request once answered, stay in one
    batch and never wait out max_wait; a lone client's requests run as soon as they arrive."""
    sizes: list[int] = []

    def run(key, inputs):
        sizes.append(len(inputs))
        time.sleep(0.02)
        return inputs

    async def clients(count: int, rounds: int, max_wait: float) -> list[float]:
        batcher = Batcher("test", run, budget=1000, max_wait=max_wait)
        batcher.start()
        took: list[float] = []

        async def client(number: int) -> None:
            for _ in range(rounds):
                started = time.monotonic()
                await batcher.submit(Job("k", [number]))
                took.append(time.monotonic() - started)
                await asyncio.sleep(0.001 * number)  # answers travel back at different speeds

        await asyncio.gather(*(client(n) for n in range(count)))
        await batcher.stop()
        return took

    took = asyncio.run(clients(6, 6, max_wait=1.0))
    assert sizes == [6] * 6
    # Only the first call waited out max_wait (nothing was known then); each later request
    # waited for the other five to come back, milliseconds, not for max_wait.
    assert min(took[:6]) >= 1.0 and max(took[6:]) < 0.5
    sizes.clear()
    took = asyncio.run(clients(1, 4, max_wait=1.0))
    assert sizes == [1] * 4 and took[0] >= 1.0 and max(took[1:]) < 0.5


def test_several_workers_run_their_shares_of_the_active_jobs_at_once():
    """With 2 workers, closed-loop clients are answered by two calls in flight at once, each
    taking at most half of the active jobs, computed on the workers' own torch thread count;
    stop() lets the calls in progress finish."""
    calls: list[tuple[int, int]] = []  # (batch size, torch threads in the call)
    in_flight = [0, 0]  # now, most at once
    lock = threading.Lock()
    late_started = threading.Event()

    def run(key, inputs):
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        calls.append((len(inputs), torch.get_num_threads()))
        if 99 in inputs:
            late_started.set()
        time.sleep(0.1)
        with lock:
            in_flight[0] -= 1
        return [x * 10 for x in inputs]

    async def main():
        batcher = Batcher("test", run, budget=1000, max_wait=0.2, workers=2, threads=1)
        batcher.start()

        async def client(number: int) -> list[list[int]]:
            return [await batcher.submit(Job("k", [number])) for _ in range(4)]

        answers = await asyncio.gather(*(client(n) for n in range(8)))
        late = asyncio.ensure_future(batcher.submit(Job("k", [99])))
        while not late_started.is_set():  # its call is running, not finished
            await asyncio.sleep(0.001)
        await batcher.stop()
        return answers, late.result()

    answers, late = asyncio.run(main())
    assert answers == [[[n * 10]] * 4 for n in range(8)] and late == [990]
    assert in_flight[1] == 2  # two calls at once
    sizes = [size for size, _ in calls]
    assert sizes[:2] == [4, 4]  # the 8 first requests: two batches of 4, at once
    assert max(sizes) <= 4  # never more than half of the 8 active jobs
    assert {threads for _, threads in calls} == {1}
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Batcher("test", run, workers=0)


def test_the_token_budget_splits_batches_and_keys_never_mix():
    calls = []

    def run(key, inputs):
        calls.append((key, list(inputs)))
        return inputs

    async def main():
        batcher = Batcher("test", run, budget=5, max_wait=0.2)
        batcher.start()
        jobs = [Job("a", [1], cost=3), Job("b", [2], cost=1), Job("a", [3], cost=2),
                Job("a", [4], cost=3), Job(None, [5]), Job(None, [6])]
        results = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        await batcher.stop()
        return results

    assert asyncio.run(main()) == [[1], [2], [3], [4], [5], [6]]
    assert calls == [("a", [1, 3]), ("b", [2]), ("a", [4]), (None, [5]), (None, [6])]


def test_api_key_guards_every_route_but_the_health_check(runs):
    app = create_app({"digits": load_model("digits", runs["digits"], LIMITS, "cpu")}, LIMITS,
                     api_key="s3cret")
    running = ServerThread(app)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            assert client.get("/healthz").status_code == 200
            for headers in [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer s3cre"},
                            {"X-API-Key": "s3cret1"}]:
                refused = client.get("/v1/models", headers=headers)
                assert refused.status_code == 401 and refused.json()["error"].startswith("api_key:")
                assert refused.json()["field"] == "api_key"
                assert client.post("/v1/translate", json={"texts": ["1"]},
                                   headers=headers).status_code == 401
            for headers in [{"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}]:
                assert client.get("/v1/models", headers=headers).status_code == 200
                assert client.post("/v1/translate", json={"texts": ["1"]},
                                   headers=headers).status_code == 200
    finally:
        running.stop()


# ---- the command ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_refuses_bad_arguments_in_one_line(runs, tmp_path):
    assert_user_error(run_cli("serve", tmp_path / "missing"), "run directory not found")
    assert_user_error(run_cli("serve", f"a={runs['digits']}", f"a={runs['pangram']}"),
                      "two models named 'a'")
    assert_user_error(run_cli("serve", runs["digits"], "--port", "70000"), "--port")
    assert_user_error(run_cli("serve", runs["digits"], "--max-texts", "0"), "--max-texts")
    assert_user_error(run_cli("serve", runs["digits"], "--api-key", " "), "--api-key")
    assert_user_error(run_cli("serve", runs["digits"], "--workers", "-1"), "--workers")
    for wait in ("nan", "inf", "60001"):
        assert_user_error(run_cli("serve", runs["digits"], "--max-wait-ms", wait), "--max-wait-ms")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_user_error(run_cli("serve", runs["digits"], "--port", port), f"127.0.0.1:{port}")


def test_only_loopback_addresses_count_as_private_for_the_api_key_warning():
    from seq2seq.cli.serve import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))


def test_sigterm_finishes_the_requests_in_flight_then_exits(runs):
    port = free_port()
    command = [sys.executable, str(ROOT / "cli.py"), "serve", f"lm={runs['pangram']}",
               "--port", str(port), "--threads", "1", "--max-tokens", "4000"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"seed": 1, "max_tokens": 4000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=120) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("event: token")  # generating now
            server.send_signal(signal.SIGTERM)
            rest = "\n".join(lines)
        assert "event: done" in rest
        done = json.loads(rest.split("event: done\ndata: ")[1].split("\n")[0])
        assert done["samples"][0]["tokens"] == 4000  # the whole text, not cut at SIGTERM
        # uvicorn shuts down, then ends the process by the signal it caught (as a supervisor
        # expects of a process it stopped)
        assert server.wait(60) == -signal.SIGTERM
        log = server.stdout.read()
        assert "Shutting down" in log and "Traceback" not in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# ---- the web page in a browser -----------------------------------------------------------------

# headless=True and a fresh profile per launch come from playwright itself
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (`make test` installs it with apt-get where it "
                    "can): the page is not tested in a browser")
    return found


def test_the_page_translates_classifies_and_generates_in_chromium(server):
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is "
                                   "missing (it is in the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            outside = []
            page.on("request", lambda r: None if r.url.startswith(server.url)
                    else outside.append(r.url))
            page.goto(server.url + "/")
            page.wait_for_selector("#model option[value=digits]", state="attached")

            page.select_option("#model", "digits")
            # the form shows the run's own decoding defaults, so its answer is the API's default
            listed = httpx.get(server.url + "/v1/models", timeout=30).json()["models"]
            defaults = next(m for m in listed if m["name"] == "digits")["defaults"]
            assert defaults["length_penalty"] == 0.6
            assert page.input_value("#translate-alpha") == "0.6"
            assert page.input_value("#translate-beam") == str(defaults["beam_size"])
            page.fill("#translate-text", "1 2 3")
            page.click("#translate-go")
            page.wait_for_selector("#translate-result:not([hidden])")
            page.wait_for_function("document.getElementById('translation-output').textContent.length > 0")
            assert page.locator("#translate-nbest-list li").count() >= 1
            assert page.locator("#heatmap tbody tr").count() >= 1
            assert page.locator("#heatmap td").count() >= 4  # source x target cells

            page.select_option("#model", "sentiment")
            page.fill("#classify-text", "w1 not bad w2")
            page.click("#classify-go")
            page.wait_for_selector("#classify-result:not([hidden])")
            assert page.locator("#classify-bars .bar").count() == 2
            assert page.locator("#classify-label").inner_text().split(" ")[0] in {"neg", "pos"}

            page.select_option("#model", "pangram")
            assert page.locator("#generate").is_visible() and not page.locator("#classify").is_visible()
            assert not page.locator("#generate-condition-label").is_visible()  # not conditioned
            page.fill("#generate-prompt", "pack my")
            page.fill("#generate-max", "30")
            page.fill("#generate-seed", "5")
            page.click("#generate-go")
            page.wait_for_function("document.getElementById('generate-status').textContent"
                                   ".includes('tokens')")
            text = page.locator("#generate-output").inner_text()
            assert text.startswith("pack my") and len(text) > len("pack my")
            assert not page.locator("#error").is_visible(), page.locator("#error").inner_text()
            assert errors == [] and outside == []
            # the page fits a phone: nothing wider than the screen but the heatmap's own box
            assert page.evaluate("document.documentElement.scrollWidth") <= 390

            page.goto(server.url + "/docs")  # the API reference, drawn offline from the schema
            page.wait_for_selector("#endpoints h2")
            titles = page.locator("#endpoints h2").all_inner_texts()
            assert {"POST /v1/translate", "POST /v1/classify", "POST /v1/generate"} <= set(titles)
            assert "texts *" in page.locator("#endpoints").inner_text()
            assert errors == [] and outside == []
        finally:
            browser.close()


def test_the_load_test_runs_end_to_end_on_a_tiny_model(runs, tmp_path):
    """bench/serve_load.py with small numbers: every phase answers, and it stops by itself."""
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("1 2 3\n\n4 5\n6 7 8 9\n", encoding="utf-8")
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_load.py"), str(runs["digits"]),
                           "--input", str(sentences), "--clients", "1,3", "--requests", "12",
                           "--rss-requests", "40", "--max-seconds", "60", "--beam-size", "2",
                           "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["offline"]["sentences"] == result["offline_process"]["sentences"] == 3
    assert all(r["vs_offline_process"] > 0 for r in result["levels"])
    assert [(r["clients"], r["requests"], r["errors"]) for r in result["levels"]] == [(1, 12, 0),
                                                                                      (3, 12, 0)]
    assert result["server_rss_mib"][-1]["requests"] >= 40
    assert "sentences/s" in done.stdout
