"""Regenerate the ``serveConfigV2`` block of ``serve/kuberay/rayservice.yaml`` from the settings tree.

    .venv/bin/python serve/kuberay/generate.py           # rewrite the block in place
    .venv/bin/python serve/kuberay/generate.py --check   # exit 1 when the file is stale (CI)

The block is ``yaml.safe_dump(serve_config(settings), sort_keys=False)`` (``serve/config.py``) for the
cluster's settings: the ``gpu`` profile, ``/data`` and the in-cluster Chroma service. Everything else in
the file (comments included) is kept as it is. The settings are loaded with an empty environment, so
nothing from the machine that runs this (``SERVEWISE_*`` variables, ``SERVEWISE_CONFIG``) leaks in; on
the cluster, the pods' environment still applies on top (secrets such as the auth token come from there).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RAYSERVICE = HERE / "rayservice.yaml"
COMMAND = ".venv/bin/python serve/kuberay/generate.py"

#: How the cluster differs from the defaults (the pods' env vars repeat the last two).
CLUSTER_OVERRIDES: dict[str, Any] = {
    "serve": {"profile": "gpu"},
    "data_dir": "/data",
    "store": {"chroma_url": "http://servewise-chroma:8000"},
}

_KEY = re.compile(r"^(?P<indent> *)serveConfigV2: *\|[-+]? *$")


def cluster_settings():
    """The settings the RayService runs with (``assistant.config.Settings``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from assistant.config import load_settings

    return load_settings(overrides=CLUSTER_OVERRIDES, environ={})


def serve_config_text(settings=None) -> str:
    """The expected ``serveConfigV2`` string."""
    import yaml

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from serve.config import serve_config

    return yaml.safe_dump(serve_config(settings or cluster_settings()), sort_keys=False)


def render(text: str, block: str) -> str:
    """``text`` (the RayService file) with its ``serveConfigV2: |`` block replaced by ``block``."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _KEY.match(line)]
    if len(starts) != 1:
        raise ValueError(f"expected one 'serveConfigV2: |' line, found {len(starts)}")
    start = starts[0]
    indent = len(_KEY.match(lines[start])["indent"])
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines belong to what follows
        end -= 1
    pad = " " * (indent + 2)
    body = [pad + line if line.strip() else "\n" for line in block.splitlines(keepends=True)]
    out = "".join([*lines[:start], f"{' ' * indent}serveConfigV2: |\n", *body, *lines[end:]])
    _verify(out, block)
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _verify(text: str, block: str) -> None:
    import yaml

    found = yaml.safe_load(text)["spec"]["serveConfigV2"]
    if found != block:
        raise ValueError("the rewritten serveConfigV2 does not read back as generated")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file is stale; write nothing.")
    args = parser.parse_args(argv)
    current = RAYSERVICE.read_text(encoding="utf-8")
    wanted = render(current, serve_config_text())
    shown = RAYSERVICE.relative_to(ROOT)
    if wanted == current:
        print(f"{shown}: serveConfigV2 is up to date")
        return 0
    if args.check:
        print(f"{shown}: serveConfigV2 is stale: run {COMMAND}", file=sys.stderr)
        return 1
    RAYSERVICE.write_text(wanted, encoding="utf-8")
    print(f"{shown}: serveConfigV2 regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
