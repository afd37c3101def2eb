"""Bucketed batching: nothing dropped or repeated, budgets respected, padding and masks right."""

import numpy as np
import pytest
import torch

from seq2seq.data.batching import BucketBatchSampler, IdColumn, make_translation_batch
from seq2seq.tokenizers import BOS_ID, EOS_ID, PAD_ID


def random_lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(1, 60, size=n)


@pytest.mark.parametrize("batch_size,batch_tokens", [(16, 0), (64, 0), (0, 500), (0, 61)])
def test_every_example_in_exactly_one_batch(batch_size, batch_tokens):
    lengths = random_lengths()
    sampler = BucketBatchSampler(lengths, batch_size=batch_size, batch_tokens=batch_tokens, seed=3)
    batches = sampler.epoch_batches(0)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        if batch_tokens:
            assert len(batch) == 1 or lengths[batch].max() * len(batch) <= batch_tokens
        else:
            assert len(batch) <= batch_size


def test_buckets_hold_similar_lengths():
    lengths = random_lengths()
    batches = BucketBatchSampler(lengths, batch_size=32, seed=0).epoch_batches(0)
    padded = sum(lengths[b].max() * len(b) for b in batches)
    assert padded / lengths.sum() < 1.05  # random batches would pad ~60 % more


def test_order_is_seeded_per_epoch():
    lengths = random_lengths()
    a = BucketBatchSampler(lengths, batch_size=32, seed=7)
    b = BucketBatchSampler(lengths, batch_size=32, seed=7)
    first = [x.tolist() for x in a.epoch_batches(0)]
    assert first == [x.tolist() for x in b.epoch_batches(0)]  # reproducible
    assert first != [x.tolist() for x in a.epoch_batches(1)]  # reshuffled each epoch
    assert first != [x.tolist() for x in BucketBatchSampler(lengths, 32, seed=8).epoch_batches(0)]


@pytest.mark.parametrize("batch_size, batch_tokens", [(10, 0), (0, 120)])
def test_ranks_share_the_batches_of_one_process(batch_size, batch_tokens):
    """Every rank gets as many batches, the shares are disjoint, they cover the epoch, and
    batch k of all ranks together is batch k of one process (the update is the same)."""
    lengths = random_lengths(999)
    single = BucketBatchSampler(lengths, batch_size, batch_tokens, seed=1).epoch_batches(0)
    shards = [BucketBatchSampler(lengths, batch_size, batch_tokens, seed=1, rank=r,
                                 world_size=3).epoch_batches(0) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert all(len(batch) > 0 for shard in shards for batch in shard)
    flat = [i for shard in shards for batch in shard for i in batch.tolist()]
    assert len(flat) == len(set(flat)) == len(lengths)
    together = [np.concatenate(parts).tolist() for parts in zip(*shards)]
    if batch_tokens == 0:  # (no batch has fewer examples than processes to merge)
        assert together == [b.tolist() for b in single]
    else:  # long examples make batches of one or two, merged with their neighbour
        owner = {i: k for k, batch in enumerate(together) for i in batch}
        assert all(len({owner[i] for i in b.tolist()}) == 1 for b in single)
        assert len(together) < len(single)


def test_a_batch_smaller_than_the_process_count_is_merged():
    lengths = np.arange(11)  # batches of 5, 5 and 1: the last one cannot feed 2 processes
    shards = [BucketBatchSampler(lengths, 5, seed=0, shuffle=False, rank=r,
                                 world_size=2).epoch_batches(0) for r in range(2)]
    assert [len(b) for b in shards[0]] == [3, 3] and [len(b) for b in shards[1]] == [2, 3]
    assert sorted(i for s in shards for b in s for i in b.tolist()) == list(range(11))


def test_translation_batch_padding_and_specials():
    src = IdColumn.from_lists([[5, 6, 7], [8], [9, 10]])
    trg = IdColumn.from_lists([[11], [12, 13, 14], []])
    batch = make_translation_batch(src, trg, np.array([0, 1, 2]))
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID],
                                  [9, 10, EOS_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [4, 2, 3]
    assert batch.trg_input.tolist() == [[BOS_ID, 11, PAD_ID, PAD_ID], [BOS_ID, 12, 13, 14],
                                        [BOS_ID, PAD_ID, PAD_ID, PAD_ID]]
    assert batch.trg_output.tolist() == [[11, EOS_ID, PAD_ID, PAD_ID], [12, 13, 14, EOS_ID],
                                         [EOS_ID, PAD_ID, PAD_ID, PAD_ID]]
    assert batch.n_target_tokens == 2 + 4 + 1
    assert batch.src.dtype == torch.int64


def test_id_column_from_dataset_matches_rows():
    import datasets

    rows = [[1, 2, 3], [], [4]]
    ds = datasets.Dataset.from_dict({"ids": rows})
    column = IdColumn.from_dataset(ds, "ids")
    assert [column.row(i).tolist() for i in range(3)] == rows
    assert column.lengths().tolist() == [3, 0, 1]
    selected = IdColumn.from_dataset(ds.select([2, 0]), "ids")
    assert [selected.row(i).tolist() for i in range(2)] == [[4], [1, 2, 3]]


def test_a_cached_corpus_keeps_its_ids_memory_mapped(tmp_path):
    """A dataset in an Arrow cache file (many record batches) gives memory-mapped ids, written
    once beside it and equal to the in-memory column; a second load reuses the files."""
    import datasets

    rows = [[int(x) for x in np.random.default_rng(i).integers(4, 50, size=i % 7)] for i in range(2500)]
    in_memory = datasets.Dataset.from_dict({"ids": rows})
    cached = in_memory.map(lambda batch: batch, batched=True, writer_batch_size=100,
                           cache_file_name=str(tmp_path / "cache.arrow"))
    assert len(cached.with_format("arrow")[:].column("ids").chunks) > 1
    column = IdColumn.from_dataset(cached, "ids")
    plain = IdColumn.from_lists(rows)
    assert isinstance(column.values, np.memmap) and isinstance(column.offsets, np.memmap)
    assert np.array_equal(column.values, plain.values)
    assert np.array_equal(column.offsets, plain.offsets)
    assert [column.row(i).tolist() for i in (0, 6, 2499)] == [rows[0], rows[6], rows[2499]]
    written = sorted(tmp_path.glob("cache.arrow.ids.*.npy"))
    stamps = [p.stat().st_mtime_ns for p in written]
    again = IdColumn.from_dataset(cached, "ids")
    assert [p.stat().st_mtime_ns for p in written] == stamps and len(written) == 2
    assert np.array_equal(again.values, plain.values)
    assert not list(tmp_path.glob(".*.tmp"))
