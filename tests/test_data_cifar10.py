"""CIFAR-10 loading: record layout, lookup order, hostile archives, downloads.

Small synthetic archives (20 records per batch file) stand in for the real one; the
record-count check is relaxed with ``expected_counts=None`` or small counts. Downloads go
to a local http.server on 127.0.0.1. One test loads the real offline copy when present.
"""
import hashlib
import http.server
import io
import os
import socket
import stat
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minivit.data.cifar10 import (
    ARCHIVE_NAME, CLASSES, DIR_NAME, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
    default_data_dir, download, extract_archive, load_cifar10, read_batch,
)
from minivit.errors import DataError

N = 20                                    # records per synthetic batch file
SMALL = (5 * N, N)                        # expected (train, test) counts of the fake set
REAL_ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / ARCHIVE_NAME


# ----------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------

def make_records(rng, n=N):
    """(labels (n,), images in file layout (n, 3, 32, 32)) and the file bytes."""
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = np.concatenate([labels[:, None], planes.reshape(n, -1)], axis=1).tobytes()
    return labels, planes, raw


def make_files(seed=0):
    """{base name: bytes} for a complete small dataset, plus the expected arrays."""
    rng = np.random.default_rng(seed)
    files, parts = {}, {}
    for name in TRAIN_FILES + (TEST_FILE,):
        labels, planes, raw = make_records(rng)
        files[name] = raw
        parts[name] = (planes.transpose(0, 2, 3, 1), labels.astype(np.int64))
    files[META_FILE] = ("\n".join(CLASSES) + "\n\n").encode()
    expected = {
        "x_train": np.concatenate([parts[n][0] for n in TRAIN_FILES]),
        "y_train": np.concatenate([parts[n][1] for n in TRAIN_FILES]),
        "x_test": parts[TEST_FILE][0], "y_test": parts[TEST_FILE][1],
    }
    return files, expected


def write_dir(root, files):
    d = Path(root) / DIR_NAME
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def write_tar(path, files, extra=(), with_dir=True):
    """A gzipped tar of `files` under DIR_NAME/, plus raw TarInfo members in `extra`
    (pairs of (TarInfo, bytes or None))."""
    with tarfile.open(path, "w:gz") as tf:
        if with_dir:
            info = tarfile.TarInfo(DIR_NAME)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{DIR_NAME}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return Path(path)


def assert_same(d, expected):
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(d[key], expected[key], err_msg=key)
    assert d["x_train"].dtype == np.uint8 and d["x_test"].dtype == np.uint8
    assert d["y_train"].dtype == np.int64 and d["y_test"].dtype == np.int64
    assert d["classes"] == CLASSES


def listing(root):
    """Every path under root (relative), to prove nothing was left behind."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


@pytest.fixture(scope="module")
def fake():
    return make_files()


@pytest.fixture(scope="module")
def fake_archive_bytes(fake, tmp_path_factory):
    path = write_tar(tmp_path_factory.mktemp("arc") / ARCHIVE_NAME, fake[0])
    return path.read_bytes()


# ----------------------------------------------------------------------------------------
# Record layout and read_batch
# ----------------------------------------------------------------------------------------

def test_record_layout_is_label_then_rgb_planes(tmp_path):
    planes = np.arange(3 * 32 * 32, dtype=np.int64).reshape(3, 32, 32) % 251
    record = np.concatenate([[7], planes.ravel()]).astype(np.uint8)
    path = tmp_path / "one.bin"
    path.write_bytes(record.tobytes())
    images, labels = read_batch(path)
    assert RECORD_BYTES == 3073
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [7] and labels.dtype == np.uint8
    # pixel (row h, column w) of channel c sits at offset 1 + c*1024 + h*32 + w
    for h, w, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (31, 31, 2), (5, 17, 1)]:
        assert images[0, h, w, c] == record[1 + c * 1024 + h * 32 + w]


def test_read_batch_limit_reads_prefix(tmp_path, fake):
    path = tmp_path / "b.bin"
    path.write_bytes(fake[0][TRAIN_FILES[0]])
    full_x, full_y = read_batch(path)
    x, y = read_batch(path, limit=3)
    np.testing.assert_array_equal(x, full_x[:3])
    np.testing.assert_array_equal(y, full_y[:3])


@pytest.mark.parametrize("size", [0, 3072, 3074, 2 * 3073 + 1])
def test_read_batch_wrong_size(tmp_path, size):
    path = tmp_path / "bad_size.bin"
    path.write_bytes(bytes(size))
    with pytest.raises(DataError, match=rf"bad_size\.bin.*size {size} bytes"):
        read_batch(path)


def test_read_batch_label_out_of_range(tmp_path):
    rng = np.random.default_rng(1)
    _, _, raw = make_records(rng, 5)
    raw = bytearray(raw)
    raw[3 * RECORD_BYTES] = 10                           # label byte of record 3
    path = tmp_path / "bad_label.bin"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bad_label\.bin: record 3 has label 10"):
        read_batch(path)


def test_read_batch_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.bin"):
        read_batch(tmp_path / "nope.bin")


# ----------------------------------------------------------------------------------------
# Lookup order and loading
# ----------------------------------------------------------------------------------------

def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVIT_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("MINIVIT_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "minivit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "minivit"


def test_load_from_extracted_dir(tmp_path, fake):
    files, expected = fake
    batch_dir = write_dir(tmp_path, files)
    assert_same(load_cifar10(tmp_path, download=False, expected_counts=SMALL), expected)
    # ... or pointed straight at the batch directory
    assert_same(load_cifar10(batch_dir, download=False, expected_counts=None), expected)


def test_default_dir_is_used(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("MINIVIT_DATA_DIR", str(tmp_path))
    write_dir(tmp_path, fake[0])
    assert_same(load_cifar10(download=False, expected_counts=SMALL), fake[1])


def test_limits(tmp_path, fake):
    files, expected = fake
    write_dir(tmp_path, files)
    d = load_cifar10(tmp_path, download=False, expected_counts=SMALL,
                     limit_train=N + 3, limit_test=4)
    np.testing.assert_array_equal(d["x_train"], expected["x_train"][:N + 3])
    np.testing.assert_array_equal(d["y_train"], expected["y_train"][:N + 3])
    np.testing.assert_array_equal(d["x_test"], expected["x_test"][:4])
    assert load_cifar10(tmp_path, download=False, expected_counts=SMALL,
                        limit_test=10 ** 6)["x_test"].shape[0] == N
    with pytest.raises(DataError, match="limit_train"):
        load_cifar10(tmp_path, download=False, limit_train=-1)


def test_load_from_archive_extracts_beside_it(tmp_path, fake):
    files, expected = fake
    write_tar(tmp_path / ARCHIVE_NAME, files)
    assert_same(load_cifar10(tmp_path, download=False, expected_counts=SMALL), expected)
    assert listing(tmp_path) == sorted([ARCHIVE_NAME, DIR_NAME]
                                       + [f"{DIR_NAME}/{n}" for n in files])
    # the second load reads the extracted directory, even with the archive gone
    (tmp_path / ARCHIVE_NAME).unlink()
    assert_same(load_cifar10(tmp_path, download=False, expected_counts=SMALL), expected)


def test_load_from_archive_file_path(tmp_path, fake):
    files, expected = fake
    archive = write_tar(tmp_path / "some-copy.tar.gz", files)
    assert_same(load_cifar10(archive, download=False, expected_counts=SMALL), expected)


def test_load_from_read_only_archive_location(tmp_path, fake):
    files, expected = fake
    ro = tmp_path / "ro"
    ro.mkdir()
    write_tar(ro / ARCHIVE_NAME, files)
    before = listing(ro)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        # Works without writing a byte into the read-only directory (root included:
        # the loader honours the mode bits, not just os.access).
        assert_same(load_cifar10(ro, download=False, expected_counts=SMALL), expected)
        assert_same(load_cifar10(ro / ARCHIVE_NAME, download=False,
                                 expected_counts=SMALL, limit_train=7), {
            **expected, "x_train": expected["x_train"][:7],
            "y_train": expected["y_train"][:7]})
    finally:
        ro.chmod(0o755)
    assert listing(ro) == before


def test_local_archive_is_not_md5_checked(tmp_path, fake):
    # a structurally valid local archive loads although its MD5 is not the official one
    write_tar(tmp_path / ARCHIVE_NAME, fake[0])
    d = load_cifar10(tmp_path, download=False, md5="0" * 32, expected_counts=SMALL)
    assert d["x_train"].shape == (5 * N, 32, 32, 3)


def test_nothing_found_without_download(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path / "empty", download=False)
    msg = str(info.value)
    assert str(tmp_path / "empty" / DIR_NAME) in msg and ARCHIVE_NAME in msg
    assert "download=True" in msg and "--data-dir" in msg and "\n" not in msg
    assert list((tmp_path / "empty").iterdir()) == []


def test_named_folder_that_does_not_exist_is_refused_not_downloaded(tmp_path, monkeypatch):
    """A --data-dir / data_dir / $MINIVIT_DATA_DIR that does not exist is a typo: a one-line
    error naming it, no download attempt (download would raise here), nothing created."""
    def no_download(*a, **k):
        raise AssertionError("must not download")
    monkeypatch.setattr("minivit.data.cifar10._download_module_level", no_download)
    with pytest.raises(DataError, match=r"data folder .*nope does not exist \(--data-dir"):
        load_cifar10(tmp_path / "nope")
    monkeypatch.setenv("MINIVIT_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"MINIVIT_DATA_DIR=.*gone: the folder"):
        load_cifar10()
    assert not (tmp_path / "nope").exists() and not (tmp_path / "gone").exists()


def test_failed_download_says_how_to_point_at_data(tmp_path, monkeypatch):
    """No network: the error keeps the reason and names --data-dir and MINIVIT_DATA_DIR."""
    def fail(url, dest, **k):
        raise DataError(f"download of {url} failed: [Errno -3] Temporary failure in name "
                        f"resolution")
    monkeypatch.setattr("minivit.data.cifar10._download_module_level", fail)
    monkeypatch.delenv("MINIVIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        load_cifar10()
    msg = str(info.value)
    assert "name resolution" in msg and "--data-dir" in msg and "MINIVIT_DATA_DIR" in msg
    assert str(tmp_path / "cache" / "minivit") in msg and "\n" not in msg


# ----------------------------------------------------------------------------------------
# Structural validation failures
# ----------------------------------------------------------------------------------------

def test_missing_batch_file_in_dir(tmp_path, fake):
    files = {k: v for k, v in fake[0].items() if k != "data_batch_3.bin"}
    write_dir(tmp_path, files)
    with pytest.raises(DataError, match="data_batch_3.bin"):
        load_cifar10(tmp_path, download=False, expected_counts=None)


def test_missing_batch_file_in_archive_leaves_nothing(tmp_path, fake):
    files = {k: v for k, v in fake[0].items() if k != TEST_FILE}
    write_tar(tmp_path / ARCHIVE_NAME, files)
    with pytest.raises(DataError, match=TEST_FILE):
        load_cifar10(tmp_path, download=False, expected_counts=None)
    assert listing(tmp_path) == [ARCHIVE_NAME]


def test_wrong_record_size_in_dir(tmp_path, fake):
    files = dict(fake[0])
    files["data_batch_2.bin"] = files["data_batch_2.bin"][:-1]
    write_dir(tmp_path, files)
    with pytest.raises(DataError, match=r"data_batch_2\.bin: size \d+ bytes"):
        load_cifar10(tmp_path, download=False, expected_counts=None)


def test_label_out_of_range_in_archive(tmp_path, fake):
    files = dict(fake[0])
    raw = bytearray(files["data_batch_4.bin"])
    raw[2 * RECORD_BYTES] = 200
    files["data_batch_4.bin"] = bytes(raw)
    ro = tmp_path / "ro"
    ro.mkdir()
    write_tar(ro / ARCHIVE_NAME, files)
    ro.chmod(0o555)                                     # exercise the in-memory path
    try:
        with pytest.raises(DataError, match=r"data_batch_4\.bin: record 2 has label 200"):
            load_cifar10(ro, download=False, expected_counts=None)
    finally:
        ro.chmod(0o755)


def test_record_counts_are_checked(tmp_path, fake):
    write_dir(tmp_path, fake[0])
    with pytest.raises(DataError, match="100 records, expected 50000"):
        load_cifar10(tmp_path, download=False)           # default: the real counts
    with pytest.raises(DataError, match=r"test_batch\.bin holds 20 records, expected 21"):
        load_cifar10(tmp_path, download=False, expected_counts=(100, 21))


def test_wrong_class_list(tmp_path, fake):
    files = dict(fake[0])
    files[META_FILE] = b"cat\ndog\n"
    write_dir(tmp_path, files)
    with pytest.raises(DataError, match="batches.meta.txt"):
        load_cifar10(tmp_path, download=False, expected_counts=None)


def test_truncated_archive(tmp_path, fake_archive_bytes):
    (tmp_path / ARCHIVE_NAME).write_bytes(fake_archive_bytes[: len(fake_archive_bytes) // 2])
    with pytest.raises(DataError, match=rf"{ARCHIVE_NAME} is truncated or corrupt"):
        load_cifar10(tmp_path, download=False, expected_counts=None)
    assert listing(tmp_path) == [ARCHIVE_NAME]


def test_corrupt_archive(tmp_path, fake_archive_bytes):
    raw = bytearray(fake_archive_bytes)
    raw[len(raw) // 2] ^= 0xFF                              # flip bits mid-stream
    (tmp_path / ARCHIVE_NAME).write_bytes(bytes(raw))
    with pytest.raises(DataError, match="truncated or corrupt"):
        extract_archive(tmp_path / ARCHIVE_NAME, tmp_path)
    assert listing(tmp_path) == [ARCHIVE_NAME]
    (tmp_path / ARCHIVE_NAME).write_bytes(b"this is not a tar file")
    with pytest.raises(DataError, match="truncated or corrupt"):
        extract_archive(tmp_path / ARCHIVE_NAME, tmp_path)


def _info(name, kind=tarfile.REGTYPE, size=0, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info


HOSTILE = {
    "dotdot": (f"{DIR_NAME}/../evil.bin", tarfile.REGTYPE, "", "'..'"),
    "absolute": ("/tmp/minivit-evil.bin", tarfile.REGTYPE, "", "absolute path"),
    "symlink": (f"{DIR_NAME}/data_batch_9.bin", tarfile.SYMTYPE, "/etc/passwd", "link"),
    "symlink_allowed_name": (f"{DIR_NAME}/readme.html", tarfile.SYMTYPE, "/etc/passwd", "link"),
    "hardlink": (f"{DIR_NAME}/readme.html", tarfile.LNKTYPE, f"{DIR_NAME}/test_batch.bin", "link"),
    "fifo": (f"{DIR_NAME}/readme.html", tarfile.FIFOTYPE, "", "device or fifo"),
    "device": (f"{DIR_NAME}/readme.html", tarfile.CHRTYPE, "", "device or fifo"),
    "unexpected_file": (f"{DIR_NAME}/extra.bin", tarfile.REGTYPE, "", "not an expected"),
    "unexpected_top": ("cifar-10-batches-py/data_batch_1", tarfile.REGTYPE, "", "not an expected"),
    "unexpected_dir": (f"{DIR_NAME}/sub", tarfile.DIRTYPE, "", "unexpected directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_refused(tmp_path, fake, case):
    name, kind, linkname, why = HOSTILE[case]
    data = b"x" if kind == tarfile.REGTYPE else None
    extra = [(_info(name, kind, len(data or b""), linkname), data)]
    write_tar(tmp_path / ARCHIVE_NAME, fake[0], extra=extra)
    with pytest.raises(DataError) as info:
        extract_archive(tmp_path / ARCHIVE_NAME, tmp_path)
    assert repr(name) in str(info.value) and why in str(info.value)
    assert listing(tmp_path) == [ARCHIVE_NAME]               # nothing half-extracted
    assert not Path("/tmp/minivit-evil.bin").exists()
    # the loader refuses it too, whether it extracts or reads in memory
    with pytest.raises(DataError, match=why):
        load_cifar10(tmp_path, download=False, expected_counts=None)
    assert listing(tmp_path) == [ARCHIVE_NAME]


def test_duplicate_member_refused(tmp_path, fake):
    dup = fake[0][TEST_FILE]
    extra = [(_info(f"{DIR_NAME}/{TEST_FILE}", size=len(dup)), dup)]
    write_tar(tmp_path / ARCHIVE_NAME, fake[0], extra=extra)
    with pytest.raises(DataError, match="appears twice"):
        extract_archive(tmp_path / ARCHIVE_NAME, tmp_path)


def test_extract_refuses_existing_target(tmp_path, fake):
    archive = write_tar(tmp_path / ARCHIVE_NAME, fake[0])
    out = extract_archive(archive, tmp_path / "t")
    assert out == tmp_path / "t" / DIR_NAME
    assert sorted(p.name for p in out.iterdir()) == sorted(fake[0])
    with pytest.raises(DataError, match="already exists"):
        extract_archive(archive, tmp_path / "t")


# ----------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# ----------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.server.body
        if self.path == "/cifar.tar.gz":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/truncated.tar.gz":
            # announce more than we send, then close: a cut connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        elif self.path == "/slow.tar.gz":
            time.sleep(1.0)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args):            # keep pytest output clean
        pass


@pytest.fixture
def server(fake_archive_bytes, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    httpd.body = fake_archive_bytes
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_download_success(tmp_path, server, fake_archive_bytes):
    md5 = hashlib.md5(fake_archive_bytes).hexdigest()
    dest = tmp_path / "dl" / ARCHIVE_NAME
    assert download(f"{server}/cifar.tar.gz", dest, md5=md5.upper(), progress=False) == dest
    assert dest.read_bytes() == fake_archive_bytes
    assert listing(tmp_path / "dl") == [ARCHIVE_NAME]


@pytest.mark.parametrize("path, kwargs, message", [
    ("/cifar.tar.gz", {"md5": "0" * 32}, "failed its checksum"),
    ("/missing.tar.gz", {}, "HTTP 404"),
    ("/truncated.tar.gz", {}, "truncated"),
    ("/slow.tar.gz", {"timeout": 0.2}, "timed out"),
])
def test_download_failures_leave_nothing(tmp_path, server, path, kwargs, message):
    dest = tmp_path / ARCHIVE_NAME
    url = f"{server}{path}"
    with pytest.raises(DataError) as info:
        download(url, dest, progress=False, **kwargs)
    assert message in str(info.value) and url in str(info.value)
    assert "\n" not in str(info.value)
    assert listing(tmp_path) == []


def test_download_failure_keeps_existing_file(tmp_path, server):
    dest = tmp_path / ARCHIVE_NAME
    dest.write_bytes(b"old")
    with pytest.raises(DataError):
        download(f"{server}/cifar.tar.gz", dest, md5="0" * 32, progress=False)
    assert dest.read_bytes() == b"old" and listing(tmp_path) == [ARCHIVE_NAME]


def test_download_connection_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as s:                   # find a port, then close it: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar.tar.gz"
    with pytest.raises(DataError, match=rf"download of {url} failed"):
        download(url, tmp_path / ARCHIVE_NAME, progress=False, timeout=5)
    assert listing(tmp_path) == []


def test_download_refuses_other_schemes(tmp_path):
    with pytest.raises(DataError, match="only http"):
        download("file:///etc/passwd", tmp_path / "x", progress=False)


def test_load_downloads_when_missing(tmp_path, server, fake, fake_archive_bytes):
    md5 = hashlib.md5(fake_archive_bytes).hexdigest()
    root = tmp_path / "cache"
    root.mkdir()                          # a named folder must exist (the cache is made)
    d = load_cifar10(root, url=f"{server}/cifar.tar.gz", md5=md5, progress=False,
                     expected_counts=SMALL)
    assert_same(d, fake[1])
    assert (root / ARCHIVE_NAME).is_file() and (root / DIR_NAME).is_dir()
    assert not [p for p in os.listdir(root) if p.startswith(".")]   # no temp leftovers


def test_load_download_md5_mismatch(tmp_path, server):
    root = tmp_path / "cache"
    root.mkdir()
    with pytest.raises(DataError, match="checksum"):
        load_cifar10(root, url=f"{server}/cifar.tar.gz", md5="0" * 32, progress=False)
    assert listing(root) == []


# ----------------------------------------------------------------------------------------
# The real offline copy
# ----------------------------------------------------------------------------------------

@pytest.mark.skipif(not REAL_ARCHIVE.is_file(),
                    reason=f"offline CIFAR-10 copy not found at {REAL_ARCHIVE}")
def test_real_offline_copy():
    before = listing(REAL_ARCHIVE.parent)
    t0 = time.perf_counter()
    d = load_cifar10(REAL_ARCHIVE.parent, download=False, progress=False)
    elapsed = time.perf_counter() - t0
    assert d["x_train"].shape == (50000, 32, 32, 3) and d["x_train"].dtype == np.uint8
    assert d["x_test"].shape == (10000, 32, 32, 3) and d["x_test"].dtype == np.uint8
    assert d["y_train"].shape == (50000,) and d["y_train"].dtype == np.int64
    assert d["y_test"].shape == (10000,) and d["y_test"].dtype == np.int64
    assert np.bincount(d["y_train"], minlength=10).tolist() == [5000] * 10
    assert np.bincount(d["y_test"], minlength=10).tolist() == [1000] * 10
    assert d["classes"] == CLASSES
    # real photographs, not zeros: mean pixel near CIFAR-10's ~120
    assert 100 < d["x_train"][:1000].mean() < 140
    assert elapsed < 20
    assert listing(REAL_ARCHIVE.parent) == before       # the shared copy stays untouched
