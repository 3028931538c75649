"""A vLLM general plugin (entry point ``vllm.general_plugins``): vLLM loads it in each of its own
processes (the engine core and every worker), where ServeWise's settings are not loaded.

vLLM 0.32's CPU attention picks its AMX kernel for bfloat16 on CPUs with AMX tiles. With the
packaged SmolLM2-135M (head size 64) that kernel gives wrong text: asked "What is the capital of
France?" greedily, it answered "L'Étoile, la Marseillaise, la femme, ...", where vLLM's portable
``vec`` kernel and transformers both answer "The capital of France is Paris.", at the same speed
(209 tokens/s at 8 streams on 2 cores). ``generator.cpu_attention: vec`` (the default) reaches this
plugin as ``SW_VLLM_CPU_ATTENTION``, exported by :func:`assistant.vllm_generator.vllm_env` like the
``VLLM_CPU_*`` variables, so the engine never picks AMX attention; ``vllm`` leaves vLLM's pick.
"""

from __future__ import annotations

from typing import Any

from assistant.config import exported_cpu_attention


def register() -> None:
    """Patch vLLM's CPU attention kernel choice when the exported setting is ``vec`` (idempotent)."""
    if exported_cpu_attention() != "vec":
        return
    try:
        from vllm.v1.attention.backends import cpu_attn
    except ImportError:  # another vLLM layout or build: nothing to patch
        return
    chosen = getattr(cpu_attn, "_get_attn_isa", None)
    if chosen is None or hasattr(chosen, "wrapped"):  # already ours
        return
    cpu_attn._get_attn_isa = without_amx(chosen)


def without_amx(choose: Any) -> Any:
    """``choose`` (vLLM's ``_get_attn_isa``), with ``amx`` replaced by ``vec``."""

    def _get_attn_isa(*args: Any, **kwargs: Any) -> str:
        isa = choose(*args, **kwargs)
        return "vec" if isa == "amx" else isa

    _get_attn_isa.wrapped = choose  # type: ignore[attr-defined]
    return _get_attn_isa
