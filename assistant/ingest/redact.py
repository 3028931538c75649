"""Credential redaction, applied at ingest so secrets are never stored, embedded or returned."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

#: Env var / key names whose literal values are treated as credentials.
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|"
    r"auth|session[_-]?key|signature|pwd)",
    re.IGNORECASE,
)

#: Well-known credential shapes inside free text.
_SECRET_VALUE = re.compile(
    r"(hf_[A-Za-z0-9]{16,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|sk-[A-Za-z0-9_-]{20,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----)"
)

#: ``NAME=value`` / ``NAME: value`` assignments of secret-looking names in prose or scripts.
_ASSIGNMENT = re.compile(
    r"(?P<name>\b[A-Za-z0-9_]*?(?:PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)[A-Za-z0-9_]*)"
    r"(?P<sep>\s*[=:]\s*)(?P<q>[\"']?)(?P<value>[^\s\"']{6,})",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a variable or key name looks like it holds a credential."""
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """Replace credential-shaped substrings in free text."""
    text = _SECRET_VALUE.sub(REDACTED, text)

    def _sub(match: re.Match[str]) -> str:
        if match.group("value").startswith(("$", "<", "{")):
            return match.group(0)  # a reference, not a literal
        return f"{match.group('name')}{match.group('sep')}{match.group('q')}{REDACTED}"

    return _ASSIGNMENT.sub(_sub, text)


def redact_value(value: Any) -> Any:
    """Redact credential shapes inside any string found in a nested structure."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value


def redact_object(obj: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Redact a Kubernetes object; return the cleaned copy and how many values were removed."""
    count = 0
    if obj.get("kind") == "Secret":
        obj = dict(obj)
        for key in ("data", "stringData"):
            if isinstance(obj.get(key), dict):
                count += len(obj[key])
                obj[key] = {k: REDACTED for k in obj[key]}
    cleaned, n = _redact_env(obj)
    return redact_value(cleaned), count + n


def _redact_env(node: Any) -> tuple[Any, int]:
    """Walk the object; any ``{name: X, value: literal}`` pair with a secret-looking name is cut."""
    if isinstance(node, list):
        items = [_redact_env(v) for v in node]
        return [v for v, _ in items], sum(n for _, n in items)
    if not isinstance(node, dict):
        return node, 0
    out: dict[str, Any] = {}
    count = 0
    for key, value in node.items():
        out[key], n = _redact_env(value)
        count += n
    name = out.get("name")
    value = out.get("value")
    literal = isinstance(value, str | int | float) and str(value).strip()
    if isinstance(name, str) and literal and is_secret_name(name):
        out["value"] = REDACTED
        count += 1
    return out, count
