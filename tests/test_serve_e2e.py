"""The real graph, booted once with ``servewise serve`` (cpu profile: a local Ray, Serve, vLLM's CPU
build with the packaged model, embedded Chroma) and driven over real HTTP: every endpoint, the
``openai`` client and LangChain's ``ChatOpenAI``, an SSE stream read to the end, 20 parallel
requests, and bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from assistant.config import Settings
from assistant.priority import descendants, threads

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "servewise"
RAY_QUESTION = "We run all our pipelines on Ray already; which serving platform should we use?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"servewise serve exited ({proc.returncode}): {log.read_text()[-4000:]}")
        if "ServeWise ready at" in log.read_text():
            return
        time.sleep(1)
    pytest.fail(f"servewise serve was not ready in {timeout:.0f} s: {log.read_text()[-4000:]}")


def started(pids: set[int]) -> set[tuple[int, str]]:
    """``(pid, start time)`` of those of ``pids`` still alive (a recycled PID does not match)."""
    out = set()
    for pid in pids:
        try:
            out.add((pid, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]))
        except OSError:
            continue
    return out


def left_after(keys: set[tuple[int, str]], timeout: float = 60.0) -> set[tuple[int, str]]:
    """Those of ``keys`` still alive after up to ``timeout`` seconds."""
    deadline = time.time() + timeout
    while (alive := started({pid for pid, _ in keys}) & keys) and time.time() < deadline:
        time.sleep(0.5)
    return alive


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def served(corpus_index: Settings, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """``servewise serve`` on a free port over the session's corpus index; its base URL and PID."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVEWISE_")}
    env |= {"SERVEWISE_GENERATOR__MAX_TOKENS": "64", "SERVEWISE_INGEST__PROGRESS": "false"}
    command = [str(CLI), "--data-dir", str(corpus_index.data_dir), "serve", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        graph: set[tuple[int, str]] = set()
        try:
            wait_ready(proc, log)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            graph = started(descendants(proc.pid))  # Ray, the replicas, vLLM's engine processes
            stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert len(graph) > 4, graph  # the CLI's own Ray and replicas were found
    left = left_after(graph)  # Ctrl-C leaves nothing of the graph running
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid, _ in left]


@pytest.fixture(scope="module")
def app(served: tuple[str, int]) -> str:
    """The booted graph's base URL."""
    return served[0]


def ask(app: str, **body) -> httpx.Response:
    return httpx.post(f"{app}/v1/ask", json=body, timeout=180)


def test_the_model_yields_the_cpu_to_every_other_stage(served):
    """cpu profile: every thread of vLLM's engine processes runs under SCHED_IDLE, the replicas at
    niceness 0 (not Ray's 15), and the replica that started the engine kept its own scheduling."""
    procs = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in descendants(served[1])}
    engine = [p for p, name in procs.items() if name.startswith("VLLM::")]
    replicas = [p for p, name in procs.items() if name.startswith("ray::ServeRepli")]
    assert engine and len(replicas) >= 4, procs
    assert {os.sched_getscheduler(t) for p in engine for t in threads(p)} == {os.SCHED_IDLE}
    assert {os.sched_getscheduler(p) for p in replicas} == {os.SCHED_OTHER}
    assert {os.getpriority(os.PRIO_PROCESS, p) for p in replicas} == {0}


def test_health_and_docs(app):
    health = httpx.get(f"{app}/healthz").json()
    assert health["status"] == "ok" and health["chunks"] > 50
    assert httpx.get(f"{app}/docs").status_code == 200
    assert "/v1/chat/completions" in httpx.get(f"{app}/openapi.json").json()["paths"]


def test_ask_recommends_ray_serve_citing_the_existing_ray_criterion(app):
    answer = ask(app, question=RAY_QUESTION).json()
    assert answer["recommendation"] == "ray-serve"
    assert "fit/ray-serve-existing-ray" in [c["id"] for c in answer["citations"]]
    assert {"retrieve_ms", "rerank_ms", "generate_ms", "total_ms", "serve_overhead_ms"} <= set(
        answer["timings"]
    )


def test_off_topic_is_declined(app):
    answer = ask(app, question="What is the capital of France?").json()
    assert answer["declined"] is True and answer["citations"] == [] and answer["recommendation"] is None


def test_follow_up_keeps_the_conversation(app):
    first = ask(app, question="Should a team that already runs everything on Ray use Ray Serve?").json()
    follow = ask(app, question="and what about rollbacks?", conversation_id=first["conversation_id"]).json()
    assert follow["declined"] is False and follow["citations"]
    assert follow["conversation_id"] == first["conversation_id"]


def test_stream_is_read_to_the_end(app):
    names, answer = [], None
    with httpx.stream("POST", f"{app}/v1/ask/stream", json={"question": RAY_QUESTION}, timeout=180) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
            elif line.startswith("data: ") and names[-1] == "answer":
                answer = json.loads(line[6:])
    assert names[0] == "token" and names[-1] == "answer" and "error" not in names
    assert answer["recommendation"] == "ray-serve"
    timings = answer["timings"]
    assert {"wait_retriever_ms", "queued_retriever_ms", "wait_reranker_ms", "queued_reranker_ms"} <= set(
        timings
    )
    assert timings["queued_retriever_ms"] <= timings["wait_retriever_ms"] + 1  # queueing is part of the wait
    for stage in ("retriever", "reranker"):  # the wait = the way to the replica + its queue + the way back
        parts = [timings[f"{p}_{stage}_ms"] for p in ("to", "queued", "back")]
        assert min(parts) >= 0 and sum(parts) == pytest.approx(timings[f"wait_{stage}_ms"], abs=0.5)


def test_text_streams_as_it_is_generated(app):
    stamps = []
    with httpx.stream("POST", f"{app}/v1/ask/stream", json={"question": RAY_QUESTION}, timeout=180) as reply:
        for line in reply.iter_lines():
            if line == "event: token":
                stamps.append(time.perf_counter())
    assert len(stamps) > 1 and stamps[-1] - stamps[0] > 0.1  # chunks came as generated, not at the end


def test_openai_client_streams_and_completes(app):
    from openai import OpenAI

    client = OpenAI(base_url=f"{app}/v1", api_key="unused", timeout=180)
    messages = [{"role": "user", "content": RAY_QUESTION}]
    chunks = list(client.chat.completions.create(model="servewise", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].model_extra["servewise"]["recommendation"] == "ray-serve"
    full = client.chat.completions.create(model="servewise", messages=messages)
    assert full.choices[0].message.content and full.model_extra["servewise"]["citations"]


def test_langchain_chat_openai(app):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{app}/v1", api_key="unused", model="servewise", timeout=180)
    assert "Ray Serve" in llm.invoke(RAY_QUESTION).content


def test_twenty_parallel_requests_all_succeed(app):
    questions = [f"Which platform fits a team that already runs Ray? (variant {i})" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda q: ask(app, question=q), questions))
    assert [r.status_code for r in replies] == [200] * 20
    assert all(r.json()["answer"] for r in replies)


def test_bad_input_gets_clear_errors(app):
    missing = ask(app)
    assert missing.status_code == 422 and "body.question: Field required" in missing.text
    big = httpx.post(f"{app}/v1/ask", content=b'{"question": "' + b"x" * 70000 + b'"}', timeout=30)
    assert big.status_code == 413
    long = ask(app, question="x" * 4001)
    assert long.status_code == 413 and "limit is 4000" in long.text
    unknown = ask(app, question="and rollbacks?", conversation_id="nope")
    assert unknown.status_code == 404 and "unknown conversation id 'nope'" in unknown.text
    for reply in (missing, big, long, unknown):
        assert "Traceback" not in reply.text


def test_metrics_show_stages_queue_wait_and_replicas(app):
    ask(app, question=RAY_QUESTION)
    text = httpx.get(f"{app}/metrics").text
    for stage in ("retrieve", "rerank", "first_token", "generate", "total"):
        assert f'servewise_stage_seconds_count{{stage="{stage}"}}' in text
    for deployment in ("Retriever", "Reranker", "Generator"):
        assert f'servewise_queue_wait_seconds_count{{deployment="{deployment}"}}' in text
    replicas = {"Ingress": 1, "Retriever": 2, "Reranker": 1, "Generator": 1}  # the cpu profile
    for deployment, n in replicas.items():
        assert f'servewise_replicas{{deployment="{deployment}",state="RUNNING"}} {n:.1f}' in text
    assert "servewise_tokens_generated_total" in text and "servewise_serve_overhead_seconds_count" in text


EVAL_ITEMS = """\
items:
  - {id: just-a-question, question: "How do canary rollouts work on KServe?"}
  - id: rec-ray
    question: We run all our pipelines on Ray already; which serving platform should we use?
    platform: ray-serve
    criteria: [fit/ray-serve-existing-ray]
  - {id: oos, question: "What is the capital of France?", platform: none, scope: out}
  - {id: own-cluster, question: "Which runtime does my sklearn service use?", corpus: corpus/manifests}
"""


def test_eval_scores_the_running_graph_over_http(app, tmp_path):
    dataset, out = tmp_path / "items.yaml", tmp_path / "out"
    dataset.write_text(EVAL_ITEMS)
    command = [str(CLI), "eval", "--dataset", str(dataset), "--endpoint", app, "--out", str(out)]
    command.append("--no-progress")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == ["just-a-question", "rec-ray", "oos"]
    assert all(a["retrieved"] is not None for a in answers)
    run = json.loads((out / "metrics.json").read_text())["runs"][0]
    assert run["skipped"][0]["id"] == "own-cluster" and run["errors"] == []
    assert run["metrics"]["citations"]["validity"]["value"] == 1.0
    assert run["metrics"]["recommendation"]["accuracy"]["value"] == 1.0
    assert "serve_overhead_ms" in run["metrics"]["latency"]
    assert json.loads((out / "config.json").read_text())["endpoint"] == app
    assert app in (out / "report.md").read_text()


def test_feedback_on_an_answer_is_recorded_and_exported(app, corpus_index, tmp_path):
    answer = ask(app, question=RAY_QUESTION).json()
    body = {"conversation_id": answer["conversation_id"], "rating": "up", "answer": answer}
    assert httpx.post(f"{app}/v1/feedback", json=body, timeout=30).status_code == 201
    bad = httpx.post(f"{app}/v1/feedback", json={**body, "conversation_id": "nope"}, timeout=30)
    assert bad.status_code == 404
    out = tmp_path / "fb.jsonl"
    command = [str(CLI), "--data-dir", str(corpus_index.data_dir), "feedback", "export", "--out", str(out)]
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    items = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [i for i in items if i["question"] == RAY_QUESTION and i["feedback"]["rating"] == "up"]
    assert mine and mine[-1]["platform"] == "ray-serve"
