"""Gradient flow through time: how strongly the loss reaches back to each input position.

For a batch of long sequences we take the gradient of the loss with respect to the embedded
input at every time step, ||dL/dx_t||, and average it over the batch. A plain RNN's curve falls
steeply with distance from where the loss is measured (vanishing gradients); the gates of GRU
and LSTM keep it much flatter. The same measurement on freshly initialised models of each
cell type (same sizes, same data) puts the user's model beside the textbook picture, and the
parameters' total gradient norm against ``training.clip_grad_norm`` shows how often clipping
would step in (it rescales every time step by the same factor: it tames exploding gradients,
it does not bring vanishing ones back).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..config import Cell, Config

if TYPE_CHECKING:
    from pathlib import Path

    from .document import Document

CELLS: tuple[Cell, ...] = ("rnn", "gru", "lstm")


@dataclass
class Probe:
    """One model set up for measurement: which module embeds the inputs, how to get the loss."""

    model: torch.nn.Module
    embedding: torch.nn.Module  # its (first) output per forward pass is x_t
    loss: Callable[[torch.nn.Module], torch.Tensor]  # runs the model on a fixed batch
    mask: torch.Tensor  # [B, T] True at real input positions


@dataclass
class GradientFlow:
    label: str
    norms: list[float]  # per input position: mean over sequences reaching it of ||dL/dx_t||
    total_norm: float  # the parameters' gradient norm for this batch
    clip_factor: float  # what clipping to training.clip_grad_norm multiplies gradients by

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure(probe: Probe, label: str, clip: float) -> GradientFlow:
    """||dL/dx_t|| per position t for the probe's batch (dropout off, weights untouched)."""
    model = probe.model
    was_training = model.training
    model.eval()
    captured: list[torch.Tensor] = []

    def keep_first_output(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if not captured:  # a shared source/target embedding also embeds the target later
            output.retain_grad()
            captured.append(output)

    handle = probe.embedding.register_forward_hook(keep_first_output)
    try:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad(), _cudnn_off(probe.mask.device):
            loss = probe.loss(model)
            loss.backward()
    finally:
        handle.remove()
        model.train(was_training)
    gradient = captured[0].grad
    assert gradient is not None  # the hook retained it and the loss reached it
    grads = gradient.float()  # [B, T, E]
    norms = grads.norm(dim=-1) * probe.mask
    counts = probe.mask.sum(0).clamp(min=1)
    per_step = (norms.sum(0) / counts).cpu().numpy()
    total = float(torch.sqrt(sum(((p.grad.float() ** 2).sum() for p in model.parameters()
                                  if p.grad is not None), torch.tensor(0.0))))
    model.zero_grad(set_to_none=True)
    factor = min(1.0, clip / total) if clip > 0 and total > 0 else 1.0
    return GradientFlow(label, [_significant(v) for v in per_step], _significant(total),
                        _significant(factor))


def _significant(value: float, digits: int = 6) -> float:
    """Round to significant digits: gradient norms span many orders of magnitude."""
    return float(f"{float(value):.{digits}g}")


def compare_cells(config: Config, trained: Probe, build_probe: Callable[[Config], Probe]
                  ) -> list[GradientFlow]:
    """The trained model, then a freshly initialised model of every cell type (same seed)."""
    clip = config.training.clip_grad_norm
    cell = config.model.encoder.cell
    flows = [measure(trained, f"your model ({cell}, trained)", clip)]
    for other in CELLS:
        fresh = with_cell(config, other)
        torch.manual_seed(config.training.seed)
        flows.append(measure(build_probe(fresh), f"{other}, untrained", clip))
    return flows


def with_cell(config: Config, cell: Cell) -> Config:
    """A copy of ``config`` whose encoder (and decoder) use ``cell``."""
    model = dataclasses.replace(
        config.model, encoder=dataclasses.replace(config.model.encoder, cell=cell),
        decoder=dataclasses.replace(config.model.decoder, cell=cell))
    return dataclasses.replace(config, model=model)


@contextlib.contextmanager
def _cudnn_off(device: torch.device) -> Iterator[None]:
    """cuDNN cannot run an RNN backward pass in eval mode; the native kernels can."""
    if device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        yield


def flow_figure(flows: list[GradientFlow], position_name: str) -> bytes:
    from . import plots

    series = {}
    for flow in flows:
        norms = np.asarray(flow.norms)
        steps = np.arange(1, len(norms) + 1)
        positive = norms > 0
        series[flow.label] = (steps[positive], norms[positive])
    return plots.lines(series, "Gradient flow through time",
                       f"{position_name} (input position)", "mean ||dL/dx_t|| (log scale)",
                       log_y=True)


def flow_section(doc: Document, flows: list[GradientFlow], position_name: str, where_loss: str,
                 clip: float) -> None:
    """Add the gradient-flow figure and table to a report."""
    doc.heading("Gradient flow through time")
    doc.text(f"The norm of the loss gradient with respect to the embedded input at each "
             f"{position_name}, averaged over {where_loss}. A curve that falls by orders of "
             "magnitude means the loss barely reaches those positions (vanishing gradients).")
    doc.figure("gradient_flow", flow_figure(flows, position_name),
               "Gradient norm per input position, for your model and for freshly initialised "
               "models of each cell type with the same sizes (log scale).")
    rows = []
    for flow in flows:
        norms = [v for v in flow.norms if v > 0]
        ratio = norms[0] / norms[-1] if norms and norms[-1] > 0 else float("nan")
        rows.append([flow.label, f"{norms[0]:.3g}" if norms else "-",
                     f"{norms[-1]:.3g}" if norms else "-", f"{ratio:.3g}",
                     f"{flow.total_norm:.3g}",
                     f"x{flow.clip_factor:.3g}" if clip > 0 else "no clipping"])
    doc.table(["model", "first position", "last position", "first / last",
               "parameter gradient norm", f"clipping to {clip:g}"], rows)


def write_diagnosis(directory: Path, run_path: Path, flows: list[GradientFlow], position_name: str,
                    where_loss: str, clip: float, described: str) -> dict[str, Any]:
    """``seq2seq diagnose``'s own small report: the figure, the table, and metrics.json."""
    from .document import Document

    doc = Document(f"Gradient flow through time: {run_path}")
    doc.text(f"Data: {described}.")
    flow_section(doc, flows, position_name, where_loss, clip)
    metrics = {"run": str(run_path), "data": described, "position": position_name,
               "clip_grad_norm": clip, "gradient_flow": [f.as_dict() for f in flows]}
    doc.write(directory, metrics)
    return metrics


def print_flows(flows: list[GradientFlow], echo: Callable[[str], None]) -> None:
    """A few positions of each curve, as plain text for the terminal."""
    width = len(flows[0].norms)
    picks = sorted({0, width // 4, width // 2, (3 * width) // 4, width - 1})
    echo("model".ljust(28) + "".join(f"t={t + 1}".rjust(11) for t in picks) + "   grad norm")
    for flow in flows:
        echo(flow.label.ljust(28) + "".join(f"{flow.norms[t]:11.3g}" for t in picks)
             + f"   {flow.total_norm:9.3g}")
