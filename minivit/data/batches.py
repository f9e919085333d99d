"""Mini-batches: shuffled, augmented and prefetched in a background thread.

Reproducibility contract: everything random about an epoch — the shuffle order and the
augmentation of every batch — is derived from ``(seed, epoch)`` alone (plus the batch's
position), never from state carried over from earlier epochs. A run resumed at epoch e
therefore sees exactly the batches an uninterrupted run would have seen, and
`BatchLoader.set_epoch(e, start_batch=k)` even reproduces the tail of a half-finished
epoch. The streams come from ``np.random.SeedSequence`` entropy lists with distinct tags,
so the order stream and the per-batch augmentation streams never coincide.

Prefetching: a daemon thread produces batches into a bounded queue (NumPy releases the
GIL in most of the copying and arithmetic, so augmentation overlaps with the training
step). A worker exception is re-raised in the consumer; leaving the loop early stops and
joins the worker, so no thread is left blocked on a full queue.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from minivit.errors import DataError

__all__ = ["BatchLoader", "iterate_eval"]

# Tags that keep the order stream and the augmentation streams apart (nonzero, because
# SeedSequence treats trailing zero words as absent: [s, e] and [s, e, 0] coincide).
_ORDER_TAG = 0x6F726472          # "ordr"
_AUGMENT_TAG = 0x61756772        # "augr"
_POLL_S = 0.05                   # how often a blocked worker checks the stop event


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_xy(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"x and y must have the same first dimension, got shapes "
                        f"{x.shape} and {y.shape}")
    return x, y


class _Stop:
    """Queue sentinel: the epoch is over."""


class _Failure:
    """Queue item carrying an exception raised in the worker."""

    def __init__(self, exc):
        self.exc = exc


class BatchLoader:
    """Iterate over (x, y) in mini-batches, reproducibly shuffled and augmented.

    x: (N, ...) e.g. (N, H, W, C) uint8 images; y: (N, ...) e.g. (N,) int labels.
    batch_size: B. shuffle: permute the samples each epoch. seed: int >= 0.
    transform: None or callable ``transform(x_batch, y_batch, rng) -> (x, y)`` (e.g. an
    `Augmenter`); rng is a numpy Generator private to that batch. drop_last: drop the final
    partial batch (keeps every batch the same shape). prefetch: queue depth of the worker
    thread; 0 produces batches synchronously in the consumer's thread.

    Iterating yields (xb, yb): (B, ...) arrays (the last batch may be smaller when
    drop_last=False); without transform they are copies of the selected rows.
    ``len(loader)`` is the number of batches per epoch.

    Epochs: `set_epoch(e)` chooses the epoch the next iteration plays. Each iteration
    then advances it by one, so a loop that never calls `set_epoch` still gets a fresh
    order every epoch, and one that calls it every epoch (as a resumable trainer should)
    gets exactly the epochs it asks for.
    """

    def __init__(self, x, y, batch_size, shuffle=True, seed=0, transform=None,
                 drop_last=True, prefetch=2):
        self.x, self.y = _check_xy(x, y)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.prefetch = _check_int(prefetch, "prefetch", 0)
        if transform is not None and not callable(transform):
            raise DataError(f"transform must be callable or None, got {type(transform).__name__}")
        self.shuffle = bool(shuffle)
        self.transform = transform
        self.drop_last = bool(drop_last)
        self._next_epoch = 0          # the epoch the next iteration plays
        self._start_batch = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration plays (see the class docstring)."""
        return self._next_epoch

    def set_epoch(self, epoch, start_batch=0):
        """Play epoch `epoch` next, starting at batch `start_batch` (to resume mid-epoch:
        the batches yielded are identical to batches start_batch.. of the full epoch)."""
        self._next_epoch = _check_int(epoch, "epoch", 0)
        self._start_batch = _check_int(start_batch, "start_batch", 0)

    def __len__(self):
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """(N,) int64: the sample order of `epoch` (a permutation when shuffling)."""
        n = self.x.shape[0]
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, int(epoch), _ORDER_TAG])
        return rng.permutation(n)

    def batch_rng(self, epoch, index) -> np.random.Generator:
        """The Generator handed to `transform` for batch `index` of `epoch`."""
        return np.random.default_rng([self.seed, int(epoch), _AUGMENT_TAG, int(index)])

    def _batches(self, epoch, start, stop_event=None):
        """Generate the batches of `epoch` from index `start` (runs in the worker)."""
        order = self.order(epoch)
        bs = self.batch_size
        for i in range(start, len(self)):
            if stop_event is not None and stop_event.is_set():
                return
            idx = order[i * bs:(i + 1) * bs]
            xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb, yb = self.transform(xb, yb, self.batch_rng(epoch, i))
            yield xb, yb

    def __iter__(self):
        epoch, start = self._next_epoch, self._start_batch
        # Advance now, so the next iteration plays the next epoch unless set_epoch says
        # otherwise; a resume offset applies to one iteration only.
        self._next_epoch, self._start_batch = epoch + 1, 0
        if self.prefetch == 0:
            return self._batches(epoch, start)
        return self._prefetched(epoch, start)

    def _prefetched(self, epoch, start):
        """Consume batches that a daemon thread produces into a bounded queue."""
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item):
            # A bounded put that gives up once the consumer has left, so the worker can
            # never stay blocked on a full queue nobody reads.
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for batch in self._batches(epoch, start, stop):
                    if not put(batch):
                        return
                put(_Stop)
            except BaseException as exc:      # noqa: BLE001 - handed to the consumer
                put(_Failure(exc))

        worker = threading.Thread(target=work, name=f"BatchLoader-epoch{epoch}", daemon=True)
        self._last_worker = worker            # exposed for tests and debugging
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _Stop:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            # Runs on normal end, on an exception, and on early exit (break / close() /
            # garbage collection of the generator): stop the worker, unblock it, join it.
            stop.set()
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            worker.join(timeout=5.0)


def iterate_eval(x, y, batch_size, transform=None):
    """Yield (xb, yb) over x: (N, ...), y: (N, ...) in order, last partial batch included.

    transform: None or callable ``transform(x_batch, y_batch) -> (x, y)``, called with two
    arguments: evaluation is deterministic, so no generator is passed (an
    ``Augmenter.eval()`` transform fits; a training `Augmenter` is refused by Python with
    a TypeError rather than silently randomising the evaluation).
    """
    x, y = _check_xy(x, y)
    batch_size = _check_int(batch_size, "batch_size", 1)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if transform is not None:
            xb, yb = transform(xb, yb)
        yield xb, yb
