"""CIFAR-10 in its official *binary* layout: download, safe extraction, validation, loading.

The binary archive ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with five
training files of 10,000 records, one test file of 10,000 records and a class list. Each
record is 3,073 bytes: one label byte (0..9), then the 32x32 red, green and blue planes in
row-major order. We never touch the Python-pickle variant of the dataset: unpickling a
downloaded file runs arbitrary code.

Policy, in one place:

- A file we *download* is checked against the official MD5 (when one is given), written
  to a temporary file beside its destination, fsynced and renamed into place, so a
  crash or a failed check never leaves a half-written archive behind.
- A file we find *locally* is validated by its structure (member names, record size,
  label range, record counts), not by its checksum: the offline copy in
  ``../shared/data`` has different bytes from the official archive but the same layout.
- Archives are untrusted input: members are checked one by one (no absolute paths, no
  ``..``, no links or devices, only the exact expected names, bounded sizes) and read
  through ``extractfile``; ``tarfile.extractall`` is never used.
- A local archive in a directory we may not write to is read straight from the tar
  stream into memory (about a second for the full dataset) instead of being extracted,
  so loading from a read-only data directory works and writes nothing.

Every deliberate failure raises :class:`minivit.errors.DataError` with a one-line message
that names the URL, file or archive member at fault.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from minivit.errors import DataError
from minivit.errors import one_line as _one_line

__all__ = [
    "CLASSES", "OFFICIAL_URL", "OFFICIAL_MD5", "RECORD_BYTES", "ARCHIVE_NAME", "DIR_NAME",
    "TRAIN_FILES", "TEST_FILE", "META_FILE", "TRAIN_COUNT", "TEST_COUNT",
    "default_data_dir", "download", "extract_archive", "read_batch", "load_cifar10",
]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
OFFICIAL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
DIR_NAME = "cifar-10-batches-bin"

IMAGE_SHAPE = (32, 32, 3)                     # H, W, C after conversion to HWC
RECORD_BYTES = 1 + 32 * 32 * 3                # label byte + R, G, B planes = 3073
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
TRAIN_COUNT, TEST_COUNT = 50_000, 10_000

# The only members an archive may hold (paths relative to the archive root). Anything else
# is refused by name: a real CIFAR-10 archive has nothing else, a hostile one might.
_ALLOWED_FILES = frozenset(TRAIN_FILES + (TEST_FILE, META_FILE, "readme.html"))
# Upper bounds on member sizes: a real batch is 30.7 MB, the text files are tiny. They
# stop a decompression bomb from filling the disk before the structure check could fail.
_MAX_BATCH_BYTES = 256 * 1024 * 1024
_MAX_TEXT_BYTES = 1024 * 1024
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------
# Where data lives
# ----------------------------------------------------------------------------------------

def default_data_dir() -> Path:
    """The directory CIFAR-10 is looked for in (and downloaded to) when none is given.

    ``$MINIVIT_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/minivit``, else
    ``~/.cache/minivit``. Nothing is created here; callers create it when they write.
    """
    env = os.environ.get("MINIVIT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return _cache_dir()


def _cache_dir() -> Path:
    """The per-user cache ``default_data_dir`` falls back to without $MINIVIT_DATA_DIR."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "minivit"


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; best effort (not every OS/filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _dir_is_writable(path: Path) -> bool:
    """True if we should write into `path`.

    Besides ``os.access`` we also require a write bit in the mode: root passes
    ``os.access`` on every directory, yet a directory marked ``r-x`` (such as the shared
    offline copy) is meant to stay untouched, so we honour its mode too.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    has_write_bit = bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return path.is_dir() and has_write_bit and os.access(path, os.W_OK | os.X_OK)


# ----------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------

def download(url, dest_path, md5=None, progress=True, timeout=30.0) -> Path:
    """Download `url` to `dest_path` atomically, optionally verifying its MD5.

    The body streams into a temporary file in the destination directory (with a tqdm
    progress bar in bytes when `progress`), is checked against the ``Content-Length`` and
    `md5`, fsynced, then ``os.replace``-d into place. `timeout` (seconds) bounds each
    network operation (connect, each read), not the whole transfer.

    Returns the destination path. Raises DataError (one line naming the URL or file) on
    any failure: unreachable host, HTTP error status, timeout, a body shorter than its
    Content-Length, MD5 mismatch, or an unwritable destination. On failure no partial or
    temporary file is left behind, and an existing `dest_path` is left untouched.
    """
    # tqdm is imported lazily: it is only needed when something is actually downloaded.
    from tqdm.auto import tqdm

    dest = Path(dest_path)
    scheme = urllib.parse.urlsplit(str(url)).scheme.lower()
    if scheme not in ("http", "https"):
        raise DataError(f"download of {url!r} refused: only http(s) URLs are supported")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part",
                                        dir=dest.parent)
    except OSError as e:
        raise DataError(f"cannot write the download of {url} into {dest.parent}: "
                        f"{_one_line(e)}") from None
    tmp = Path(tmp_name)
    done = False
    try:
        hasher = hashlib.md5(usedforsecurity=False)     # integrity check, not security
        received = 0
        with os.fdopen(fd, "wb") as f:
            request = urllib.request.Request(url, headers={"User-Agent": "minivit"})
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                header = resp.headers.get("Content-Length")
                expected = int(header) if header and header.strip().isdigit() else None
                with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, disable=not progress, leave=False) as bar:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            # http.client's read(n) returns b"" on an early close instead of raising, so
            # a cut connection would look like a complete file: count the bytes ourselves.
            if expected is not None and received != expected:
                raise DataError(f"download of {url} truncated: received {received} of "
                                f"{expected} bytes")
            f.flush()
            os.fsync(f.fileno())
        if md5 is not None:
            digest = hasher.hexdigest()
            if digest != str(md5).lower():
                raise DataError(f"download of {url} failed its checksum: MD5 {digest}, "
                                f"expected {str(md5).lower()}")
        os.replace(tmp, dest)
        done = True
        _fsync_dir(dest.parent)
        return dest
    except DataError:
        raise
    except urllib.error.HTTPError as e:          # before URLError: it is a subclass
        raise DataError(f"download of {url} failed: HTTP {e.code} "
                        f"{_one_line(e.reason)}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise DataError(f"download of {url} timed out after {timeout} s") from None
        raise DataError(f"download of {url} failed: {_one_line(e.reason)}") from None
    except (socket.timeout, TimeoutError):
        raise DataError(f"download of {url} timed out after {timeout} s") from None
    except (http.client.HTTPException, OSError, ValueError) as e:
        raise DataError(f"download of {url} to {dest} failed: "
                        f"{type(e).__name__}: {_one_line(e)}") from None
    finally:
        # Runs on every failure, KeyboardInterrupt included: no *.part file survives.
        if not done:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass


# `load_cifar10` has a parameter named `download` that shadows this function; the alias
# lets the loader still call it.
_download_module_level = download


# ----------------------------------------------------------------------------------------
# Safe archive reading
# ----------------------------------------------------------------------------------------

def _check_member(member: tarfile.TarInfo, archive: Path, seen: set) -> str | None:
    """Validate one tar member; return its file name inside DIR_NAME (None for the dir).

    Raises DataError naming the member for anything but the expected directory and the
    expected regular files.
    """
    name = member.name
    where = f"archive {archive}: member {name!r}"
    # Path checks first, so a hostile name is reported as such whatever its type.
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{where} has an absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise DataError(f"{where} escapes the archive with '..'")
    if member.issym() or member.islnk():
        raise DataError(f"{where} is a link (to {member.linkname!r}); links are refused")
    if member.ischr() or member.isblk() or member.isfifo():
        raise DataError(f"{where} is a device or fifo; only regular files are allowed")
    if member.isdir():
        if name.rstrip("/") != DIR_NAME:
            raise DataError(f"{where} is an unexpected directory")
        return None
    if not member.isreg():
        raise DataError(f"{where} has an unsupported type {member.type!r}")
    prefix = DIR_NAME + "/"
    base = name[len(prefix):] if name.startswith(prefix) else None
    if base not in _ALLOWED_FILES:
        raise DataError(f"{where} is not an expected CIFAR-10 file")
    if base in seen:
        raise DataError(f"{where} appears twice")
    limit = _MAX_BATCH_BYTES if base.endswith(".bin") else _MAX_TEXT_BYTES
    if member.size > limit:
        raise DataError(f"{where} is implausibly large ({member.size} bytes)")
    seen.add(base)
    return base


def _scan_archive(archive: Path, on_file) -> None:
    """Walk a (gzipped) tar archive, validating every member before any byte is used.

    `on_file(base_name, fileobj, size)` is called for each allowed regular file, in
    archive order, with a readable file object for its bytes. Raises DataError for a
    hostile member (see `_check_member`), or a truncated or corrupt archive.
    """
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist or is not a file")
    seen: set = set()
    try:
        # "r:*" sniffs the compression (gzip for the real archive, plain tar accepted).
        # Sequential iteration keeps the gzip stream read front to back, no seeking back.
        with tarfile.open(archive, mode="r:*") as tf:
            for member in tf:
                base = _check_member(member, archive, seen)
                if base is None:
                    continue
                fileobj = tf.extractfile(member)
                on_file(base, fileobj, member.size)
            # The gzip CRC and length are only checked when the stream is read to its end;
            # tarfile stops at the end-of-archive marker, so drain the rest ourselves to
            # catch corruption or truncation in the trailing blocks.
            while tf.fileobj.read(_CHUNK):
                pass
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"archive {archive} is truncated or corrupt: "
                        f"{type(e).__name__}: {_one_line(e)}") from None


def _missing_files(present) -> list:
    """The required batch files (in canonical order) not in `present`."""
    return [name for name in TRAIN_FILES + (TEST_FILE,) if name not in present]


def extract_archive(archive_path, target_dir) -> Path:
    """Safely extract a CIFAR-10 binary archive; return the ``cifar-10-batches-bin`` dir.

    Only the directory ``cifar-10-batches-bin`` and the regular files
    ``cifar-10-batches-bin/{batches.meta.txt, data_batch_1..5.bin, test_batch.bin,
    readme.html}`` are allowed, and all six batch files must be present. The files are
    written into a temporary directory inside `target_dir` and renamed into place in one
    step, so a failure never leaves a half-extracted directory.

    Raises DataError naming the member for an absolute path, ``..``, a symlink/hardlink,
    a device/fifo or any unexpected name; naming the archive if it is truncated/corrupt or
    lacks a batch file; or if ``target_dir/cifar-10-batches-bin`` already exists.
    """
    archive = Path(archive_path)
    target = Path(target_dir)
    final = target / DIR_NAME
    if final.exists():
        raise DataError(f"cannot extract {archive}: {final} already exists "
                        f"(load from it, or remove it to extract again)")
    try:
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".cifar10-extract-", dir=target))
    except OSError as e:
        raise DataError(f"cannot extract {archive} into {target}: {_one_line(e)}") from None
    try:
        out_dir = tmp / DIR_NAME
        out_dir.mkdir()

        def write(base, fileobj, size):
            # Reading errors (corrupt gzip/tar) propagate to _scan_archive, which names the
            # archive; only errors of *writing* (disk full, permissions) are reported here.
            path = out_dir / base
            written = 0
            try:
                f = open(path, "wb")
            except OSError as e:
                raise DataError(f"cannot write {path}: {_one_line(e)}") from None
            with f:
                while True:
                    chunk = fileobj.read(_CHUNK)        # extractfile stops at member end
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:
                        raise DataError(f"cannot write {path}: {_one_line(e)}") from None
                    written += len(chunk)
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as e:
                    raise DataError(f"cannot write {path}: {_one_line(e)}") from None
            if written != size:
                raise DataError(f"archive {archive}: member {DIR_NAME}/{base} is truncated "
                                f"({written} of {size} bytes)")

        _scan_archive(archive, write)
        missing = _missing_files({p.name for p in out_dir.iterdir()})
        if missing:
            raise DataError(f"archive {archive} lacks {DIR_NAME}/{missing[0]}")
        try:
            os.rename(out_dir, final)
        except OSError as e:
            # Another process may have extracted the same archive meanwhile: use its copy.
            if final.is_dir():
                return final
            raise DataError(f"cannot move the extracted files into {final}: "
                            f"{_one_line(e)}") from None
        _fsync_dir(target)
        return final
    except OSError as e:        # disk full, permissions... while writing the members
        raise DataError(f"cannot extract {archive} into {target}: {_one_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_archive_into_memory(archive: Path) -> dict:
    """{base_name: bytes} for every allowed member of `archive` (validated as above)."""
    files: dict = {}

    def keep(base, fileobj, size):
        data = fileobj.read(size)
        if len(data) != size:
            raise DataError(f"archive {archive}: member {DIR_NAME}/{base} is truncated "
                            f"({len(data)} of {size} bytes)")
        files[base] = data

    _scan_archive(archive, keep)
    return files


# ----------------------------------------------------------------------------------------
# Records -> arrays
# ----------------------------------------------------------------------------------------

def _check_size(n_bytes: int, source: str) -> int:
    """Number of records in a batch of `n_bytes`; DataError unless a positive multiple."""
    if n_bytes <= 0 or n_bytes % RECORD_BYTES:
        raise DataError(f"{source}: size {n_bytes} bytes is not a positive multiple of "
                        f"the {RECORD_BYTES}-byte CIFAR-10 record")
    return n_bytes // RECORD_BYTES


def _decode_into(records: np.ndarray, source: str, images_out: np.ndarray,
                 labels_out: np.ndarray) -> None:
    """records: (n, 3073) uint8 -> images_out: (n, 32, 32, 3) uint8, labels_out: (n,).

    Checks labels are 0..9 (DataError naming `source`, record index and label). Writes
    straight into the caller's arrays so a full load makes one copy of the pixels.
    """
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{source}: record {i} has label {int(labels[i])}, "
                        f"expected 0..9")
    labels_out[...] = labels
    # Each record stores planes (C, H, W); the library works in (H, W, C).
    images_out[...] = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _records_from_file(path: Path, limit=None) -> np.ndarray:
    """(n, 3073) uint8 records of a batch file, n = all records or the first `limit`."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {_one_line(e)}") from None
    n = _check_size(size, str(path))
    k = n if limit is None else min(n, limit)
    try:
        with open(path, "rb") as f:
            flat = np.fromfile(f, dtype=np.uint8, count=k * RECORD_BYTES)
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {_one_line(e)}") from None
    if flat.size != k * RECORD_BYTES:        # the file shrank under us
        raise DataError(f"{path}: short read ({flat.size} of {k * RECORD_BYTES} bytes)")
    return flat.reshape(k, RECORD_BYTES)


def read_batch(path, limit=None):
    """Read one CIFAR-10 binary batch file.

    path: a ``*.bin`` file of 3,073-byte records. limit: read only the first `limit`
    records (the whole file's size is still validated).

    Returns images: (n, 32, 32, 3) uint8 (HWC, RGB) and labels: (n,) uint8.
    Raises DataError if the file is missing/unreadable, its size is not a positive
    multiple of 3,073 (naming file and size), or a label is outside 0..9 (naming file,
    record index and label).
    """
    records = _records_from_file(Path(path), limit)
    images = np.empty((records.shape[0],) + IMAGE_SHAPE, np.uint8)
    labels = np.empty(records.shape[0], np.uint8)
    _decode_into(records, str(path), images, labels)
    return images, labels


def _check_classes(text: str, source: str) -> None:
    """batches.meta.txt must list the ten CIFAR-10 classes in order (blank lines aside)."""
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if names != CLASSES:
        raise DataError(f"{source} lists classes {list(names)}, expected {list(CLASSES)}")


def _load_from_sources(sizes: dict, get_records, describe, limit_train, limit_test,
                       expected_counts) -> dict:
    """Validate the structure, then decode the (possibly limited) train and test sets.

    sizes: {file name: size in bytes} for the six batch files; get_records(name, limit)
    -> (k, 3073) uint8; describe(name) -> how messages name the file.
    """
    counts = {name: _check_size(sizes[name], describe(name)) for name in sizes}
    n_train = sum(counts[name] for name in TRAIN_FILES)
    n_test = counts[TEST_FILE]
    if expected_counts is not None:
        want_train, want_test = (int(c) for c in expected_counts)
        if n_train != want_train:
            raise DataError(f"{describe(TRAIN_FILES[0])} and the other training batches "
                            f"hold {n_train} records, expected {want_train}")
        if n_test != want_test:
            raise DataError(f"{describe(TEST_FILE)} holds {n_test} records, "
                            f"expected {want_test}")

    def decode(names, total, limit):
        k = total if limit is None else min(total, limit)
        images = np.empty((k,) + IMAGE_SHAPE, np.uint8)
        labels = np.empty(k, np.uint8)
        at = 0
        for name in names:
            if at >= k:
                break
            records = get_records(name, k - at)
            n = records.shape[0]
            _decode_into(records, describe(name), images[at:at + n], labels[at:at + n])
            at += n
        return images, labels.astype(np.int64)

    x_train, y_train = decode(TRAIN_FILES, n_train, limit_train)
    x_test, y_test = decode((TEST_FILE,), n_test, limit_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "classes": CLASSES}


def _load_dir(batch_dir: Path, limit_train, limit_test, expected_counts) -> dict:
    """Load an extracted ``cifar-10-batches-bin`` directory (see load_cifar10)."""
    missing = _missing_files({p.name for p in batch_dir.iterdir()} if batch_dir.is_dir()
                             else set())
    if missing:
        raise DataError(f"CIFAR-10 directory {batch_dir} lacks {missing[0]}")
    meta = batch_dir / META_FILE
    if meta.is_file():
        _check_classes(meta.read_text(encoding="utf-8", errors="replace"), str(meta))
    sizes = {name: (batch_dir / name).stat().st_size for name in TRAIN_FILES + (TEST_FILE,)}
    return _load_from_sources(
        sizes, lambda name, k: _records_from_file(batch_dir / name, k),
        lambda name: str(batch_dir / name), limit_train, limit_test, expected_counts)


def _load_archive_in_memory(archive: Path, limit_train, limit_test, expected_counts) -> dict:
    """Load straight from the tar stream, writing nothing (for read-only locations)."""
    files = _read_archive_into_memory(archive)
    missing = _missing_files(files)
    if missing:
        raise DataError(f"archive {archive} lacks {DIR_NAME}/{missing[0]}")
    describe = lambda name: f"{archive}:{DIR_NAME}/{name}"  # noqa: E731
    if META_FILE in files:
        _check_classes(files[META_FILE].decode("utf-8", "replace"), describe(META_FILE))
    sizes = {name: len(files[name]) for name in TRAIN_FILES + (TEST_FILE,)}

    def get_records(name, k):
        k = min(k, sizes[name] // RECORD_BYTES)
        flat = np.frombuffer(files[name], dtype=np.uint8, count=k * RECORD_BYTES)
        return flat.reshape(k, RECORD_BYTES)

    return _load_from_sources(sizes, get_records, describe, limit_train, limit_test,
                              expected_counts)


def _load_archive(archive: Path, limit_train, limit_test, expected_counts) -> dict:
    """Extract `archive` beside itself when that directory is writable, else read it in
    memory. Either way the archive is validated by structure only (no checksum)."""
    target = archive.parent
    if _dir_is_writable(target):
        batch_dir = extract_archive(archive, target)
        return _load_dir(batch_dir, limit_train, limit_test, expected_counts)
    return _load_archive_in_memory(archive, limit_train, limit_test, expected_counts)


def _check_limit(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{name} must be a non-negative int or None, got {value!r}")
    return int(value)


def load_cifar10(data_dir=None, download=True, url=OFFICIAL_URL, md5=OFFICIAL_MD5,
                 progress=True, *, limit_train=None, limit_test=None,
                 expected_counts=(TRAIN_COUNT, TEST_COUNT)) -> dict:
    """Load CIFAR-10 as uint8 arrays, finding, extracting or downloading it as needed.

    Lookup, in order, inside `data_dir` (default `default_data_dir()`):

    1. an extracted ``cifar-10-batches-bin/`` directory;
    2. an archive ``cifar-10-binary.tar.gz`` (validated by structure, no MD5: local
       copies such as the offline one differ from the official bytes). It is extracted
       beside itself if that directory is writable, otherwise read in memory;
    3. if `download`, the archive at `url` (MD5-checked against `md5`), saved into
       `data_dir` and extracted there.

    `data_dir` may also point directly at a ``cifar-10-batches-bin`` directory or at an
    archive file (an extracted directory next to that archive is then reused).

    limit_train, limit_test: keep only the first k records (fast test/notebook modes).
    expected_counts: (n_train, n_test) the files must hold, default (50000, 10000);
    None skips the count check (small synthetic archives in tests).

    Returns {"x_train": (50000, 32, 32, 3) uint8, "y_train": (50000,) int64,
             "x_test": (10000, 32, 32, 3) uint8, "y_test": (10000,) int64,
             "classes": tuple of the 10 class names}.
    Raises DataError if the data is missing (saying where it looked and how to get it),
    structurally invalid (naming the file) or cannot be downloaded.
    """
    limit_train = _check_limit(limit_train, "limit_train")
    limit_test = _check_limit(limit_test, "limit_test")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    args = (limit_train, limit_test, expected_counts)
    # A folder the user named that does not exist is a typo or a missing mount, not a
    # place to download 170 MB into: say so. Only the default cache is created.
    if not root.exists():
        if data_dir is not None:
            raise DataError(f"data folder {root} does not exist (--data-dir / data_dir: "
                            f"give a folder holding {ARCHIVE_NAME} or {DIR_NAME}/, or leave "
                            f"it unset to use $MINIVIT_DATA_DIR or the cache "
                            f"{_cache_dir()})")
        if os.environ.get("MINIVIT_DATA_DIR"):
            raise DataError(f"MINIVIT_DATA_DIR={os.environ['MINIVIT_DATA_DIR']}: the folder "
                            f"{root} does not exist (point it at a folder holding "
                            f"{ARCHIVE_NAME}, or unset it to use the cache {_cache_dir()})")

    if root.is_file():                                   # pointed at an archive
        cached = root.parent / DIR_NAME
        if cached.is_dir():
            return _load_dir(cached, *args)
        return _load_archive(root, *args)
    if root.is_dir() and (root.name == DIR_NAME or (root / TRAIN_FILES[0]).is_file()):
        return _load_dir(root, *args)                    # pointed at the batch directory
    if (root / DIR_NAME).is_dir():
        return _load_dir(root / DIR_NAME, *args)
    archive = root / ARCHIVE_NAME
    if archive.is_file():
        return _load_archive(archive, *args)
    if not download:
        raise DataError(
            f"CIFAR-10 not found: looked for {root / DIR_NAME}/ and {archive}; pass "
            f"download=True, put {ARCHIVE_NAME} (from {OFFICIAL_URL}) there, or point "
            f"--data-dir (data_dir=) or $MINIVIT_DATA_DIR at a directory that holds it")
    try:
        fetched = _download_module_level(url, archive, md5=md5, progress=progress)
    except DataError as e:
        # e.g. no network: the one-line reason, then where to put a copy instead
        raise DataError(f"CIFAR-10 not found in {root} and {e}; download {ARCHIVE_NAME} "
                        f"yourself and pass --data-dir FOLDER (data_dir=) or set "
                        f"MINIVIT_DATA_DIR=FOLDER") from None
    batch_dir = extract_archive(fetched, root)
    return _load_dir(batch_dir, *args)

