"""Data-parallel training over MPI (``mpirun -n K minivit train ...``).

The paper trained its models data-parallel at batch 4,096 (§4.1). Here every one of the K
ranks (processes) holds the same model, built from the same seed, and sees the same global
batch of B images in the same order a single process would; rank r trains on the r-th of K
equal shards of it (B/K images). After each backward pass the gradients are averaged with
one buffer-based ``Allreduce`` per contiguous bucket (no pickling), so every rank holds

    g = (1/K) Σ_r g_r,   g_r = ∇ (1/(B/K)) Σ_{b in shard r} ℓ_b   =  ∇ (1/B) Σ_b ℓ_b,

the gradient of the global-batch mean loss, and takes the identical optimizer step.
Clipping therefore sees the global gradient norm, the reported loss and accuracy are
global sums, and rank 0 alone prints, writes ``metrics.jsonl``, checkpoints and plots; a
checkpoint does not depend on K, so ``--resume`` works at any K.

Failure handling: each rank's work between two collectives runs inside :meth:`guard`;
leaving it, the ranks agree (a small non-blocking ``Iallreduce`` of one status flag per
rank) on whether anyone raised. If one did, every rank raises the same
:class:`RankFailure` ("rank 1 of 2 failed at epoch 1, batch 3: ...") and the job ends
cleanly, rank 0 printing that one line. Every wait has a deadline (``MINIVIT_MPI_TIMEOUT``
seconds, default 300): a rank that died or hangs makes the others print one line and end
the job with ``MPI_Abort``. The last checkpoint is never touched by a failing step.

Without ``mpirun`` (or with K = 1) :func:`current` returns a :class:`Communicator` whose
methods do nothing, and mpi4py is never imported.
"""
from __future__ import annotations

import os
import sys
import time
import zlib
from contextlib import contextmanager

import numpy as np

from .errors import ConfigError, TrainingError

TIMEOUT_ENV = "MINIVIT_MPI_TIMEOUT"       # seconds a rank waits for the others
FAULT_ENV = "MINIVIT_MPI_FAULT"           # test hook: "RANK:STEP[:raise|hang|exit]"
DEFAULT_TIMEOUT = 300.0
JOB_AGREE_S = 10.0                        # job(): how long ranks wait for each other's error
ABORT_GRACE_S = 1.0                       # _abort(): time for the launcher to forward the line
BUCKET_BYTES = 64 << 20                   # gradient bucket size (one Allreduce each)
_CAUSE_BYTES = 400                        # room for one failing rank's one-line cause
# environment variables the common launchers set in every rank they start
_LAUNCHER_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE",
                 "MPI_LOCALNRANKS")


class RankFailure(TrainingError):
    """A rank of an MPI job failed; raised on every rank (each knows who and why)."""


class LaunchError(ConfigError):
    """The launch cannot work (e.g. the batch does not split into K equal shards);
    every rank finds it identically, so rank 0 alone reports it."""


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _cause(exc: BaseException) -> str:
    """One-line description of an exception: the message of our own errors, type and
    message of anything else (a bug, a MemoryError, ...)."""
    from .errors import MinivitError
    msg = _one_line(exc)
    if isinstance(exc, MinivitError) and msg:
        return msg
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def launched_under_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpirun/mpiexec/srun with
    PMI), or ``MINIVIT_MPI=1`` asks for MPI explicitly."""
    if os.environ.get("MINIVIT_MPI", "") == "1":
        return True
    return any(k in os.environ for k in _LAUNCHER_ENV)


class Communicator:
    """The single-process communicator (K = 1): every collective is the identity.

    The MPI subclass overrides each method; the training loop calls the same methods
    whether it runs alone or as one of K ranks.
    """

    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints, logs, checkpoints and plots."""
        return self.rank == 0

    # --------------------------------------------------------------- launch checks
    def check_launch(self, batch_size: int, refuse: str | None = None):
        """Refuse a global batch that does not split into ``size`` equal shards (equal
        shards make the mean of the K shard means the global mean, with any label
        smoothing or soft mixup targets), and, with K > 1, an objective whose batch
        cannot be split (``refuse``: why not). Raises LaunchError (identical on every
        rank)."""
        K = self.size
        if K > 1 and refuse:
            raise LaunchError(f"{refuse}; it cannot train data-parallel over {K} MPI "
                              f"ranks: run it as one process")
        if batch_size < K:
            raise LaunchError(f"batch size {batch_size} is smaller than the {K} MPI ranks: "
                              f"each rank needs at least one image (use -n <= {batch_size})")
        if batch_size % K:
            raise LaunchError(f"batch size {batch_size} does not split into {K} equal "
                              f"shards (one per MPI rank); use a batch size divisible by {K}")

    def setup(self, batch_size: int, backend: str, fingerprint=(), refuse: str | None = None):
        """Call once before building the model: checks the launch (``refuse``: see
        :meth:`check_launch`), gives each rank its own GPU for the cuda backend, and
        checks that every rank got the same run (same settings, data and resumed state:
        ``fingerprint``, any JSON-able/bytes values)."""
        self.check_launch(batch_size, refuse)

    def logger(self, log):
        """``log`` on rank 0, a no-op on the other ranks."""
        return log if self.is_root else (lambda *a, **k: None)

    # --------------------------------------------------------------- the step
    @contextmanager
    def guard(self, where: str, step: int | None = None):
        """Run local work that may raise; under MPI the ranks agree afterwards on whether
        any of them failed (see the module docstring). ``where`` names the place in the
        failure message, ``step`` is the optimizer step (for the fault-injection hook)."""
        yield

    def shard(self, images, labels):
        """images: (B, H, W, C), labels: (B,) or (B, classes) → this rank's contiguous
        shard (B/K, ...) of the global batch."""
        return images, labels

    def shard_start(self, batch: int) -> int:
        """The index in a global batch of ``batch`` images of this rank's first one."""
        return 0

    def allreduce_grads(self, be, grads: dict) -> dict:
        """Average the gradients of all ranks in place: g ← (1/K) Σ_r g_r. grads: name →
        backend array (host or device); returns grads."""
        return grads

    def step_totals(self, loss: float, correct: int | None, n: int, signum=None):
        """Global step statistics from each rank's (mean loss over its n images, number
        correct (None: not counted), n, a stop signal or None) → (global mean loss,
        total correct, total n, a stop signal received by any rank or None)."""
        return loss, correct, n, signum

    def agree_signal(self, signum):
        """A stop signal (SIGINT/SIGTERM number) received by any rank, or None: all ranks
        then stop at the same step."""
        return signum

    def evaluate(self, evaluate_fn, model, x, y, *args):
        """Evaluate ``evaluate_fn(model, x, y, *args)`` (→ {"loss", "acc"}, means over
        the images) on the test set, each rank on a contiguous slice. Returns {"loss":
        mean loss, "acc": accuracy} over all of (x: (n, H, W, C), y: (n,))."""
        ev = evaluate_fn(model, x, y, *args)
        return {"loss": ev["loss"], "acc": ev["acc"]}

    def on_root(self, fn, *args, where="writing outputs", **kwargs):
        """Run ``fn(*args, **kwargs)`` on rank 0 only (checkpoints, logs, plots); the other
        ranks learn whether it failed. Returns fn's result on rank 0, None elsewhere."""
        return fn(*args, **kwargs)

    def check_in_sync(self, be, params: dict, where: str):
        """Check that every rank holds the same parameters (a checksum comparison)."""

    @contextmanager
    def job(self):
        """Scope of a whole MPI job, for the command line: an error that every rank
        raises (a bad flag, a bad launch, an agreed RankFailure) is re-raised on rank 0
        alone, for it to print; the other ranks exit silently with status 2. An error on
        one rank only is reported in one line that names the rank, and ends every rank
        (MPI_Abort)."""
        yield


class MPICommunicator(Communicator):
    """K > 1 ranks of ``MPI.COMM_WORLD`` (or another mpi4py communicator)."""

    def __init__(self, comm, timeout: float | None = None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        node.Free()
        if timeout is None:
            text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
            try:
                timeout = float(text)
            except ValueError:
                raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
        if not timeout > 0:
            raise ConfigError(f"{TIMEOUT_ENV} must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self._fault = self._parse_fault(os.environ.get(FAULT_ENV))
        self._buffers: dict = {}
        self._errcomm = comm.Dup()            # for job(): failures outside any guard

    # --------------------------------------------------------------- waiting
    def _wait(self, requests, where):
        """Complete non-blocking requests, or report and abort after the deadline.

        Sleeping between polls (50 µs growing to 1 ms) hands the core to a rank still
        computing on an over-subscribed machine, where MPICH's busy wait would steal it.
        Non-root ranks wait one second longer, so a live rank 0 reports first."""
        deadline = time.monotonic() + self.timeout + (0.0 if self.is_root else 1.0)
        pause = 5e-5
        while not self.MPI.Request.Testall(requests):
            if time.monotonic() > deadline:
                others = f"rank {1 - self.rank}" if self.size == 2 else "another rank"
                self._abort(f"{others} did not reach {where} within {self.timeout:g} s "
                            f"(it died or hangs; {TIMEOUT_ENV} sets the limit)", code=3)
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)

    def _abort(self, message, code=2):
        """Print one line naming this rank, then end every rank of the job."""
        print(f"minivit: error: rank {self.rank} of {self.size}: {message}; "
              f"aborting the MPI job", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # The launcher forwards a rank's output asynchronously, and MPI_Abort tears the
        # job down at once: without a pause the line still sitting in the pipe to
        # MPICH's proxy was lost about one time in six (tests/test_mpi.py).
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)
        # Should MPI_Abort return, job()'s polling loop would come back here: the line
        # once appeared twice in a test run, which this would explain (not confirmed).
        # Never return into the caller's loop.
        os._exit(code)

    def _allreduce(self, buf, where, op=None):
        """In-place non-blocking Allreduce of a contiguous numpy buffer, with deadline."""
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=op or self.MPI.SUM)
        self._wait([req], where)
        return buf

    # --------------------------------------------------------------- agreement
    @staticmethod
    def _parse_fault(spec):
        if not spec:
            return None
        parts = spec.split(":")
        try:
            rank, step = int(parts[0]), int(parts[1])
            mode = parts[2] if len(parts) > 2 else "raise"
        except (ValueError, IndexError):
            raise ConfigError(f"{FAULT_ENV} must be RANK:STEP[:raise|hang|exit], got {spec!r}") from None
        if mode not in ("raise", "hang", "exit"):
            raise ConfigError(f"{FAULT_ENV} mode must be raise, hang or exit, got {mode!r}")
        return rank, step, mode

    def _inject(self, step):
        """The fault-injection test hook: fail on purpose at optimizer step ``step``."""
        if self._fault is None or step is None:
            return
        rank, at, mode = self._fault
        if rank != self.rank or at != step:
            return
        if mode == "exit":                   # a crash: no cleanup, no message
            os._exit(17)
        if mode == "hang":
            while True:
                time.sleep(1)
        raise RuntimeError(f"injected failure ({FAULT_ENV}) at step {step}")

    def _agree(self, where, exc):
        """All ranks learn who failed, and why; raise RankFailure on every rank if any
        did. Collective: every rank must call it at the same point."""
        status = np.zeros(self.size, dtype=np.int32)
        status[self.rank] = 1 if exc is not None else 0
        self._allreduce(status, where)
        if not status.any():
            return
        causes = np.zeros((self.size, _CAUSE_BYTES), dtype=np.uint8)
        mine = (_cause(exc) if exc is not None else "").encode("utf-8", "replace")[:_CAUSE_BYTES]
        causes[self.rank, :len(mine)] = np.frombuffer(mine, dtype=np.uint8)
        self._allreduce(causes, where)      # each row written by one rank: a gather
        text = [bytes(row).rstrip(b"\0").decode("utf-8", "replace") for row in causes]
        failed = [int(r) for r in np.flatnonzero(status)]
        if len(failed) == self.size and len(set(text)) == 1:
            msg = f"every rank failed at {where}: {text[0]}"
        else:
            r = failed[0]
            more = (f" (also rank{'s' if len(failed) > 2 else ''} "
                    f"{', '.join(map(str, failed[1:]))})" if len(failed) > 1 else "")
            msg = f"rank {r} of {self.size} failed at {where}: {text[r]}{more}"
        err = RankFailure(msg)
        err.ranks = failed
        raise err from exc

    @contextmanager
    def guard(self, where: str, step: int | None = None):
        exc = None
        try:
            self._inject(step)
            yield
        except Exception as e:               # KeyboardInterrupt etc. pass through
            exc = e
        self._agree(where, exc)

    # --------------------------------------------------------------- launch and setup
    def setup(self, batch_size, backend, fingerprint=(), refuse=None):
        self.check_launch(batch_size, refuse)
        if backend == "cuda":
            self._select_gpu()
        # every rank must run the same job: same settings, data, resumed state. A 64-bit
        # digest compared with MIN and MAX Allreduces (a mismatch names the first rank
        # that differs from rank 0).
        h = 0
        for part in fingerprint:
            data = part if isinstance(part, (bytes, bytearray, memoryview)) else repr(part).encode()
            h = zlib.crc32(data, h)
        digests = np.zeros(self.size, dtype=np.int64)
        digests[self.rank] = h
        self._allreduce(digests, "setup")
        differ = [r for r in range(self.size) if digests[r] != digests[0]]
        if differ:
            raise LaunchError(f"rank {differ[0]} of {self.size} was started with other "
                              f"settings, data or checkpoint than rank 0; every rank must "
                              f"run the same command on the same files")

    def _select_gpu(self):
        """One GPU per rank on each machine: local rank i takes GPU i mod (GPUs here).
        Must run before the cuda backend creates its context."""
        from numba import cuda
        n = len(cuda.gpus)
        if n == 0:
            raise LaunchError(f"rank {self.rank}: the cuda backend found no GPU")
        cuda.select_device(self.local_rank % n)

    # --------------------------------------------------------------- the step
    def shard(self, images, labels):
        start, n = self.shard_start(len(images)), len(images) // self.size
        return images[start:start + n], labels[start:start + n]

    def shard_start(self, batch):
        return self.rank * (batch // self.size)

    def _bucket(self, dtype, n):
        key = (np.dtype(dtype).str, n)
        if key not in self._buffers:
            self._buffers = {key: np.empty(n, dtype=dtype)}     # keep one size alive
        return self._buffers[key]

    def allreduce_grads(self, be, grads):
        names = list(grads)
        host = [be.to_host(grads[k]) for k in names]   # device → host staging (cuda)
        dtype = host[0].dtype
        if dtype not in (np.float32, np.float64) or any(h.dtype != dtype for h in host):
            raise TrainingError(f"gradients must all be float32 or all float64, got "
                                f"{sorted({str(h.dtype) for h in host})}")
        total = sum(h.size for h in host)
        flat = self._bucket(dtype, total)
        offsets, o = [], 0
        for h in host:                                   # pack into one contiguous buffer
            flat[o:o + h.size] = h.ravel()
            offsets.append(o)
            o += h.size
        # buckets of at most BUCKET_BYTES, all in flight at once (overlap on the wire)
        step = max(1, BUCKET_BYTES // dtype.itemsize)
        reqs = [self.comm.Iallreduce(self.MPI.IN_PLACE, flat[i:i + step], op=self.MPI.SUM)
                for i in range(0, total, step)]
        self._wait(reqs, "the gradient all-reduce")
        flat /= self.size                                # Σ_r g_r / K: the global mean
        for k, h, o in zip(names, host, offsets):
            view = flat[o:o + h.size].reshape(h.shape)
            g = grads[k]
            if isinstance(g, np.ndarray):
                np.copyto(g, view)
            elif hasattr(g, "copy_to_device"):           # numba.cuda device array
                g.copy_to_device(np.ascontiguousarray(view))
            else:
                grads[k] = be.asarray(view, dtype=dtype)
        return grads

    def step_totals(self, loss, correct, n, signum=None):
        # one float64 vector: [Σ loss·n, Σ correct, Σ n, one signal slot per rank]
        v = np.zeros(3 + self.size)
        v[:3] = (loss * n, correct or 0, n)
        v[3 + self.rank] = signum or 0
        self._allreduce(v, "the step statistics")
        sig = int(v[3:].max())
        return float(v[0] / v[2]), int(v[1]), int(v[2]), (sig or None)

    def agree_signal(self, signum):
        return self.step_totals(0.0, 0, 1, signum)[3]

    def evaluate(self, evaluate_fn, model, x, y, *args):
        n = len(y)
        lo, hi = self.rank * n // self.size, (self.rank + 1) * n // self.size
        v = np.zeros(3)
        with self.guard("evaluation"):
            if hi > lo:
                ev = evaluate_fn(model, x[lo:hi], y[lo:hi], *args)
                v[:] = (ev["loss"] * (hi - lo), ev["acc"] * (hi - lo), hi - lo)
        self._allreduce(v, "evaluation")
        return {"loss": float(v[0] / v[2]), "acc": float(round(v[1]) / v[2])}

    def on_root(self, fn, *args, where="writing outputs", **kwargs):
        out = None
        with self.guard(where):
            if self.is_root:
                out = fn(*args, **kwargs)
        return out

    def check_in_sync(self, be, params, where):
        # crc32 of every parameter's bytes: equal on all ranks iff bitwise equal
        # (up to hash collisions); MIN and MAX of the digests must agree
        h = 0
        for p in params.values():
            h = zlib.crc32(np.ascontiguousarray(be.to_host(p)).tobytes(), h)
        d = np.array([h, -h], dtype=np.int64)
        self._allreduce(d, where, op=self.MPI.MAX)
        if d[0] != -d[1]:
            raise RankFailure(f"the ranks' parameters differ at {where} (the all-reduce "
                              f"should keep them bitwise equal); stopping")

    @contextmanager
    def job(self):
        try:
            yield
        except SystemExit:
            raise
        except BaseException as e:
            # Did every rank fail here (a bad flag, a bad launch, an agreed RankFailure)?
            # Ask on a separate communicator, so the question cannot be mistaken for a
            # collective the other ranks are in the middle of; a short deadline, since
            # ranks that fail alike fail within moments of each other.
            flag = np.ones(1, dtype=np.int32)
            req = self._errcomm.Iallreduce(self.MPI.IN_PLACE, flag, op=self.MPI.SUM)
            deadline = time.monotonic() + min(self.timeout, JOB_AGREE_S)
            while not req.Test():
                if time.monotonic() > deadline:
                    # this rank alone failed: it alone knows why; say so, end the job
                    self._abort("interrupted" if isinstance(e, KeyboardInterrupt)
                                else _cause(e))
                time.sleep(1e-3)
            if self.is_root:
                raise                         # the command line prints the one line
            raise SystemExit(130 if isinstance(e, KeyboardInterrupt) else 2) from None


_current: Communicator | None = None


def current() -> Communicator:
    """The communicator of this process: MPI.COMM_WORLD when started by an MPI launcher
    with more than one rank, else the single-process :class:`Communicator`. Created once."""
    global _current
    if _current is None:
        _current = Communicator()
        if launched_under_mpi():
            try:
                from mpi4py import MPI
            except ImportError:
                raise ConfigError("started by an MPI launcher, but mpi4py is not installed: "
                                  "pip install 'minivit[mpi]'") from None
            if MPI.COMM_WORLD.Get_size() > 1:
                _current = MPICommunicator(MPI.COMM_WORLD)
    return _current


def use(comm: Communicator | None):
    """Make ``comm`` the communicator :func:`current` returns (None: detect again). For
    running on a sub-communicator, and for tests."""
    global _current
    _current = comm


def allreduce_bytes(num_params: int, dtype="float32") -> int:
    """Bytes one rank contributes to the gradient all-reduce per optimizer step."""
    return int(num_params) * np.dtype(dtype).itemsize


def ring_allreduce_seconds(nbytes: float, workers: int, bandwidth_bytes_s: float,
                           latency_s: float) -> float:
    """Alpha-beta model of a ring all-reduce (reduce-scatter + all-gather):
    t = 2(K−1)·α + 2(K−1)/K · n/β, for n bytes on K workers, link bandwidth β (bytes/s)
    and per-message latency α (s). (Patarasuk & Yuan 2009; Thakur et al. 2005.)"""
    K = workers
    if K <= 1:
        return 0.0
    return 2 * (K - 1) * latency_s + 2 * (K - 1) / K * nbytes / bandwidth_bytes_s
