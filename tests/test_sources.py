"""Sources: LocalSource on real folders, S3Source against a real moto server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rag_ops.config import Settings
from rag_ops.errors import DocumentGone, DocumentTooLarge, SourceError
from rag_ops.sources import SourceDocument, open_source, path_selected
from rag_ops.sources.local import LocalSource


def _write(root: Path, rel: str, data: bytes | str = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def _rels(root: Path, docs: list[SourceDocument]) -> list[str]:
    return [Path(d.uri).relative_to(root).as_posix() for d in docs]


# --------------------------------------------------------------------------- path_selected


@pytest.mark.parametrize(
    ("rel", "include", "exclude", "expected"),
    [
        # "**/*" matches top-level files as well as nested ones
        ("a.txt", ("**/*",), (), True),
        ("x/y/z/a.txt", ("**/*",), (), True),
        # "**/*.md" at any depth, including the top level, and only .md
        ("a.md", ("**/*.md",), (), True),
        ("docs/deep/a.md", ("**/*.md",), (), True),
        ("a.mdx", ("**/*.md",), (), False),
        ("docs/a.txt", ("**/*.md",), (), False),
        # a pattern without ** does not cross folders
        ("a.md", ("*.md",), (), True),
        ("docs/a.md", ("*.md",), (), False),
        # "?" is exactly one character, never a slash
        ("ab.txt", ("a?.txt",), (), True),
        ("abc.txt", ("a?.txt",), (), False),
        ("a/.txt", ("a?.txt",), (), False),
        # regex metacharacters in a glob are literal
        ("file[1].txt", ("file[1].txt",), (), True),
        ("file1.txt", ("file[1].txt",), (), False),
        ("aXtxt", ("a.txt",), (), False),
        # the default excludes: dot files, dot folders, Office lock files
        (".env", ("**/*",), Settings.exclude, False),
        ("sub/.hidden.md", ("**/*",), Settings.exclude, False),
        (".git/config", ("**/*",), Settings.exclude, False),
        ("a/.git/objects/ab", ("**/*",), Settings.exclude, False),
        ("~$report.docx", ("**/*",), Settings.exclude, False),
        ("reports/~$q1.docx", ("**/*",), Settings.exclude, False),
        ("dir.v2/notes.txt", ("**/*",), Settings.exclude, True),
        ("notes.txt", ("**/*",), Settings.exclude, True),
        # exclude wins over include; several includes are ORed; no include selects nothing
        ("a.md", ("**/*.md",), ("a.md",), False),
        ("b.txt", ("**/*.md", "**/*.txt"), (), True),
        ("a.md", (), (), False),
    ],
)
def test_path_selected(rel, include, exclude, expected):
    assert path_selected(rel, include, exclude) is expected


# --------------------------------------------------------------------------- LocalSource


def test_local_lists_recursively_in_sorted_order(tmp_path):
    root = tmp_path / "src"
    # created in reverse order, so a listing in creation or inode order would differ
    for rel in ["b/d/z.txt", "b/d/a.txt", "b/c.txt", "a/y.txt", "a/x.txt", "0.txt"]:
        _write(root, rel)
    src = LocalSource(root)
    docs = list(src.list_documents())
    assert _rels(root, docs) == ["0.txt", "a/x.txt", "a/y.txt", "b/c.txt", "b/d/a.txt", "b/d/z.txt"]
    assert all(Path(d.uri).is_absolute() for d in docs)
    assert all(not d.refused and d.etag == "" for d in docs)
    # stable: a second listing gives the same documents in the same order
    assert list(src.list_documents()) == docs
    assert src.root == str(root.absolute())


def test_local_reports_size_and_mtime(tmp_path):
    root = tmp_path / "src"
    small = _write(root, "small.txt", b"12345")
    big = _write(root, "sub/big.bin.txt", b"y" * 4321)
    os.utime(small, (1_600_000_000, 1_600_000_000))
    os.utime(big, (1_700_000_123.5, 1_700_000_123.5))
    docs = {Path(d.uri).name: d for d in LocalSource(root).list_documents()}
    assert docs["small.txt"].size == 5
    assert docs["small.txt"].modified == pytest.approx(1_600_000_000)
    assert docs["big.bin.txt"].size == 4321
    assert docs["big.bin.txt"].modified == pytest.approx(1_700_000_123.5)
    assert docs["small.txt"].as_dict() == {
        "uri": str(small), "size": 5, "modified": docs["small.txt"].modified, "etag": "", "refused": ""
    }


def test_local_include_exclude_globs(tmp_path):
    root = tmp_path / "src"
    for rel in ["top.md", "top.txt", "docs/guide.md", "docs/deep/api.md", "docs/deep/api.html"]:
        _write(root, rel)
    src = LocalSource(root, include=("**/*.md",))
    assert _rels(root, list(src.list_documents())) == ["top.md", "docs/guide.md", "docs/deep/api.md"]

    src = LocalSource(root, include=("**/*",), exclude=("docs/deep/**", "*.txt"))
    assert _rels(root, list(src.list_documents())) == ["top.md", "docs/guide.md"]


def test_local_default_settings_exclude_hidden_and_lock_files(tmp_path):
    root = tmp_path / "src"
    for rel in [
        "visible.txt",
        ".hidden.txt",
        "sub/.secret.md",
        ".git/config",
        "sub/.cache/blob.txt",
        "sub/~$draft.docx",
        "sub/kept.md",
    ]:
        _write(root, rel)
    src = open_source(str(root), Settings(data_dir=tmp_path / "data"))
    assert isinstance(src, LocalSource)
    assert _rels(root, list(src.list_documents())) == ["visible.txt", "sub/kept.md"]


def test_local_symlink_outside_root_is_refused_inside_root_is_listed(tmp_path):
    root = tmp_path / "src"
    inside = _write(root, "real/inside.txt", b"inside!")
    outside = _write(tmp_path / "elsewhere", "secret.txt", b"outside secret")
    (root / "link_in.txt").symlink_to(inside)
    (root / "link_out.txt").symlink_to(outside)
    docs = {Path(d.uri).name: d for d in LocalSource(root).list_documents()}
    assert set(docs) == {"inside.txt", "link_in.txt", "link_out.txt"}

    out = docs["link_out.txt"]
    assert out.refused, "a symlink leaving the root must be refused"
    assert "outside" in out.refused
    assert out.size == 0

    link_in = docs["link_in.txt"]
    assert link_in.refused == ""
    assert link_in.size == len(b"inside!")
    assert link_in.uri == str(root / "link_in.txt")
    assert LocalSource(root).read(link_in, max_bytes=100) == b"inside!"


def test_local_symlinked_folder_outside_root_is_refused_not_walked(tmp_path):
    root = tmp_path / "src"
    _write(root, "a.txt")
    _write(tmp_path / "outside_dir", "leak.txt", b"must not be listed")
    (root / "linked_dir").symlink_to(tmp_path / "outside_dir", target_is_directory=True)
    docs = list(LocalSource(root).list_documents())
    assert not any("leak.txt" in d.uri for d in docs)
    refused = [d for d in docs if d.refused]
    assert [Path(d.uri).name for d in refused] == ["linked_dir"]


def test_local_read_returns_bytes_and_accepts_exactly_max_bytes(tmp_path):
    root = tmp_path / "src"
    payload = bytes(range(256)) * 4  # 1,024 bytes, not text: read must be byte-exact
    _write(root, "blob.txt", payload)
    src = LocalSource(root)
    (doc,) = list(src.list_documents())
    assert src.read(doc, max_bytes=1024) == payload


def test_local_read_refuses_file_over_max_bytes(tmp_path):
    root = tmp_path / "src"
    _write(root, "big.txt", b"z" * 1001)
    src = LocalSource(root)
    (doc,) = list(src.list_documents())
    with pytest.raises(DocumentTooLarge, match="1,001"):
        src.read(doc, max_bytes=1000)


def test_local_read_refuses_huge_sparse_file_from_its_size(tmp_path):
    """A 4 GiB sparse file is refused from fstat, quickly, instead of being read."""
    root = tmp_path / "src"
    root.mkdir()
    huge = root / "huge.txt"
    with open(huge, "wb") as fh:
        fh.truncate(4 * 1024**3)
    src = LocalSource(root)
    (doc,) = list(src.list_documents())
    assert doc.size == 4 * 1024**3
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match="4,294,967,296"):
        src.read(doc, max_bytes=1024 * 1024)
    assert time.monotonic() - started < 2


def test_local_read_of_deleted_file_raises_document_gone(tmp_path):
    root = tmp_path / "src"
    path = _write(root, "gone.txt", b"soon gone")
    src = LocalSource(root)
    (doc,) = list(src.list_documents())
    path.unlink()
    with pytest.raises(DocumentGone) as info:
        src.read(doc, max_bytes=1000)
    assert isinstance(info.value, SourceError)
    assert info.value.retryable is False


def test_local_missing_root_raises_source_error(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(SourceError, match="does-not-exist"):
        list(LocalSource(missing).list_documents())
    a_file = _write(tmp_path, "plain-file.txt")
    with pytest.raises(SourceError):
        list(LocalSource(a_file).list_documents())


# --------------------------------------------------------------------------- S3Source (moto server)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """A real moto S3 server subprocess on loopback, for this module."""
    pytest.importorskip("moto.server")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = open(log_path, "wb")  # a file, not a pipe: the request log must never block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 20
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                opener.open(url + "/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {url} within 20 s")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A boto3 client on the moto server, with dummy credentials in the environment."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:
    name = f"ragops-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def _settings(tmp_path: Path, endpoint: str, **kw) -> Settings:
    return Settings(data_dir=tmp_path, s3_endpoint_url=endpoint, **kw)


def test_s3_lists_objects_with_uri_size_modified_etag(s3, bucket, moto_endpoint, tmp_path):
    from rag_ops.sources.s3 import S3Source

    s3.put_object(Bucket=bucket, Key="docs/a.txt", Body=b"alpha")
    s3.put_object(Bucket=bucket, Key="docs/sub/b.md", Body=b"# bravo\n\nbody")
    s3.put_object(Bucket=bucket, Key="docs/sub/", Body=b"")  # a folder marker, not a document
    s3.put_object(Bucket=bucket, Key="other/c.txt", Body=b"not under the prefix")
    src = open_source(f"s3://{bucket}/docs", _settings(tmp_path, moto_endpoint))
    assert isinstance(src, S3Source)
    docs = list(src.list_documents())
    assert [d.uri for d in docs] == [f"s3://{bucket}/docs/a.txt", f"s3://{bucket}/docs/sub/b.md"]
    assert [d.size for d in docs] == [5, len(b"# bravo\n\nbody")]
    for d in docs:
        assert abs(d.modified - time.time()) < 600
        assert d.etag and '"' not in d.etag
        assert d.refused == ""
    head = s3.head_object(Bucket=bucket, Key="docs/a.txt")
    assert docs[0].etag == head["ETag"].strip('"')
    assert docs[0].modified == pytest.approx(head["LastModified"].timestamp())
    assert docs[0].etag != docs[1].etag


def test_s3_globs_apply_relative_to_prefix(s3, bucket, moto_endpoint, tmp_path):
    for key in ["kb/top.md", "kb/top.txt", "kb/deep/guide.md", "kb/.hidden.md", "kb/.git/config"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"text")
    # "**/*.md" at any depth under the prefix; the default excludes drop dot files
    src = open_source(f"s3://{bucket}/kb/", _settings(tmp_path, moto_endpoint, include=("**/*.md",)))
    assert [d.uri for d in src.list_documents()] == [f"s3://{bucket}/kb/deep/guide.md", f"s3://{bucket}/kb/top.md"]
    # "*.md" matches only directly under the prefix: the glob sees "top.md", not "kb/top.md"
    src = open_source(f"s3://{bucket}/kb", _settings(tmp_path, moto_endpoint, include=("*.md",)))
    assert [d.uri for d in src.list_documents()] == [f"s3://{bucket}/kb/top.md"]
    # an exclude relative to the prefix
    src = open_source(f"s3://{bucket}/kb", _settings(tmp_path, moto_endpoint, exclude=("deep/**", "**/.*", "**/.*/**")))
    assert [d.uri for d in src.list_documents()] == [f"s3://{bucket}/kb/top.md", f"s3://{bucket}/kb/top.txt"]


def test_s3_lists_more_than_one_page(s3, bucket, moto_endpoint, tmp_path):
    """1,205 keys need two list_objects_v2 pages (1,000 per page): all must be listed."""
    keys = [f"bulk/{i // 100:02d}/{i:05d}.txt" for i in range(1205)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    for key in ["other/00000.txt", "other/zzz.txt", "aaa-before.txt"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"other prefix")

    src = open_source(f"s3://{bucket}/bulk", _settings(tmp_path, moto_endpoint))
    docs = list(src.list_documents())
    uris = [d.uri for d in docs]
    assert len(uris) == 1205
    assert len(set(uris)) == 1205
    assert sorted(uris) == sorted(f"s3://{bucket}/{k}" for k in keys)
    assert all(d.size == len(d.uri.split("/", 3)[3]) for d in docs)
    # the page boundary object (the 1,001st key) is present and readable
    assert src.read(docs[1000], max_bytes=100) == keys[1000].encode()


def test_s3_prefix_is_a_folder_sibling_prefixes_do_not_leak(s3, bucket, moto_endpoint, tmp_path):
    """``s3://bucket/reports`` is the folder ``reports/``; ``reports-archive/`` is not under it."""
    s3.put_object(Bucket=bucket, Key="reports/q1.txt", Body=b"q1")
    s3.put_object(Bucket=bucket, Key="reports-archive/q0.txt", Body=b"old")
    s3.put_object(Bucket=bucket, Key="reports.txt", Body=b"a file next to the folder")
    src = open_source(f"s3://{bucket}/reports", _settings(tmp_path, moto_endpoint))
    assert [d.uri for d in src.list_documents()] == [f"s3://{bucket}/reports/q1.txt"]


def test_s3_read_returns_exact_bytes(s3, bucket, moto_endpoint, tmp_path):
    payload = os.urandom(3000) + "Grüße ✓".encode()
    s3.put_object(Bucket=bucket, Key="p/blob.txt", Body=payload)
    src = open_source(f"s3://{bucket}/p", _settings(tmp_path, moto_endpoint))
    (doc,) = list(src.list_documents())
    assert doc.size == len(payload)
    assert src.read(doc, max_bytes=len(payload)) == payload


def test_s3_read_of_deleted_object_raises_document_gone(s3, bucket, moto_endpoint, tmp_path):
    s3.put_object(Bucket=bucket, Key="p/gone.txt", Body=b"soon gone")
    src = open_source(f"s3://{bucket}/p", _settings(tmp_path, moto_endpoint))
    (doc,) = list(src.list_documents())
    s3.delete_object(Bucket=bucket, Key="p/gone.txt")
    with pytest.raises(DocumentGone):
        src.read(doc, max_bytes=1000)


def test_s3_object_over_max_bytes_raises_document_too_large(s3, bucket, moto_endpoint, tmp_path):
    s3.put_object(Bucket=bucket, Key="p/big.txt", Body=b"b" * 2048)
    src = open_source(f"s3://{bucket}/p", _settings(tmp_path, moto_endpoint))
    (doc,) = list(src.list_documents())
    with pytest.raises(DocumentTooLarge, match="2,048"):
        src.read(doc, max_bytes=2047)


def test_s3_object_that_grew_after_listing_raises_document_too_large(s3, bucket, moto_endpoint, tmp_path):
    s3.put_object(Bucket=bucket, Key="p/grows.txt", Body=b"small")
    src = open_source(f"s3://{bucket}/p", _settings(tmp_path, moto_endpoint))
    (doc,) = list(src.list_documents())
    s3.put_object(Bucket=bucket, Key="p/grows.txt", Body=b"g" * 5000)
    with pytest.raises(DocumentTooLarge):
        src.read(doc, max_bytes=100)


def test_s3_missing_bucket_raises_source_error_naming_bucket(s3, moto_endpoint, tmp_path):
    missing = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    src = open_source(f"s3://{missing}/any/prefix", _settings(tmp_path, moto_endpoint))
    with pytest.raises(SourceError) as info:
        list(src.list_documents())
    assert missing in str(info.value)
    assert "testing-secret-key" not in str(info.value)
    assert "testing-access-key" not in str(info.value)
    assert info.value.retryable is True


def test_s3_url_without_bucket_is_rejected(tmp_path):
    with pytest.raises(SourceError, match="s3://bucket/prefix"):
        open_source("s3:///prefix", _settings(tmp_path, "http://127.0.0.1:9"))
