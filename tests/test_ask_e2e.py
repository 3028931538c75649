"""End to end as a user runs it: `servewise ask --json` and `servewise chat` with the real vLLM
CPU engine and the packaged SmolLM2 model, over the bundled corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from assistant.models import ensure_packaged_generator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_env(corpus_index):
    model = ensure_packaged_generator(corpus_index.data_dir)
    return {
        **os.environ,
        "SERVEWISE_GENERATOR__MODEL": str(model),
        "SERVEWISE_DATA_DIR": str(corpus_index.data_dir),
    }


def servewise(env, *args, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ask_json_recommends_ray_serve_citing_the_existing_ray_criterion(cli_env):
    out = servewise(
        cli_env,
        "ask",
        "--json",
        "We run all our pipelines on Ray already; which serving platform should we use?",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout)
    assert set(answer) == {
        "answer",
        "recommendation",
        "confidence",
        "declined",
        "citations",
        "timings",
        "model",
        "conversation_id",
    }
    assert answer["recommendation"] == "ray-serve" and not answer["declined"]
    assert {"usecase/existing-ray-workloads", "fit/ray-serve-existing-ray"} & {
        c["id"] for c in answer["citations"]
    }
    assert answer["model"].startswith("SmolLM2-135M-Instruct")
    assert {"retrieve_ms", "rerank_ms", "generate_ms", "total_ms"} <= set(answer["timings"])
    assert answer["timings"]["generate_ms"] > 0


def test_ask_declines_off_topic(cli_env):
    out = servewise(cli_env, "ask", "--json", "What is the capital of France?")
    answer = json.loads(out.stdout)
    assert answer["declined"] and answer["recommendation"] is None and answer["citations"] == []


def test_chat_holds_a_follow_up_in_context(cli_env):
    script = (
        "We run all our pipelines on Ray already; which serving platform should we use?\n"
        "and what about rollbacks?\n/quit\n"
    )
    out = servewise(cli_env, "chat", stdin=script)
    assert out.returncode == 0, out.stderr[-3000:]
    second = out.stdout.split("servewise> ")[2]
    assert "review/rollback-unit" in second or "rollback" in second.lower()


def test_ask_errors_are_clear(cli_env):
    out = servewise(cli_env, "ask", "   ")
    assert out.returncode == 2 and out.stderr.strip() == "error: the question is empty"
    out = servewise(cli_env, "ask", "hi", "--conversation", "missing")
    assert out.returncode == 2 and "unknown conversation id" in out.stderr and "Traceback" not in out.stderr
