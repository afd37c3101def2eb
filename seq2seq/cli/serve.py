"""``seq2seq serve RUN_DIR [NAME=RUN_DIR ...]``: serve trained runs over HTTP (seq2seq.serving)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Optional

import typer

from ..errors import UserError
from .app import DEVICE_HELP, app, console, user_errors


@app.command()
@user_errors
def serve(
    runs: list[str] = typer.Argument(..., metavar="RUN_DIR|NAME=RUN_DIR",
                                     help="Runs to serve, named after their folder or NAME."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every "
                             "interface; then set an API key)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, envvar="SEQ2SEQ_API_KEY", show_envvar=True,
                                          help="Require this key on every /v1/ request "
                                          "(X-API-Key or Authorization: Bearer)."),
    max_texts: int = typer.Option(64, help="Texts per request at most."),
    max_chars: int = typer.Option(2000, help="Characters per text (or prompt) at most."),
    max_tokens: int = typer.Option(512, help="Tokens generated per request at most."),
    max_body: int = typer.Option(1_000_000, help="Bytes per request body at most."),
    max_beam_size: int = typer.Option(16, help="beam_size at most."),
    max_samples: int = typer.Option(8, help="num_samples (generation) at most."),
    batch_tokens: int = typer.Option(4096, help="Source tokens gathered into one batch at most."),
    max_wait_ms: float = typer.Option(20.0, help="A batch waits for more requests while "
                                      "they come this close together (milliseconds; at most "
                                      "10x this in all)."),
    threads: int = typer.Option(0, help="CPU threads for inference; 0 = the cores this "
                                "process may use."),
    workers: int = typer.Option(0, help="Batches each model computes at once, each on its "
                                "share of the threads; 0 = one per thread on CPU (each batch "
                                "on one thread), 1 on CUDA."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Serve trained runs over HTTP: a JSON API (/docs), dynamic batching, a web page at /."""
    import uvicorn

    from ..runtime import allowed_cores, configure_threads, select_device
    from ..serving.app import create_app
    from ..serving.models import load_model, parse_model_specs
    from ..serving.schemas import Limits

    for name, value, low in [("--port", port, 0), ("--max-texts", max_texts, 1),
                             ("--max-chars", max_chars, 1), ("--max-tokens", max_tokens, 1),
                             ("--max-body", max_body, 1), ("--max-beam-size", max_beam_size, 1),
                             ("--max-samples", max_samples, 1),
                             ("--batch-tokens", batch_tokens, 1), ("--max-wait-ms", max_wait_ms, 0),
                             ("--threads", threads, 0), ("--workers", workers, 0)]:
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if not max_wait_ms <= 60_000:  # also refuses nan
        raise UserError(f"--max-wait-ms must be a number of milliseconds from 0 to 60000, "
                        f"got {max_wait_ms}")
    if port > 65535:
        raise UserError(f"--port must be <= 65535, got {port}")
    if api_key is not None and not api_key.strip():
        raise UserError("--api-key (SEQ2SEQ_API_KEY) is empty: give a key or leave it out")
    specs = parse_model_specs(runs)
    check_port_free(host, port)
    limits = Limits(max_texts=max_texts, max_chars=max_chars, max_tokens=max_tokens,
                    max_body_bytes=max_body, max_beam_size=max_beam_size,
                    max_samples=max_samples)
    # On CPU, one batch per thread by default: on 2 cores, 32 clients got 0.60-0.91x of the
    # offline throughput from two batches on one thread each, whose operators never wait for
    # another thread, and 0.41-0.74x from one batch on 2 threads (BENCHMARKS.md, "Serving").
    total = threads or len(allowed_cores())
    on_cuda = select_device(device).type == "cuda"
    workers = workers or (1 if on_cuda else total)
    if workers == 1:  # one batch on every thread; with --threads 0 following the machine's load
        per_worker, worker_threads = configure_threads(threads), None
    else:
        per_worker = worker_threads = configure_threads(max(1, total // workers))
    models = {}
    for name, run_dir in specs:
        models[name] = load_model(name, run_dir, limits, device, batch_tokens, max_wait_ms / 1000,
                                  workers, worker_threads)
        console.print(f"{name}: {models[name].head.model} from {run_dir}")
    where = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    threads_used = (f"{workers} batches at once per model, {per_worker} thread"
                    f"{'s' if per_worker != 1 else ''} each" if workers > 1 else
                    f"{per_worker} thread{'s' if per_worker != 1 else ''}")
    console.print(f"serving {len(models)} model(s) on {where} ({threads_used}); page: {where}/, "
                  f"API: {where}/docs{'; API key required' if api_key else ''}")
    if not api_key and not is_loopback(host):
        console.print(f"warning: {host} is reachable from other machines and no API key is set: "
                      "anyone who can reach it can use these models (--api-key or "
                      "SEQ2SEQ_API_KEY)", markup=False, highlight=False)
    uvicorn.run(create_app(models, limits, api_key), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=60)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: assume it is reachable
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail with one line, before loading any model, if ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None

