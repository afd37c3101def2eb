"""From token-id columns to padded tensor batches: length bucketing, budgets, sharding.

Token ids live in flat numpy arrays (``values`` + ``offsets``, taken zero-copy from the
Arrow table of a tokenized ``datasets.Dataset``), so a batch is gathered by slicing, not by
walking Python lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_path
from ..tokenizers import BOS_ID, EOS_ID, PAD_ID


@dataclass
class IdColumn:
    """A column of variable-length id sequences: row i is values[offsets[i]:offsets[i+1]]."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_dataset(cls, dataset: Any, name: str) -> IdColumn:
        """Take a list<int> column of a ``datasets.Dataset`` without copying row by row.

        A dataset kept in one Arrow cache file (a tokenized corpus) keeps its ids on disk: the
        flat values and offsets are written once beside that file and memory-mapped, so a
        corpus larger than memory costs a process only the pages it reads, processes on one
        machine share them, and a restart or another process finds them ready. (Arrow's own
        column is cut into record batches; joining them would copy every token into memory.)
        """
        files = dataset.cache_files
        if len(files) == 1 and dataset._indices is None and len(dataset) > 0:
            return cls._memory_mapped(dataset, name, Path(files[0]["filename"]))
        table = dataset.with_format("arrow")[:]  # zero-copy view of the memory-mapped table
        column = table.column(name).combine_chunks()
        return cls(values=column.values.to_numpy(zero_copy_only=False),
                   offsets=column.offsets.to_numpy(zero_copy_only=False))

    @classmethod
    def _memory_mapped(cls, dataset: Any, name: str, arrow_file: Path) -> IdColumn:
        values_path = arrow_file.with_name(f"{arrow_file.name}.{name}.values.npy")
        offsets_path = arrow_file.with_name(f"{arrow_file.name}.{name}.offsets.npy")
        if not (values_path.is_file() and offsets_path.is_file()):
            chunks = dataset.with_format("arrow")[:].column(name).chunks
            lengths = np.concatenate([c.value_lengths().to_numpy(zero_copy_only=False)
                                      for c in chunks]).astype(np.int64)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            with atomic_path(values_path) as tmp:
                values = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32,
                                                   shape=(int(offsets[-1]),))
                start = 0
                for chunk in chunks:  # one record batch at a time: memory stays flat
                    flat = chunk.flatten().to_numpy(zero_copy_only=False)
                    values[start: start + len(flat)] = flat
                    start += len(flat)
                values.flush()
                del values
            with atomic_path(offsets_path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, offsets, allow_pickle=False)
        return cls(values=np.load(values_path, mmap_mode="r"),
                   offsets=np.load(offsets_path, mmap_mode="r"))

    @classmethod
    def from_lists(cls, rows: list[list[int]]) -> IdColumn:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]: self.offsets[i + 1]]


def pad_rows(column: IdColumn, indices: np.ndarray, prefix: int | None = None,
             suffix: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``indices`` -> ([B, L] padded ids with optional prefix/suffix token, [B] lengths)."""
    extra = (prefix is not None) + (suffix is not None)
    starts, ends = column.offsets[indices], column.offsets[indices + 1]
    lengths = (ends - starts) + extra
    out = np.full((len(indices), int(lengths.max(initial=extra))), PAD_ID, dtype=np.int64)
    first = 1 if prefix is not None else 0
    if prefix is not None:
        out[:, 0] = prefix
    for b, (s, e) in enumerate(zip(starts, ends)):
        out[b, first: first + e - s] = column.values[s:e]
        if suffix is not None:
            out[b, first + e - s] = suffix
    return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))


@dataclass
class TranslationBatch:
    """src [B, S] ids ending in </s>; trg_input [B, T] = <s> y; trg_output [B, T] = y </s>."""

    src: torch.Tensor
    src_lengths: torch.Tensor  # [B], stays on the CPU (packing wants it there)
    trg_input: torch.Tensor | None
    trg_output: torch.Tensor | None
    indices: np.ndarray  # corpus row of each batch row

    @property
    def n_target_tokens(self) -> int:
        return 0 if self.trg_output is None else int((self.trg_output != PAD_ID).sum())

    def to(self, device: torch.device) -> TranslationBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return TranslationBatch(self.src.to(device, non_blocking=True), self.src_lengths,
                                move(self.trg_input), move(self.trg_output), self.indices)


def make_translation_batch(src: IdColumn, trg: IdColumn | None,
                           indices: np.ndarray) -> TranslationBatch:
    src_ids, src_lengths = pad_rows(src, indices, suffix=EOS_ID)
    if trg is None:
        return TranslationBatch(src_ids, src_lengths, None, None, indices)
    trg_input, _ = pad_rows(trg, indices, prefix=BOS_ID)
    trg_output, _ = pad_rows(trg, indices, suffix=EOS_ID)
    return TranslationBatch(src_ids, src_lengths, trg_input, trg_output, indices)


class BucketBatchSampler:
    """Batches of similar-length examples, reshuffled every epoch from (seed, epoch).

    Examples are sorted by length (ties broken at random per epoch), cut into batches of
    ``batch_size`` examples or, if ``batch_tokens`` > 0, of at most that many padded tokens,
    and the batches are shuffled. Every example lands in exactly one batch.

    The batches are the same for any number of processes: with ``world_size`` > 1 each batch
    is split into ``world_size`` contiguous shares and rank r takes share r, so every rank has
    the same number of batches, the ranks' shares are disjoint and cover the epoch, and one
    update of N processes sees the batch one process would. (A batch with fewer examples than
    processes is merged into the one before it.)
    """

    def __init__(self, lengths: np.ndarray, batch_size: int = 64, batch_tokens: int = 0,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 secondary_lengths: np.ndarray | None = None) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.secondary = (np.asarray(secondary_lengths, dtype=np.int64)
                          if secondary_lengths is not None else np.zeros_like(self.lengths))
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of example indices) of one epoch, for this rank."""
        rng = np.random.default_rng([self.seed, epoch])
        tie_break = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = np.lexsort((tie_break, self.secondary, self.lengths))
        batches = self._cut(order)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            batches = [np.array_split(batch, self.world_size)[self.rank]
                       for batch in _merge_small(batches, self.world_size)]
        return batches

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        if self.batch_tokens <= 0:
            return [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, start, longest = [], 0, 0
        sizes = np.maximum(self.lengths, self.secondary)[order]
        for i, size in enumerate(sizes):
            longest_with = max(longest, int(size))
            if i > start and longest_with * (i - start + 1) > self.batch_tokens:
                batches.append(order[start:i])
                start, longest_with = i, int(size)
            longest = longest_with
        if start < len(order):
            batches.append(order[start:])
        return batches


def _merge_small(batches: list[np.ndarray], least: int) -> list[np.ndarray]:
    """Merge each batch of fewer than ``least`` examples into the batch before it (or after
    it, for the first), so that every process gets a share of every batch."""
    merged: list[np.ndarray] = []
    for batch in batches:
        if merged and (len(batch) < least or len(merged[-1]) < least):
            merged[-1] = np.concatenate([merged[-1], batch])
        else:
            merged.append(batch)
    if len(merged) > 1 and len(merged[-1]) < least:  # only possible if all together are few
        merged[-2:] = [np.concatenate(merged[-2:])]
    return merged
