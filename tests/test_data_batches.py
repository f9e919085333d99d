"""BatchLoader and iterate_eval: coverage, reproducibility, worker errors, early exit."""
import gc
import threading
import time

import numpy as np
import pytest

from minivit.data.augment import Augmenter, normalize
from minivit.data.batches import BatchLoader, iterate_eval
from minivit.errors import DataError

N = 103                                        # deliberately not a multiple of the batch


def data(n=N):
    x = np.arange(n, dtype=np.int64).reshape(n, 1) * np.ones((1, 3), np.int64)
    y = np.arange(n, dtype=np.int64)           # y[i] == i identifies the sample
    return x, y


def images(n=40, seed=0):
    r = np.random.default_rng(seed)
    return r.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), r.integers(0, 10, n)


def collect(loader):
    return [(np.array(xb), np.array(yb)) for xb, yb in loader]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_sample_once_per_epoch(prefetch):
    x, y = data()
    loader = BatchLoader(x, y, batch_size=10, drop_last=False, prefetch=prefetch)
    assert len(loader) == 11
    batches = collect(loader)
    assert len(batches) == 11 and [len(b[1]) for b in batches] == [10] * 10 + [3]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(N))
    assert not np.array_equal(seen, np.arange(N))            # shuffled
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)          # x and y stay paired


def test_drop_last_and_no_shuffle():
    x, y = data()
    loader = BatchLoader(x, y, batch_size=10, shuffle=False)
    assert len(loader) == 10
    seen = np.concatenate([yb for _, yb in loader])
    np.testing.assert_array_equal(seen, np.arange(100))
    assert len(BatchLoader(x, y, batch_size=200)) == 0
    assert len(BatchLoader(x, y, batch_size=200, drop_last=False)) == 1


def test_same_seed_and_epoch_reproduce_with_transform():
    x, y = images()
    aug = Augmenter(mixup_alpha=0.5, rand_augment=(2, 9))

    def run(epoch, seed=3, prefetch=2):
        loader = BatchLoader(x, y, 8, seed=seed, transform=aug, prefetch=prefetch)
        loader.set_epoch(epoch)
        return collect(loader)

    a, b = run(5), run(5, prefetch=0)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert a[0][0].dtype == np.float32 and a[0][1].shape == (8, 10)
    assert not np.array_equal(a[0][0], run(6)[0][0])         # another epoch
    assert not np.array_equal(a[0][0], run(5, seed=4)[0][0])  # another seed


def test_different_epochs_have_different_orders():
    x, y = data()
    loader = BatchLoader(x, y, batch_size=10)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(np.concatenate([yb for _, yb in loader]))
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders[0], orders[2])


def test_epoch_advances_without_set_epoch():
    x, y = data()
    loader = BatchLoader(x, y, batch_size=10)
    first = np.concatenate([yb for _, yb in loader])
    assert loader.epoch == 1
    second = np.concatenate([yb for _, yb in loader])
    assert not np.array_equal(first, second)
    loader.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in loader]), second)


def test_resume_mid_epoch_reproduces_the_tail():
    x, y = images(64)
    aug = Augmenter(cutmix_alpha=1.0)
    full = BatchLoader(x, y, 8, seed=1, transform=aug)
    full.set_epoch(2)
    whole = collect(full)
    resumed = BatchLoader(x, y, 8, seed=1, transform=aug)
    resumed.set_epoch(2, start_batch=5)
    tail = collect(resumed)
    assert len(tail) == len(whole) - 5
    for (xa, ya), (xb, yb) in zip(whole[5:], tail, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_without_transform_yields_raw_copies():
    x, y = images(16)
    xb, yb = next(iter(BatchLoader(x, y, 4, shuffle=False)))
    assert xb.dtype == np.uint8
    np.testing.assert_array_equal(xb, x[:4])
    xb[:] = 0                                                  # a copy: x is untouched
    assert x[:4].any()


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("prefetch", [0, 2])
def test_worker_exception_propagates(prefetch):
    x, y = data()
    calls = []

    def transform(xb, yb, rng):
        calls.append(1)
        if len(calls) == 3:
            raise Boom("bad batch 2")
        return xb, yb

    loader = BatchLoader(x, y, 10, transform=transform, prefetch=prefetch)
    got = []
    with pytest.raises(Boom, match="bad batch 2"):
        for batch in loader:
            got.append(batch)
    assert len(got) == 2
    if prefetch:
        loader._last_worker.join(timeout=1.0)
        assert not loader._last_worker.is_alive()


def _wait_dead(thread, seconds=1.0):
    deadline = time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not thread.is_alive()


def test_early_break_stops_the_worker():
    x, y = data(10_000)
    before = threading.active_count()
    loader = BatchLoader(x, y, 10, prefetch=2)
    t0 = time.monotonic()
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert _wait_dead(loader._last_worker, 1.0)
    assert time.monotonic() - t0 < 1.5
    # an iterator that is abandoned without break (dropped mid-way) is cleaned up too
    it = iter(loader)
    next(it)
    worker = loader._last_worker
    del it
    gc.collect()
    assert _wait_dead(worker, 1.0)
    assert threading.active_count() <= before


def test_slow_consumer_and_blocked_worker_do_not_hang():
    # the worker fills the queue and blocks; the consumer then leaves
    x, y = data(1000)
    loader = BatchLoader(x, y, 10, prefetch=1)
    it = iter(loader)
    next(it)
    time.sleep(0.2)                                            # worker now blocked on put
    it.close()
    assert _wait_dead(loader._last_worker, 1.0)


def test_bad_arguments():
    x, y = data()
    with pytest.raises(DataError, match="batch_size"):
        BatchLoader(x, y, 0)
    with pytest.raises(DataError, match="first dimension"):
        BatchLoader(x, y[:-1], 4)
    with pytest.raises(DataError, match="epoch"):
        BatchLoader(x, y, 4).set_epoch(-1)
    with pytest.raises(DataError, match="transform"):
        BatchLoader(x, y, 4, transform="crop")


def test_iterate_eval():
    x, y = images(19)
    batches = list(iterate_eval(x, y, 8))
    assert [len(yb) for _, yb in batches] == [8, 8, 3]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    aug = Augmenter()
    out = list(iterate_eval(x, y, 8, aug.eval()))
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in out]), normalize(x))
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in out]), y)
    with pytest.raises(TypeError):                     # a training transform needs an rng
        list(iterate_eval(x, y, 8, aug))
