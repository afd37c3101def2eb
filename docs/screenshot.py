#!/usr/bin/env python
"""Make docs/serve.png: the page of ``seq2seq serve`` translating a sentence, in headless chromium.

    python docs/screenshot.py runs/demo_es_en --text "¿Dónde está la estación de tren?"

Starts ``seq2seq serve`` on the translation run (a free loopback port), opens the page in
Debian's chromium (driven by playwright, no browser download), translates ``--text`` with an
n-best list and the attention heatmap, saves a full-page PNG and stops the server.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="A translation run directory.")
    parser.add_argument("--text", required=True, help="The sentence to translate.")
    parser.add_argument("--name", default=None, help="The model's name on the page [folder].")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--n-best", type=int, default=3)
    parser.add_argument("--width", type=int, default=820, help="Viewport width in pixels.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serve.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("error: chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = args.name or args.run_dir.resolve().name
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve",
                               f"{name}={args.run_dir}", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                why = server.stderr.read() if server.poll() is not None else "no answer in 120 s"
                sys.exit(f"error: the server did not start: {why}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": args.width, "height": 600},
                                    device_scale_factor=1)
            page.goto(url + "/")
            page.wait_for_selector(f"#model option[value='{name}']", state="attached")
            page.select_option("#model", name)
            page.fill("#translate-text", args.text)
            page.fill("#translate-beam", str(args.beam_size))
            page.fill("#translate-nbest", str(args.n_best))
            page.click("#translate-go")
            page.wait_for_selector("#heatmap tbody tr")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
