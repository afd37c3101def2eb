"""Set-up shared by the whole suite."""

import pytest
import torch

from seq2seq import precision, runtime


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every test, and every command run in-process, computes on one CPU thread: the suite's
    models are tiny and run fastest on one, and several threads spin-waiting for each other
    stall badly when other work shares the cores. The commands' own thread set-up
    (``runtime.configure_threads``) keeps one thread too; a test of it patches it again."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "configure_threads", lambda num_threads=0, processes=1: 1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory):
    """Measurements of ``auto`` mixed precision and of float32's products go to a temporary
    cache, not the user's; in-process they take a tenth of their time (tiny models)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SEQ2SEQ_CACHE_DIR", str(tmp_path_factory.mktemp("seq2seq-cache")))
    patch.setattr(precision, "PROBE_SECONDS", 0.1)
    patch.setattr(precision, "PRODUCTS_PROBE_SECONDS", 0.03)
    yield
    patch.undo()
