"""The same index and search against a real Chroma server (`chroma run` on loopback)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from assistant.ingest.indexer import Ingestor
from assistant.search import Searcher
from tests.conftest import CORPUS, make_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    log = open(tmp_path / "chroma.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"chroma run did not start: {(tmp_path / 'chroma.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def test_ingest_and_search_through_a_chroma_server(tmp_path, chroma_server, embedder):
    settings = make_settings(tmp_path / "data", store={"chroma_url": chroma_server})
    report = Ingestor.from_config(settings, embedder)([CORPUS / "criteria"])
    assert report.embedded == 30
    assert not (tmp_path / "data" / "chroma").exists()  # nothing embedded locally
    hits = Searcher.from_config(settings, embedder)("what is the rollback unit", 3).hits
    assert hits[0].chunk.ref == "review/rollback-unit"
    again = Ingestor.from_config(settings, embedder)([CORPUS / "criteria"])
    assert again.embedded == 0


def test_unreachable_server_is_a_clear_error(tmp_path, embedder):
    from assistant.errors import StoreError

    settings = make_settings(tmp_path / "data", store={"chroma_url": f"http://127.0.0.1:{free_port()}"})
    (tmp_path / "notes.md").write_text("# Notes\n\nsome text\n")
    with pytest.raises(StoreError, match="Chroma"):
        Ingestor.from_config(settings, embedder)([tmp_path / "notes.md"])
