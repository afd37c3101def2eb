"""The training loop shared by every head, in plain sight.

A head supplies a :class:`TrainingTask` (its model, batches, loss and validation); the
:class:`Trainer` owns everything else: optimisation, schedules, clipping, mixed precision,
validation and early stopping, checkpoints, exact resume, progress and logs.

Several processes (torchrun) train one model: each computes the loss of its share of every
batch through ``DistributedDataParallel``, which averages the gradients; the loss is divided
by the whole batch's prediction count, so the update equals one process's on the whole batch.
Rank 0 validates and writes the run directory; decisions that must agree (stop, the score,
the precision) are made once and shared (``seq2seq.training.distributed``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..config import TrainingConfig
from ..errors import UserError
from ..models.functional import onednn_products
from ..precision import (
    ProductsChoice,
    probe_rows,
    resolve_float32_products,
    resolve_mixed_precision,
)
from ..run_directory import RunDirectory, average_weights, save_weights
from ..runtime import cpu_has_native_bf16, fit_threads, limit_onednn_kernels, mixed_precision
from .distributed import ProcessInfo, rank_seed
from .optim import LearningRateSchedule, build_optimizer

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "accuracy": True, "macro_f1": True,
                    "loss": False, "ppl": False, "bpc": False}


@dataclass
class Validation:
    metrics: dict[str, float]  # e.g. {"loss": 2.1, "ppl": 8.2, "bleu": 23.4, "chrf": 51.0}
    examples: list[str] = field(default_factory=list)  # human-readable lines for the log


class TrainingTask(Protocol):
    """What a head gives the trainer.

    A head may also define ``state_dict()`` / ``load_state_dict(state)`` for state that lives
    outside the model and must survive a resume (a language model's carried hidden state).
    """

    model: torch.nn.Module
    unit: str  # what loss() counts: "tokens" (perplexity is reported) or "texts"

    def train_batches(self, epoch: int) -> list[Any]:
        """This epoch's batches as index arrays (deterministic in epoch)."""

    def make_batch(self, indices: Any, device: torch.device) -> Any:
        """Index array -> a batch on ``device``."""

    def loss(self, batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss sum to backprop, NLL sum to report, number of predictions) at update ``step``."""

    def validate(self) -> Validation:
        """Score the dev set with the model in eval mode."""


@dataclass
class TrainerState:
    """Where training stands; saved with every checkpoint (JSON) to resume exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_score: float | None = None
    best_step: int = 0
    bad_validations: int = 0
    train_seconds: float = 0.0
    last_validated_step: int = -1
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient norm
    nonfinite_in_a_row: int = 0
    # the log interval in progress (so a resumed run logs the same averages)
    window_nll: float = 0.0
    window_count: int = 0
    window_seconds: float = 0.0
    world_size: int = 1  # processes training (a resume must use as many)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training at a step boundary, after a checkpoint was saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While training, SIGINT (Ctrl-C) and SIGTERM (schedulers, torchrun) ask the loop to stop
    at the end of the current step instead of interrupting it, so the checkpoint saved then is
    a step boundary and a resumed run continues bit-identically. A second signal stops at once
    without saving (the last checkpoint stays what it was)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, console: Console) -> None:
        self.console = console
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # the second one: stop now, without saving
            raise KeyboardInterrupt
        self.received = signum
        self.console.print(f"{signal.Signals(signum).name}: stopping after this step to save a "
                           "checkpoint (send it again to stop at once without saving)")


class Trainer:
    def __init__(self, task: TrainingTask, config: TrainingConfig, run: RunDirectory,
                 device: torch.device, console: Console | None = None,
                 process: ProcessInfo = ProcessInfo(), show_progress: bool = True) -> None:
        self.task = task
        self.model = task.model
        self.config = config
        self.run = run
        self.device = device
        self.console = console or Console(stderr=True)
        self.process = process
        self.show_progress = show_progress and process.is_main
        self.optimizer = build_optimizer(self.model.parameters(), config)
        self.schedule = LearningRateSchedule.from_config(config)
        self.state = TrainerState(world_size=process.world_size)
        self._saved_step = -1  # the step of the newest checkpoint on disk
        self.signals = StopSignals(self.console)
        self.stop_signal = 0  # the signal that stopped training (agreed by all processes)
        amp = config.amp if device.type == "cuda" else config.cpu_amp
        # ``auto`` times the model's products in each precision (once per machine and model;
        # rank 0 decides for all, so every process computes alike)
        rows = probe_rows(config.batch_size, config.batch_tokens)
        # whose float32 products run faster here (ATen's or oneDNN's) is measured too
        self.products = process.broadcast(resolve_float32_products(
            config.onednn, device, self.model, training=True, rows=rows)
            if process.is_main and amp is not True else ProductsChoice(False, ""))
        if self.products.onednn:
            limit_onednn_kernels()
        self.precision = process.broadcast(resolve_mixed_precision(
            amp, device, self.model, training=True, rows=rows, onednn=self.products.onednn)
            if process.is_main else None)
        self.use_amp = self.precision.enabled
        # The module that computes the training loss: with several processes DDP wraps it
        # (it starts every rank from rank 0's weights and averages gradients in backward).
        self.loss_module: torch.nn.Module = _TaskLoss(task)
        if process.distributed:
            self.model.to(device)
            self.loss_module = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None)
            torch.manual_seed(rank_seed(config.seed, process.rank))  # own dropout masks
        if process.is_main:
            for line in (self.products.line, self.precision.line):
                if line:
                    self.console.print(line, markup=False, highlight=False)
        if amp is True and device.type == "cpu" and not cpu_has_native_bf16():
            self.console.print("note: training.cpu_amp on a CPU without bfloat16 hardware "
                               "(AVX512-BF16 or AMX) is slower than float32")
        # bfloat16 has float32's range, so only CUDA's float16 needs loss scaling
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and device.type == "cuda")
        self.metric = config.early_stopping_metric  # "auto" is resolved when the config loads
        self.higher_is_better = HIGHER_IS_BETTER[self.metric]
        self.per_token = getattr(task, "unit", "tokens") == "tokens"

    # ---- resume ----

    def resume(self) -> None:
        """Restore weights, optimizer, schedule, counters and RNG from the newest checkpoint
        (a run stopped before its first checkpoint starts again from step 0)."""
        if self.process.is_main:
            self.run.remove_temporaries()
        self.run.best_index()  # a damaged index is reported now, not at the next validation
        notes: list[str] = []
        loaded = self.run.load_checkpoint(self.model, _TRAINER_KEYS, notes)
        for note in notes:
            self.console.print(f"note: {note}", markup=False, highlight=False)
        if loaded is None:
            if self.process.is_main:
                self.run.reset_progress()
            self.console.print("no checkpoint yet: the run starts again from step 0")
            return
        torch_state, trainer_state = loaded
        saved_world = trainer_state.get("world_size", 1)
        if saved_world != self.process.world_size:
            raise UserError(f"{self.run.path} was trained by {saved_world} process"
                            f"{'es' if saved_world != 1 else ''}: resume it with as many "
                            f"(this is {self.process.world_size}); the random numbers and the "
                            "state each process carries are saved per process")
        own = torch_state["ranks"][self.process.rank] if "ranks" in torch_state else torch_state
        try:
            self.optimizer.load_state_dict(torch_state["optimizer"])
            self.schedule.load_state_dict(torch_state["schedule"])
            self.scaler.load_state_dict(torch_state.get("scaler", {}))
            torch.set_rng_state(own["rng"])
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise UserError(f"{self.run.checkpoints}: the newest checkpoint's optimizer or "
                            f"schedule state does not fit this run ({err})") from None
        if torch.cuda.is_available() and "cuda_rng" in own:
            torch.cuda.set_rng_state_all(own["cuda_rng"])
        if "task" in own:
            # saved only by a task that has state_dict(), which has load_state_dict() too
            self.task.load_state_dict(own["task"])  # type: ignore[attr-defined]
        self.state = TrainerState(**trainer_state)
        self._saved_step = self.state.step
        if self.process.is_main:
            self.run.truncate_logs(self.state.step)
        self.console.print(f"resumed from step {self.state.step} (epoch {self.state.epoch + 1})")

    def save_checkpoint(self) -> None:
        """Save where training stands (every process calls it: each one's random numbers and
        carried state go into rank 0's checkpoint)."""
        own: dict[str, Any] = {"rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            own["cuda_rng"] = torch.cuda.get_rng_state_all()
        if hasattr(self.task, "state_dict"):
            own["task"] = self.task.state_dict()
        ranks = self.process.all_gather(own)
        self._saved_step = self.state.step
        if not self.process.is_main:
            return
        torch_state = {"optimizer": self.optimizer.state_dict(),
                       "schedule": self.schedule.state_dict(),
                       "scaler": self.scaler.state_dict(), **own}
        if self.process.distributed:
            torch_state["ranks"] = ranks
        self.run.save_checkpoint(self.state.step, self.model, torch_state,
                                 dataclasses.asdict(self.state), self.config.keep_last)

    # ---- the loop ----

    def train(self) -> TrainerState:
        """Train until max_epochs / max_steps / max_minutes or early stopping. SIGINT and
        SIGTERM stop at the end of a step with a checkpoint (:class:`TrainingInterrupted`)."""
        c, s = self.config, self.state
        self.model.to(self.device)
        with StopSignals(self.console) as self.signals:
            while s.epoch < c.max_epochs and not self._should_stop():
                batches = self.task.train_batches(s.epoch)
                self._train_epoch(batches)
                if s.batch_in_epoch >= len(batches):
                    s.epoch += 1
                    s.batch_in_epoch = 0
                    if c.validate_every == 0:
                        self._validate()
            if self.stop_signal:
                if self._saved_step != s.step:
                    self.save_checkpoint()
                self.console.print(f"stopped at step {s.step}; checkpoint saved: continue with "
                                   "--resume")
                raise TrainingInterrupted(self.stop_signal)
        if s.last_validated_step != s.step:
            self._validate()
        self._finalize()
        return s

    def _should_stop(self) -> bool:
        c, s = self.config, self.state
        # A signal or the clock may reach one process before the others: they agree first.
        clock_ran_out = bool(c.max_minutes) and s.train_seconds >= c.max_minutes * 60
        self.stop_signal, out_of_time = self.process.all_max(self.signals.received or 0,
                                                             int(clock_ran_out))
        if self.stop_signal or out_of_time:
            return True
        if c.max_steps and s.step >= c.max_steps:
            return True
        return bool(c.patience) and s.bad_validations >= c.patience

    def _train_epoch(self, batches: list[Any]) -> None:
        c, s = self.config, self.state
        self.model.train()
        with self._progress(len(batches)) as progress:
            bar = progress.add_task(f"epoch {s.epoch + 1}", total=len(batches),
                                    completed=s.batch_in_epoch, stats="")
            # A run with a step budget also shows its whole length, with the time left to the end
            run_bar = (progress.add_task("all steps", total=c.max_steps, completed=s.step,
                                         stats="") if c.max_steps else None)
            while s.batch_in_epoch < len(batches) and not self._should_stop():
                started = time.perf_counter()
                batch = self.task.make_batch(batches[s.batch_in_epoch], self.device)
                lr = self.schedule.apply(self.optimizer, s.step + 1)
                result = self._update(batch)
                s.step += 1
                s.batch_in_epoch += 1
                elapsed = time.perf_counter() - started
                s.train_seconds += elapsed
                s.window_seconds += elapsed
                if result is None:
                    self._skipped_update()
                else:
                    s.nonfinite_in_a_row = 0
                    s.window_nll += result[0]
                    s.window_count += result[1]
                if (line := fit_threads()) is not None:  # when other processes take cores
                    self.console.print(f"step {s.step}: {line}")
                if s.step % c.log_every == 0 or s.batch_in_epoch == len(batches):
                    progress.update(bar, stats=self._log_train(lr))
                    s.window_nll, s.window_count, s.window_seconds = 0.0, 0, 0.0
                progress.update(bar, completed=s.batch_in_epoch)
                if run_bar is not None:
                    progress.update(run_bar, completed=s.step)
                if c.validate_every and s.step % c.validate_every == 0:
                    self._validate()
                elif c.checkpoint_every and s.step % c.checkpoint_every == 0:
                    self.save_checkpoint()

    def _update(self, batch: Any) -> tuple[float, int] | None:
        """One optimizer step on one batch; returns (summed NLL, predictions made), or None
        when the loss or the gradient norm is not finite and the update was skipped."""
        with (mixed_precision(self.device, self.use_amp, training=True),
              onednn_products(self.products.onednn)):
            loss, nll, count = self.loss_module(batch, self.state.step)
        # With several processes: the whole batch's NLL and count, and whether any loss is
        # not finite (then every process skips the update)
        nll, count, nonfinite = self.process.all_sum(
            [float(nll), count, float(not bool(torch.isfinite(loss.detach())))])
        if nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        # Normalise by predictions so the learning rate does not depend on batch length (DDP
        # averages the processes' gradients: the sum over the whole batch is world_size x that).
        self.scaler.scale(loss / (max(count, 1) / self.process.world_size)).backward()
        self.scaler.unscale_(self.optimizer)
        # The norm is measured even without clipping (max_norm inf), to catch a non-finite one.
        max_norm = self.config.clip_grad_norm if self.config.clip_grad_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
            # (with float16 loss scaling, the scaler itself skips such steps and rescales)
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return nll, int(count)

    def _skipped_update(self) -> None:
        """Count an update skipped for a non-finite loss or gradient; stop after too many in
        a row, since the model has diverged."""
        c, s = self.config, self.state
        s.skipped_updates += 1
        s.nonfinite_in_a_row += 1
        self.console.print(f"step {s.step}: the loss or gradient norm is not finite; update "
                           f"skipped ({s.nonfinite_in_a_row} in a row, {s.skipped_updates} in all)")
        if s.nonfinite_in_a_row >= c.max_nonfinite_updates:
            raise UserError(
                f"training stopped at step {s.step}: {s.nonfinite_in_a_row} updates in a row "
                "had a non-finite loss or gradient norm (training.max_nonfinite_updates); the "
                "model diverged: lower training.learning_rate or set training.clip_grad_norm, "
                f"then --resume from the last checkpoint (step {self._saved_step})")

    def _log_train(self, lr: float) -> str:
        s = self.state
        loss = s.window_nll / max(s.window_count, 1)
        speed = s.window_count / max(s.window_seconds, 1e-9)
        unit = "tokens" if self.per_token else "texts"
        row = {"type": "train", "step": s.step, "epoch": s.epoch + 1, "loss": round(loss, 5)}
        if self.per_token:
            row["ppl"] = round(math.exp(min(loss, 50)), 3)
        row.update({"lr": lr, f"{unit}_per_s": round(speed, 1),
                    "train_seconds": round(s.train_seconds, 2), "precision": self.precision.name})
        if s.skipped_updates:
            row["skipped_updates"] = s.skipped_updates
        if self.process.is_main:
            self.run.append_metrics(row)
        ppl = f" ppl {row['ppl']:.2f}" if self.per_token else ""
        return f"loss {loss:.3f}{ppl} lr {lr:.2e} {speed:,.0f} {'tok' if self.per_token else 'texts'}/s"

    def _validate(self) -> None:
        s = self.state
        started = time.perf_counter()
        # rank 0 validates; every process takes its score (early stopping, plateau schedule)
        result = self.task.validate() if self.process.is_main else None
        result = Validation(self.process.broadcast(result.metrics if result else None),
                            result.examples if result else [])
        self.model.train()
        seconds = time.perf_counter() - started
        s.last_validated_step = s.step
        score = result.metrics[self.metric]
        self.schedule.after_validation(score, self.higher_is_better)
        improved = math.isfinite(score) and (s.best_score is None or (
            score > s.best_score if self.higher_is_better else score < s.best_score))
        if improved:
            s.best_score, s.best_step, s.bad_validations = score, s.step, 0
        else:
            s.bad_validations += 1
        if self.process.is_main:
            self.run.update_best(s.step, score, self.higher_is_better, self.model,
                                 self.config.keep_best)
            row = {"type": "valid", "step": s.step, "epoch": s.epoch + 1,
                   **{k: round(v, 5) for k, v in result.metrics.items()},
                   "seconds": round(seconds, 2), "best": improved}
            self.run.append_metrics(row)
            metrics = ", ".join(f"{k} {v:.3f}" if k in ("loss", "bpc") else f"{k} {v:.2f}"
                                for k, v in result.metrics.items())
            line = (f"Validation at step {s.step} (epoch {s.epoch + 1}): {metrics} "
                    f"[{seconds:.1f} s]{' *new best*' if improved else ''}")
            self.console.print(line)
            for example in result.examples:
                self.console.print(f"  {example}", markup=False, highlight=False)
            self.run.append_validation_log("\n".join([line, *result.examples, ""]))
        self.save_checkpoint()

    def _finalize(self) -> None:
        """Leave model.safetensors as the k-best average when asked (else it is the best)."""
        k = self.config.average_best
        if not self.process.is_main or k <= 1:
            return
        paths = [p for p in self.run.best_paths(k) if p.is_file()]
        if len(paths) < 2:
            return
        averaged = average_weights(paths)
        original = {k_: v.clone() for k_, v in self.model.state_dict().items()}
        self.model.load_state_dict(averaged, strict=False)
        save_weights(self.model, self.run.model_path)
        self.model.load_state_dict(original)
        self.console.print(f"model.safetensors = average of the {len(paths)} best checkpoints "
                           f"(steps {', '.join(p.stem.split('_')[1].lstrip('0') for p in paths)})")
        self.run.append_validation_log(
            json.dumps({"averaged": [p.name for p in paths]}))

    def _progress(self, total: int) -> Progress | _NoProgress:
        if not self.show_progress:
            return _NoProgress()
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )


_TRAINER_KEYS = {f.name for f in dataclasses.fields(TrainerState)}


class _TaskLoss(torch.nn.Module):
    """The task's loss as a module's forward, for DistributedDataParallel to wrap (DDP
    synchronises the gradients of what its forward computes)."""

    def __init__(self, task: TrainingTask) -> None:
        super().__init__()
        self.model = task.model  # registers the parameters
        self.task = [task]  # (in a list: not a submodule)

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.task[0].loss(batch, step)


class _NoProgress:
    """Stands in for a rich Progress when bars are off (tests, non-main ranks)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        return TaskID(0)

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass
