"""Generators against real engines: the packaged SmolLM2 converted once per session, vLLM's
AsyncLLMEngine in-process, and vLLM's OpenAI-compatible server as a loopback subprocess.

The two engines are class-scoped, so only one runs at a time (2 cores, 24 GB); each takes
~30 s to start on CPU. Prompts that assert content use greedy decoding (temperature 0).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistant.errors import ConfigError, GenerationError, InputError, ModelLoadError
from assistant.generator import GenerationParams, build_generator, complete
from assistant.models import (
    PACKAGED_GENERATOR_NAME,
    ensure_packaged_generator,
    is_model_dir,
    packaged_generator_dir,
    resolve_generator_model,
)
from assistant.openai_generator import OpenAICompatibleGenerator
from assistant.priority import descendants, lower_priority, threads
from assistant.vllm_generator import VLLMGenerator, vllm_env
from tests.conftest import make_settings

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = GenerationParams(max_tokens=24, temperature=0.0)
#: Small engines: the test box has 2 cores and 24 GB, and the two engines never overlap.
ENGINE = {"max_model_len": 1024, "max_num_seqs": 8, "cpu_kvcache_gb": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> tuple[Path, float]:
    """A session data dir holding the converted packaged model, and the conversion's seconds."""
    data_dir = tmp_path_factory.mktemp("generator-data")
    started = time.perf_counter()
    ensure_packaged_generator(data_dir)
    return data_dir, time.perf_counter() - started


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module: an engine's background task lives in the loop it started in."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


# -- the packaged model ------------------------------------------------------------------------


def test_conversion_is_cached_and_reused(converted):
    data_dir, first_seconds = converted
    target = packaged_generator_dir(data_dir)
    started = time.perf_counter()
    assert ensure_packaged_generator(data_dir) == target
    assert time.perf_counter() - started < 0.5 < first_seconds
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert any(name.endswith(".safetensors") for name in names)
    assert "quantization_config" not in (target / "config.json").read_text()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp dir left

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target)
    prompt = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_waiting_converter_reuses_what_the_lock_holder_wrote(converted, tmp_path):
    """A second process blocks on the lock, then finds the model in place instead of converting."""
    source = packaged_generator_dir(converted[0])
    target = packaged_generator_dir(tmp_path)
    target.parent.mkdir(parents=True)
    stale = target.parent / f".{target.name}-killed"  # what a killed conversion leaves
    stale.mkdir()
    result: list[Path] = []
    with open(target.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(ensure_packaged_generator(tmp_path)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not result  # blocked on the lock
        shutil.copytree(source, target)
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(timeout=10)
    assert result == [target]
    assert not stale.exists()


def test_resolve_generator_model(converted, tmp_path):
    data_dir = converted[0]
    packaged = make_settings(data_dir).generator
    assert resolve_generator_model(packaged, data_dir) == str(packaged_generator_dir(data_dir).absolute())
    missing = make_settings(data_dir, generator={"model": str(tmp_path / "nope")}).generator
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_generator_model(missing, data_dir)
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_generator_model(
            make_settings(data_dir, generator={"model": str(tmp_path)}).generator, data_dir
        )
    own = make_settings(data_dir, generator={"model": str(packaged_generator_dir(data_dir))}).generator
    assert is_model_dir(Path(resolve_generator_model(own, data_dir)))
    remote = make_settings(data_dir, generator={"kind": "openai", "model": "m"}).generator
    assert resolve_generator_model(remote, data_dir) == "m"


def test_build_generator_by_kind(tmp_path):
    assert isinstance(build_generator(make_settings(tmp_path)), VLLMGenerator)
    remote = make_settings(tmp_path, generator={"kind": "openai", "base_url": "http://127.0.0.1:9/v1"})
    assert isinstance(build_generator(remote), OpenAICompatibleGenerator)
    with pytest.raises(ConfigError, match="base_url"):
        build_generator(make_settings(tmp_path, generator={"kind": "openai"}))


def test_the_vllm_plugin_is_registered_and_keeps_cpu_attention_off_amx(monkeypatch):
    """vLLM loads the plugin in its engine and worker processes; with ``vec`` (the default) its CPU
    attention never picks the AMX kernel, which gave wrong text with the packaged model."""
    from importlib.metadata import entry_points

    from vllm.v1.attention.backends import cpu_attn

    from assistant import vllm_plugin
    from assistant.config import CPU_ATTENTION_VAR

    assert "assistant.vllm_plugin:register" in {e.value for e in entry_points(group="vllm.general_plugins")}
    assert vllm_plugin.without_amx(lambda *a, **k: "amx")("bfloat16", 32) == "vec"
    assert vllm_plugin.without_amx(lambda *a, **k: "vec16")("bfloat16", 16) == "vec16"
    current = cpu_attn._get_attn_isa  # already wrapped when an engine ran in this process
    original = getattr(current, "wrapped", current)
    monkeypatch.setattr(cpu_attn, "_get_attn_isa", original)  # restored after the test
    monkeypatch.delenv(CPU_ATTENTION_VAR, raising=False)
    vllm_plugin.register()
    assert cpu_attn._get_attn_isa is original  # vLLM's own pick unless asked
    monkeypatch.setenv(CPU_ATTENTION_VAR, "vec")
    vllm_plugin.register()
    patched = cpu_attn._get_attn_isa
    vllm_plugin.register()  # loaded again in the same process: no second wrapper
    assert patched is not original and cpu_attn._get_attn_isa is patched and patched.wrapped is original


def test_vllm_env(tmp_path):
    explicit = vllm_env(make_settings(tmp_path, generator={"cpu_threads_bind": "0-3,8"}).generator)
    assert explicit == {
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "0-3,8",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "SW_VLLM_CPU_ATTENTION": "vec",
        "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    }
    auto = vllm_env(make_settings(tmp_path).generator)
    cpus = sorted(os.sched_getaffinity(0))
    if cpus == list(range(cpus[-1] + 1)):  # a contiguous set, as on this box: every CPU
        assert auto["VLLM_CPU_OMP_THREADS_BIND"] == f"0-{cpus[-1]}" if len(cpus) > 1 else "0"
    assert auto["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def test_lowering_priority_reaches_every_thread_of_the_given_processes_only():
    probe = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
    before = (os.sched_getscheduler(0), os.nice(0))
    child = subprocess.Popen([sys.executable, "-c", probe])
    try:
        deadline = time.monotonic() + 10
        while len(threads(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in descendants(os.getpid())
        assert lower_priority([child.pid], nice=3, idle=True) == len(threads(child.pid)) == 2
        for tid in threads(child.pid):
            assert os.sched_getscheduler(tid) == os.SCHED_IDLE
            assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, before[1] + 3)
        assert (os.sched_getscheduler(0), os.nice(0)) == before  # the caller keeps its own
        assert lower_priority([2**22 + 7]) == 0  # a process that is gone is skipped
    finally:
        child.kill()
        child.wait()


def test_unstarted_vllm_generator_is_not_healthy(loop, tmp_path):
    generator = build_generator(make_settings(tmp_path))
    assert generator.name == PACKAGED_GENERATOR_NAME
    with pytest.raises(GenerationError, match="not started"):
        loop.run_until_complete(generator.check())
    with pytest.raises(InputError, match="at least one message"):  # checked before the engine starts
        loop.run_until_complete(complete(generator, []))
    with pytest.raises(InputError, match="'role' and a 'content'"):
        loop.run_until_complete(complete(generator, [{"text": "hi"}]))


# -- vLLM in-process ---------------------------------------------------------------------------


@pytest.fixture(scope="class")
def generator(converted, loop) -> Iterator[VLLMGenerator]:
    """The packaged model on vLLM in-process, started once for the class."""
    settings = make_settings(converted[0], generator=ENGINE)
    generator = VLLMGenerator.from_config(settings.generator, settings.data_dir)
    loop.run_until_complete(generator.start())
    yield generator
    loop.run_until_complete(generator.close())


@pytest.mark.slow
class TestVLLMGenerator:
    def test_streams_an_answer(self, generator, loop):
        async def collect() -> list[str]:
            return [delta async for delta in generator.stream(FRANCE, GREEDY)]

        deltas = loop.run_until_complete(collect())
        assert len(deltas) > 3 and all(deltas)
        assert "Paris" in "".join(deltas)
        loop.run_until_complete(generator.start())  # idempotent
        loop.run_until_complete(generator.check())

    def test_sampling_params_reach_the_engine(self, generator, loop):
        stopped = loop.run_until_complete(
            complete(generator, FRANCE, GenerationParams(stop=["Paris"], temperature=0))
        )
        assert "Paris" not in stopped and "capital" in stopped
        short = loop.run_until_complete(
            complete(generator, FRANCE, GenerationParams(max_tokens=2, temperature=0))
        )
        assert 0 < len(short) < 15
        hot = GenerationParams(max_tokens=24, temperature=1.0, seed=7)
        first, second = (loop.run_until_complete(complete(generator, FRANCE, hot)) for _ in range(2))
        assert first == second

    def test_eight_concurrent_streams_are_batched(self, generator, loop):
        async def one(i: int) -> tuple[str, float, float]:
            messages = [{"role": "user", "content": f"Name {i + 2} colours."}]
            parts, first = [], 0.0
            async for delta in generator.stream(messages, GenerationParams(max_tokens=32, temperature=0)):
                first = first or time.perf_counter()
                parts.append(delta)
            return "".join(parts), first, time.perf_counter()

        async def many():
            return await asyncio.gather(*(one(i) for i in range(8)))

        results = loop.run_until_complete(many())
        assert all(text.strip() for text, _, _ in results)
        # Continuous batching: every stream has started before the first one finishes.
        assert max(first for _, first, _ in results) < min(end for _, _, end in results)

    def test_closing_a_stream_early_aborts_the_request(self, generator, loop):
        async def scenario() -> str:
            story = [{"role": "user", "content": "Write a long story about a dragon."}]
            stream = generator.stream(story, GenerationParams(max_tokens=400))
            received = [await anext(stream) for _ in range(3)]
            assert all(received)
            await stream.aclose()
            await wait_until_idle(generator)
            return await complete(generator, FRANCE, GREEDY)

        assert "Paris" in loop.run_until_complete(scenario())

    def test_cancelling_the_consumer_aborts_the_request(self, generator, loop):
        async def scenario() -> str:
            started = asyncio.Event()

            async def consume() -> None:
                story = [{"role": "user", "content": "Write a long story about a dragon."}]
                async for _ in generator.stream(story, GenerationParams(max_tokens=400)):
                    started.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(started.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_until_idle(generator)
            return await complete(generator, FRANCE, GREEDY)

        assert "Paris" in loop.run_until_complete(scenario())

    def test_too_long_prompt_is_a_clear_error(self, generator, loop):
        long = [{"role": "user", "content": "tell me about serving " * 600}]
        with pytest.raises(GenerationError, match=r"rejected the request: .*maximum context length is 1024"):
            loop.run_until_complete(complete(generator, long, GREEDY))
        assert "Paris" in loop.run_until_complete(complete(generator, FRANCE, GREEDY))


async def wait_until_idle(generator: VLLMGenerator, timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while generator.engine.get_num_unfinished_requests():
        assert time.perf_counter() < deadline, "the aborted request is still running in vLLM"
        await asyncio.sleep(0.05)


# -- OpenAI-compatible server ------------------------------------------------------------------


@pytest.fixture(scope="class")
def server(converted, tmp_path_factory) -> Iterator[str]:
    """``python -m vllm.entrypoints.openai.api_server`` on a free loopback port; its /v1 URL."""
    port, log_path = free_port(), tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ) | vllm_env(make_settings(converted[0], generator=ENGINE).generator)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model", str(packaged_generator_dir(converted[0]))]
    command += ["--served-model-name", "smollm2", "--max-model-len", "1024", "--max-num-seqs", "8"]
    command += ["--enforce-eager", "--disable-log-stats"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_health(proc, f"http://127.0.0.1:{port}/health", log_path)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def remote(tmp_path: Path, base_url: str, **overrides) -> OpenAICompatibleGenerator:
    values = {"kind": "openai", "base_url": base_url, **overrides}
    return build_generator(make_settings(tmp_path, generator=values))


@pytest.mark.slow
class TestOpenAICompatibleGenerator:
    def test_streams_from_the_server(self, server, loop, tmp_path):
        generator = remote(tmp_path, server)  # no model: the server's first

        async def scenario() -> list[str]:
            await generator.check()
            deltas = [delta async for delta in generator.stream(FRANCE, GREEDY)]
            await generator.close()
            return deltas

        deltas = loop.run_until_complete(scenario())
        assert generator.name == "smollm2"
        assert len(deltas) > 3 and "Paris" in "".join(deltas)

    def test_early_close_then_concurrent_requests(self, server, loop, tmp_path):
        generator = remote(tmp_path, server, model="smollm2")

        async def scenario() -> list[str]:
            story = [{"role": "user", "content": "Write a long story about a dragon."}]
            stream = generator.stream(story, GenerationParams(max_tokens=400))
            assert await anext(stream)
            await stream.aclose()
            answers = await asyncio.gather(*(complete(generator, FRANCE, GREEDY) for _ in range(4)))
            await generator.close()
            return answers

        assert all("Paris" in answer for answer in loop.run_until_complete(scenario()))

    def test_unknown_model_is_a_clear_error(self, server, loop, tmp_path):
        generator = remote(tmp_path, server, model="nope")
        with pytest.raises(GenerationError, match=r"does not serve 'nope' \(it serves: smollm2\)"):
            loop.run_until_complete(generator.check())
        not_found = rf"generator at {server} answered HTTP 404: The model `nope` does not exist"
        with pytest.raises(GenerationError, match=not_found):
            loop.run_until_complete(complete(generator, FRANCE, GREEDY))
        loop.run_until_complete(generator.close())


def test_closed_port_is_a_clear_error(loop, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    generator = build_generator(
        make_settings(tmp_path, generator={"kind": "openai", "base_url": url, "model": "m", "timeout_s": 5})
    )
    refused = rf"cannot connect to the generator at {url}: connection refused"
    with pytest.raises(GenerationError, match=refused):
        loop.run_until_complete(complete(generator, FRANCE, GREEDY))
    with pytest.raises(GenerationError, match=refused):
        loop.run_until_complete(generator.check())
    loop.run_until_complete(generator.close())


def test_silent_server_is_a_timeout(loop, tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        settings = {"kind": "openai", "base_url": url, "model": "m", "timeout_s": 1}
        generator = build_generator(make_settings(tmp_path, generator=settings))
        with pytest.raises(GenerationError, match=rf"the generator at {url} did not answer within 1 s"):
            loop.run_until_complete(complete(generator, FRANCE, GREEDY))
        loop.run_until_complete(generator.close())


def wait_for_health(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the vLLM server exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the vLLM server did not become healthy in {timeout:.0f} s: {log_path.read_text()[-3000:]}")
