"""Import direction: assistant never imports ray, fastapi or gradio; only serve/ imports ray and
fastapi; only ui/ imports gradio; nothing imports back from serve/, ui/ or eval/ into assistant/.
The environment is read only in assistant/config.py (and the CLI's offline defaults are writes).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVING = {"ray", "fastapi", "starlette", "uvicorn"}


def imports(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module.split(".")[0]


def test_assistant_imports_no_serving_or_ui_framework():
    bad = [(str(p), m) for p, m in imports("assistant") if m in SERVING | {"gradio", "serve", "ui", "eval"}]
    assert bad == []


def test_only_serve_imports_ray_and_fastapi():
    for package in ("ui", "eval", "bench", "corpus"):
        if (ROOT / package).is_dir():
            bad = [(str(p), m) for p, m in imports(package) if m in SERVING]
            assert bad == [], package


def test_only_ui_imports_gradio():
    for package in ("assistant", "serve", "eval", "bench"):
        if (ROOT / package).is_dir():
            assert [(str(p), m) for p, m in imports(package) if m == "gradio"] == [], package


def test_environment_read_only_in_config():
    offenders = []
    for package in ("assistant", "serve", "ui", "eval"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "config.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                reads = (
                    isinstance(node, ast.Attribute)
                    and node.attr in {"environ", "getenv"}
                    and not _is_setdefault_target(tree, node)
                )
                if reads:
                    offenders.append(f"{path}:{node.lineno}")
    assert offenders == []


def _is_setdefault_target(tree: ast.AST, attr: ast.Attribute) -> bool:
    """``os.environ.setdefault(...)`` writes defaults at an entry point; that is allowed."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and node.func.value is attr
        ):
            return True
    return False
