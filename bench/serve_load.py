#!/usr/bin/env python
"""Load test of ``seq2seq serve`` on loopback: a translation run, N concurrent clients.

    python bench/serve_load.py RUN_DIR                      # the run's test split, 1/8/32 clients
    python bench/serve_load.py RUN_DIR --input sents.txt --clients 1,4 --requests 50 \
        --rss-requests 200 --max-seconds 30                  # a quick check

First the offline figures: the same sentences translated in this process in batches (as
``seq2seq translate`` does), with the same beam, on every core, after a warm-up; and the whole
``seq2seq translate`` process on them, start-up and loading included. Then the server is started
(``seq2seq serve``, a free loopback port) and, for each client count, every client sends one
sentence per request, the next as soon as its answer arrives, until ``--requests`` requests
(or ``--max-seconds``) per level: sentences/s, latency p50/p99 and the mean batch the server
formed. Last, requests go on at the highest client count until the server has answered
``--rss-requests`` in all, and the server's resident memory is read along the way (it must
not grow). Every phase is bounded in requests and time; the server is stopped at the end.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_sentences(run_dir: Path, input_file: Path | None, limit: int) -> list[str]:
    """``--input`` lines, else the source side of the run's test split (non-empty ones)."""
    if input_file is not None:
        lines = input_file.read_text(encoding="utf-8").splitlines()
    else:
        from seq2seq.data.translation import load_parallel
        from seq2seq.pretrained import open_run

        _, config = open_run(run_dir, "translation")
        lines = list(load_parallel(config.data, "test")["src"])
    sentences = [line for line in lines if line.strip()]
    if not sentences:
        sys.exit("error: no sentences to send")
    return sentences[:limit] if limit else sentences


def offline(run_dir: Path, sentences: list[str], beam: int) -> dict:
    """Sentences/s of one in-process batched call on every core, after a warm-up."""
    import torch

    from seq2seq import Translator

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    translator = Translator.from_pretrained(run_dir, device="cpu")
    translator.translate(sentences[:16], beam_size=beam, batch_size=64)
    started = time.perf_counter()
    translator.translate(sentences, beam_size=beam, batch_size=64)
    seconds = time.perf_counter() - started
    return {"sentences": len(sentences), "seconds": round(seconds, 3),
            "sentences_per_s": round(len(sentences) / seconds, 1)}


def offline_process(run_dir: Path, sentences: list[str], beam: int) -> dict:
    """Sentences/s of the whole ``seq2seq translate`` process on the same sentences (start-up
    and model loading included): what translating a file offline takes from the shell."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source.txt"
        source.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "cli.py"), "translate", str(run_dir),
                        "--input", str(source), "--output", str(Path(folder) / "output.txt"),
                        "--beam-size", str(beam), "--batch-size", "64"], check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    return {"sentences": len(sentences), "seconds": round(seconds, 3),
            "sentences_per_s": round(len(sentences) / seconds, 1)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run_dir: Path, port: int, threads: int, workers: int,
                 max_wait_ms: float) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "cli.py"), "serve", f"bench={run_dir}",
               "--port", str(port), "--threads", str(threads), "--workers", str(workers),
               "--max-wait-ms", str(max_wait_ms)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: the server exited ({server.returncode}): {server.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    sys.exit("error: the server did not start within 120 s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def served_counts(url: str) -> tuple[int, int]:
    model = httpx.get(f"{url}/v1/models", timeout=30).json()["models"][0]
    return model["served"]["requests"], model["served"]["batches"]


class Connection:
    """A minimal HTTP/1.1 keep-alive client for JSON POSTs: the load generator shares the
    machine's cores with the server, so it must cost little (httpx spends ~7 ms of CPU per
    request on this machine, about a fifth of what a beam-5 translation costs)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, object]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
                          f"application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, sentences: list[str], clients: int, requests: int, seconds: float,
               beam: int) -> dict:
    """``clients`` loops, each on its own keep-alive connection sending one sentence per
    request, until ``requests`` in all or ``seconds`` have passed. Latencies in seconds, one
    per answered request."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + seconds
    host, port = url.split("//", 1)[1].rsplit(":", 1)

    async def client() -> None:
        nonlocal sent, errors
        connection = Connection(host, int(port))
        try:
            while sent < requests and time.monotonic() < deadline:
                sentence = sentences[sent % len(sentences)]
                sent += 1
                started = time.perf_counter()
                status, _ = await connection.post("/v1/translate",
                                                  {"texts": [sentence], "beam_size": beam})
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "wall": wall}


def level(url: str, sentences: list[str], clients: int, requests: int, seconds: float,
          beam: int) -> dict:
    before = served_counts(url)
    found = asyncio.run(load(url, sentences, clients, requests, seconds, beam))
    after = served_counts(url)
    latencies = np.array(found["latencies"]) * 1000
    answered = len(latencies)
    batches = after[1] - before[1]
    return {"clients": clients, "requests": answered, "errors": found["errors"],
            "seconds": round(found["wall"], 2),
            "sentences_per_s": round(answered / found["wall"], 1) if found["wall"] else None,
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if answered else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if answered else None,
            "mean_batch_requests": round((after[0] - before[0]) / batches, 2) if batches else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="A translation run directory.")
    parser.add_argument("--input", type=Path, default=None,
                        help="Sentences, one per line [the run's test split].")
    parser.add_argument("--sentences", type=int, default=0, help="Use the first N (0 = all).")
    parser.add_argument("--clients", default="1,8,32", help="Concurrent client counts.")
    parser.add_argument("--requests", type=int, default=1000, help="Requests per client count.")
    parser.add_argument("--max-seconds", type=float, default=300, help="Time per phase at most.")
    parser.add_argument("--rss-requests", type=int, default=5000,
                        help="Requests answered in all before the last RSS reading.")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="The server's inference threads [its default]; offline: all cores.")
    parser.add_argument("--workers", type=int, default=0,
                        help="The server's batches at once [its default].")
    parser.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="The server's batching wait at most.")
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON result here.")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    sentences = load_sentences(args.run_dir, args.input, args.sentences)

    result = {"run_dir": str(args.run_dir), "beam_size": args.beam_size, "threads": args.threads,
              "workers": args.workers, "max_wait_ms": args.max_wait_ms,
              "machine": platform.processor() or platform.machine(),
              "cores": len(os.sched_getaffinity(0)),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    result["offline"] = offline(args.run_dir, sentences, args.beam_size)
    result["offline_process"] = offline_process(args.run_dir, sentences, args.beam_size)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.run_dir, port, args.threads, args.workers, args.max_wait_ms)
    try:
        level(url, sentences, 1, min(8, args.requests), args.max_seconds, args.beam_size)  # warm-up
        memory = [(served_counts(url)[0], rss_mib(server.pid))]
        result["levels"] = []
        for clients in counts:
            result["levels"].append(level(url, sentences, clients, args.requests,
                                          args.max_seconds, args.beam_size))
            memory.append((served_counts(url)[0], rss_mib(server.pid)))
        deadline = time.monotonic() + args.max_seconds
        while served_counts(url)[0] < args.rss_requests and time.monotonic() < deadline:
            remaining = args.rss_requests - served_counts(url)[0]
            level(url, sentences, max(counts), min(remaining, 1000),
                  deadline - time.monotonic(), args.beam_size)
            memory.append((served_counts(url)[0], rss_mib(server.pid)))
        result["server_rss_mib"] = [{"requests": n, "rss_mib": m} for n, m in memory]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    one = next((x for x in result["levels"] if x["clients"] == 1), None)
    for row in result["levels"]:
        row["vs_one_client"] = (round(row["sentences_per_s"] / one["sentences_per_s"], 2)
                                if one and one["sentences_per_s"] else None)
        row["vs_offline"] = round(row["sentences_per_s"] / result["offline"]["sentences_per_s"], 2)
        row["vs_offline_process"] = round(
            row["sentences_per_s"] / result["offline_process"]["sentences_per_s"], 2)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"offline: {result['offline']['sentences_per_s']} sentences/s in one process "
          f"(generation); the whole `seq2seq translate` process "
          f"{result['offline_process']['sentences_per_s']} ({result['offline']['sentences']} "
          f"sentences, beam {args.beam_size})")
    print("clients  sentences/s  p50 ms  p99 ms  batch  x1 client  x offline  x process  errors")
    for r in result["levels"]:
        print(f"{r['clients']:>7}  {r['sentences_per_s']:>11}  {r['p50_ms']:>6}  {r['p99_ms']:>6}  "
              f"{r['mean_batch_requests']:>5}  {r['vs_one_client'] or '-':>9}  {r['vs_offline']:>9}  "
              f"{r['vs_offline_process']:>9}  {r['errors']:>6}")
    print("server RSS (MiB) after N requests: " + ", ".join(
        f"{m['requests']}: {m['rss_mib']}" for m in result["server_rss_mib"]))


if __name__ == "__main__":
    main()
