"""The CPU thread count follows the machine's load, and leaves the results unchanged."""

import pytest
import torch

from seq2seq import runtime
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
from seq2seq.models.functional import sequence_loss
from seq2seq.models.translation import TranslationModel
from seq2seq.runtime import ThreadFitter

CONFIGURE_THREADS = runtime.configure_threads  # read at import, before conftest patches it


class Machine:
    """Injected readings: a clock, the cores' busy seconds, this process's CPU seconds."""

    def __init__(self) -> None:
        self.now, self.busy, self.own = 0.0, 0.0, 0.0

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds


@pytest.fixture
def threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def fitter(machine: Machine, cores: int = 2, follow: bool = True) -> ThreadFitter:
    return ThreadFitter(list(range(cores)), every=5.0, clock=lambda: machine.now,
                        busy=lambda _: machine.busy, own=lambda: machine.own, follow=follow)


def test_threads_give_way_to_a_busy_process_and_come_back(threads):
    machine = Machine()
    torch.set_num_threads(2)
    fit = fitter(machine)
    machine.run(5, own_cores=2.0, other_cores=0.0)
    assert fit() is None and torch.get_num_threads() == 2  # quiet: all cores
    machine.run(5, own_cores=1.33, other_cores=0.67)  # a busy loop takes its share
    assert fit() == "other processes use 0.7 of 2 cores: computing on 1 thread"
    assert torch.get_num_threads() == 1 and fit.others == pytest.approx(0.67)
    machine.run(5, own_cores=1.0, other_cores=1.0)  # it keeps running: one thread stays
    assert fit() is None and torch.get_num_threads() == 1
    machine.run(5, own_cores=1.0, other_cores=0.1)  # it stopped: the core is taken back
    assert fit() == "other processes use 0.1 of 2 cores: computing on 2 threads"
    assert torch.get_num_threads() == 2


def test_threads_are_checked_only_every_interval_and_never_fall_below_one(threads):
    machine = Machine()
    torch.set_num_threads(4)
    fit = fitter(machine, cores=4)
    machine.run(4.9, own_cores=0.5, other_cores=3.5)
    assert fit() is None and torch.get_num_threads() == 4  # not yet
    machine.run(0.1, own_cores=0.5, other_cores=3.5)
    assert fit().endswith("computing on 1 thread")  # 3.5 of 4 cores taken: one, not zero
    machine.run(5, own_cores=1.0, other_cores=6.0)  # more demand than cores
    assert fit() is None and torch.get_num_threads() == 1
    machine.run(5, own_cores=1.0, other_cores=1.6)
    assert fit().endswith("computing on 2 threads") and torch.get_num_threads() == 2


def test_a_set_thread_count_stays_and_the_run_says_when_others_crowd_it(threads):
    # The demo fixes 2 threads (another count would train another model): beside a busy
    # process it only gets slower, and says so once, and once more when the core is free.
    machine = Machine()
    torch.set_num_threads(2)
    fit = fitter(machine, follow=False)
    machine.run(5, own_cores=2.0, other_cores=0.3)  # the VM's neighbours: not a core
    assert fit() is None
    machine.run(5, own_cores=1.0, other_cores=1.0)
    assert fit() == ("other processes use 1.0 of 2 cores: this run keeps the 2 threads "
                     "it was given, so it runs slower, to the same result")
    assert torch.get_num_threads() == 2
    machine.run(5, own_cores=1.0, other_cores=1.0)
    assert fit() is None  # said once
    machine.run(5, own_cores=2.0, other_cores=0.0)
    assert fit() == "other processes use 0.0 of 2 cores: back to full speed"
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)  # one set thread on two cores: crowded only when both are taken
    one = fitter(machine, follow=False)
    machine.run(5, own_cores=1.0, other_cores=1.0)
    assert one() is None
    machine.run(5, own_cores=0.4, other_cores=1.6)
    assert one().startswith("other processes use 1.6 of 2 cores: this run keeps the 1 thread ")


def test_fit_threads_is_a_no_op_unless_the_count_was_left_to_the_library(threads, monkeypatch):
    machine = Machine()
    monkeypatch.setattr(runtime, "_fitter", None)
    torch.set_num_threads(2)
    assert runtime.fit_threads() is None
    monkeypatch.setattr(runtime, "_fitter", fitter(machine))
    machine.run(5, own_cores=1.5, other_cores=0.9)
    assert runtime.fit_threads() == "other processes use 0.9 of 2 cores: computing on 1 thread"


def test_configure_threads_follows_the_load_only_for_the_default_and_one_process(monkeypatch):
    # conftest keeps the suite on one thread by patching configure_threads: the real one here
    configure = CONFIGURE_THREADS
    saved = torch.get_num_threads()
    monkeypatch.setattr(runtime, "allowed_cores", lambda: [0, 1])
    try:
        assert configure(0) == 2 and isinstance(runtime._fitter, ThreadFitter)
        assert configure(3) == 3 and not runtime._fitter.follow  # the user's count is kept
        assert configure(0, processes=2) == 1 and runtime._fitter is None  # ranks share cores
        assert configure(2, processes=2) == 1  # a set count above the share is lowered
        assert configure(1, processes=2) == 1
    finally:
        runtime._fitter = None
        torch.set_num_threads(saved)


def test_a_training_step_on_one_thread_and_on_two_differs_by_rounding_only(threads):
    """What lets the count change mid-run: threads change the order of some sums, so a
    step's gradients differ in the last bits (as on another CPU kind), never more."""
    config = ModelConfig(
        embedding_size=64, encoder=EncoderConfig(cell="gru", hidden_size=128, bidirectional=True),
        decoder=DecoderConfig(cell="gru", hidden_size=256, attention="bahdanau",
                              input_feeding=True),
        embedding_dropout=0.0, output_dropout=0.0)
    torch.manual_seed(0)
    model = TranslationModel(config, src_vocab_size=600, trg_vocab_size=700)
    src = torch.randint(4, 600, (48, 21))
    trg = torch.randint(4, 700, (48, 19))
    lengths = torch.full((48,), 21)

    def step(count: int) -> list[torch.Tensor]:
        torch.set_num_threads(count)
        model.zero_grad()
        features, _ = model(src, lengths, trg[:, :-1])
        loss, _, _ = sequence_loss(model, features, trg[:, 1:])
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    (loss1, gradient1), (loss2, gradient2) = step(1), step(2)
    assert abs(float(loss1 - loss2)) <= 1e-6 * float(loss1)
    assert float((gradient1 - gradient2).norm()) <= 1e-5 * float(gradient1.norm())
