"""Prose loaders: Markdown (with optional front matter), plain text and HTML, split by headings.

Every passage keeps its section path (``Title › Section › Subsection``) as its locator.
Front matter decides what a file is:

- ``id`` + ``favours``: a decision criterion, indexed whole as one passage;
- ``type: platform``: a platform fact sheet, one passage per ``##`` section;
- anything else: a document, one passage per section at any heading level.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath

import yaml

from assistant.errors import SkipSource
from assistant.ingest.redact import redact_text
from assistant.types import PLATFORMS, Passage

SEP = " › "
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(slots=True)
class Section:
    """A run of body text under one heading path."""

    path: list[str]
    lines: list[str] = field(default_factory=list)

    @property
    def body(self) -> str:
        return "\n".join(self.lines).strip()


def slug(text: str) -> str:
    """A URL-style anchor for a heading."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def split_front_matter(text: str) -> tuple[dict, str]:
    """Return (front matter mapping, body); no front matter gives an empty mapping."""
    if not text.startswith("---"):
        return {}, text
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise SkipSource(f"front matter is not valid YAML ({_yaml_where(exc)})") from exc
    if not isinstance(meta, dict):
        raise SkipSource("front matter must be a mapping")
    return meta, text[match.end() :]


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "parse error"
    return f"{problem} at line {mark.line + 1}" if mark else str(problem)


def markdown_sections(body: str, max_level: int = 6) -> list[Section]:
    """Split Markdown into sections by ATX headings up to ``max_level``, ignoring code fences."""
    sections = [Section(path=[])]
    stack: list[tuple[int, str]] = []
    in_fence = False
    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading and len(heading.group(1)) <= max_level:
            level = len(heading.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading.group(2)))
            sections.append(Section(path=[title for _, title in stack]))
        else:
            sections[-1].lines.append(line)
    return [s for s in sections if s.body]


def text_sections(body: str) -> list[Section]:
    """Plain text: a short line standing alone between blank lines (no final period) is a heading."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", body)]
    sections = [Section(path=[])]
    for block in blocks:
        stripped = block.strip()
        if not stripped:
            continue
        if "\n" not in stripped and len(stripped) <= 70 and not stripped.endswith((".", ":", "?")):
            sections.append(Section(path=[stripped]))
        else:
            sections[-1].lines.extend(["", block])
    return [s for s in sections if s.body]


def _pieces(text: str, limit: int) -> list[str]:
    """Split an over-long body at paragraph (then line) boundaries into pieces under ``limit``."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    current = ""
    for para in re.split(r"(\n\s*\n|\n)", text):
        if current and len(current) + len(para) > limit:
            pieces.append(current.strip())
            current = ""
        current += para
        while len(current) > limit:
            pieces.append(current[:limit].strip())
            current = current[limit:]
    if current.strip():
        pieces.append(current.strip())
    return [p for p in pieces if p]


def guess_platform(text: str) -> str:
    """Which platform prose is about, from how often each is named."""
    low = text.lower()
    kserve = low.count("kserve") + low.count("inferenceservice") + low.count("knative")
    ray = low.count("ray serve") + low.count("rayservice") + low.count("kuberay") + low.count("ray.serve")
    if kserve > 2 * ray and kserve >= 2:
        return "kserve"
    if ray > 2 * kserve and ray >= 2:
        return "ray-serve"
    return "neutral"


def _doc_id(source: str, meta: dict) -> str:
    if meta.get("id"):
        return str(meta["id"])
    parts = PurePosixPath(source).with_suffix("").parts
    if "platforms" in parts:
        return "/".join(parts[parts.index("platforms") + 1 :])
    return str(PurePosixPath(source).with_suffix(""))


def _criterion(meta: dict, body: str, source: str) -> list[Passage]:
    missing = [k for k in ("id", "title", "favours") if not meta.get(k)]
    if missing:
        raise SkipSource(f"criterion front matter lacks {', '.join(missing)}")
    favours = str(meta["favours"])
    if favours not in PLATFORMS:
        raise SkipSource(f"criterion 'favours' must be one of {', '.join(PLATFORMS)}, not {favours!r}")
    text = body.strip()
    text = re.sub(r"^#\s+.*\n", "", text).strip()
    signals = {
        "kserve": [str(s) for s in meta.get("kserve_signals") or []],
        "ray-serve": [str(s) for s in meta.get("ray_serve_signals") or []],
    }
    title = str(meta["title"])
    return [
        Passage(
            text=f"{title}\n\n{text}",
            ref=str(meta["id"]),
            title=title,
            locator=f"{meta.get('kind', 'criterion')}{SEP}{title}",
            source_type="criterion",
            platform=favours,
            meta={
                "favours": favours,
                "dimension": str(meta.get("dimension", "")),
                "kind": str(meta.get("kind", "")),
                "signals": json.dumps(signals),
            },
        )
    ]


def _sectioned(
    sections: list[Section], doc_id: str, title: str, source_type: str, platform: str, limit: int
) -> list[Passage]:
    passages: list[Passage] = []
    for section in sections:
        path = section.path or [title]
        if path[0] != title:
            path = [title, *path]
        locator = SEP.join(path)
        anchor = slug(path[-1]) if len(path) > 1 else "intro"
        pieces = _pieces(section.body, limit)
        for n, piece in enumerate(pieces, 1):
            loc = locator if len(pieces) == 1 else f"{locator} (part {n})"
            plat = platform if platform != "auto" else guess_platform(f"{locator}\n{piece}")
            passages.append(
                Passage(
                    text=f"{loc}\n\n{piece}",
                    ref=f"{doc_id}#{anchor}",
                    title=title,
                    locator=loc,
                    source_type=source_type,  # type: ignore[arg-type]
                    platform=plat,
                )
            )
    return passages


def load_markdown(text: str, source: str, max_chars: int) -> list[Passage]:
    """Load a Markdown file: criterion, platform fact sheet or general document."""
    meta, body = split_front_matter(text)
    body = redact_text(body)
    if meta.get("id") and "favours" in meta:
        return _criterion(meta, body, source)
    heading = re.search(r"^#\s+(.+)$", body, re.MULTILINE)
    title = str(meta.get("title") or (heading.group(1).strip() if heading else PurePosixPath(source).stem))
    if meta.get("type") == "platform":
        platform = str(meta.get("platform", "neutral"))
        sections = markdown_sections(body, max_level=2)
        return _sectioned(sections, _doc_id(source, meta), title, "platform", platform, max_chars)
    sections = markdown_sections(body)
    platform = str(meta.get("platform", "auto"))
    return _sectioned(sections, _doc_id(source, meta), title, "doc", platform, max_chars)


def load_text(text: str, source: str, max_chars: int) -> list[Passage]:
    """Load plain text, taking stand-alone short lines as headings."""
    text = redact_text(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    title = lines[0] if lines and len(lines[0]) <= 80 else PurePosixPath(source).stem
    doc_id = str(PurePosixPath(source).with_suffix(""))
    return _sectioned(text_sections(text), doc_id, title, "doc", "auto", max_chars)


class _HTMLToMarkdown(HTMLParser):
    """Just enough HTML -> Markdown to keep headings, paragraphs, list items and table rows."""

    BLOCK = frozenset({"p", "div", "li", "tr", "pre", "br", "section", "article", "blockquote", "dd", "dt"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.prefix = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in {"script", "style", "nav", "footer", "noscript", "template"}:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.out.append("\n\n- " if tag == "li" else "\n\n")
        elif tag in {"td", "th"}:
            self.out.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style", "nav", "footer", "noscript", "template"}:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def load_html(text: str, source: str, max_chars: int) -> list[Passage]:
    """Load HTML by converting its structure to Markdown headings first."""
    parser = _HTMLToMarkdown()
    parser.feed(text)
    parser.close()
    markdown = re.sub(r"\n{3,}", "\n\n", "".join(parser.out)).strip()
    return load_markdown(markdown, source, max_chars)
