"""``servewise``: the command line. Settings are loaded here, once, and passed down.

Heavy imports (torch, chromadb) happen inside commands so ``servewise --help`` is instant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from assistant.config import Settings, apply_offline_env, deep_merge, load_settings
from assistant.errors import ServeWiseError

if TYPE_CHECKING:
    from assistant.feedback import FeedbackStore


class Context:
    """What every command gets: the settings tree (and how to rebuild it with a command's flags)."""

    def __init__(self, config_file: str | None, overrides: dict[str, Any]) -> None:
        self.config_file = config_file
        self.overrides = overrides
        self.settings = load_settings(config_file, overrides)

    def with_flags(self, flags: dict[str, Any]) -> Settings:
        """The settings with a command's flags on top (layered again, so a profile flag applies)."""
        return load_settings(self.config_file, deep_merge(self.overrides, flags))


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML settings file (default: $SERVEWISE_CONFIG).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the index lives (default: ./.servewise or $SERVEWISE_DATA_DIR).",
)
@click.version_option(package_name="servewise")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, data_dir: str | None) -> None:
    """ServeWise: decide between KServe and Ray Serve, grounded in criteria and your manifests."""
    apply_offline_env()
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    ctx.obj = Context(config_file, overrides)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-v", "--verbose", is_flag=True, help="Also list unchanged files.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def ingest(ctx: Context, paths: tuple[str, ...], verbose: bool, as_json: bool) -> None:
    """Index Markdown, text, HTML and Kubernetes YAML files (incremental)."""
    from assistant.ingest.indexer import Ingestor

    report = Ingestor.from_config(ctx.settings)(paths)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "files": [vars(f) for f in report.files],
                    "embedded": report.embedded,
                    "total_chunks": report.total_chunks,
                    "seconds": report.seconds,
                },
                indent=2,
            )
        )
        return
    marks = {"added": "+", "changed": "~", "unchanged": "=", "removed": "-", "skipped": "!"}
    for f in report.files:
        if f.status == "unchanged" and not verbose:
            continue
        detail = f.reason if f.status == "skipped" else f"{f.chunks} chunk{'s' * (f.chunks != 1)}"
        click.echo(f"{marks[f.status]} {f.status:<9} {f.source}: {detail}")
        for obj in f.objects if f.status != "unchanged" or verbose else []:
            click.echo(f"    {obj}")
        for skipped in f.skipped_objects:
            click.echo(f"    ! skipped {skipped}")
    click.echo(report.summary())


@cli.command()
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=None, help="Number of results.")
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Only this source type: criterion, platform, manifest, doc (repeatable).",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Only this platform: kserve, ray-serve, neutral (repeatable).",
)
@click.option("--reranker", type=click.Choice(["maxsim", "cross-encoder", "none"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@pass_ctx
def search(
    ctx: Context,
    query: str,
    k: int | None,
    types: tuple[str, ...],
    platforms: tuple[str, ...],
    reranker: str | None,
    as_json: bool,
) -> None:
    """Ranked passages for QUERY, with score, source and section or field path."""
    from assistant.retriever import Query
    from assistant.search import Searcher

    parsed = Query.parse(query, types, platforms)
    result = Searcher.from_config(ctx.settings, reranker=reranker)(parsed, k)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    if not result.hits:
        click.echo("No matching passages in the index.")
    for n, hit in enumerate(result.hits, 1):
        c = hit.chunk
        click.echo(f"{n}. {c.ref}  [{c.source_type}, {c.platform}]  score {hit.score:.4f}")
        click.echo(f"   {c.source} :: {c.locator}")
        for field in c.fields()[:4]:
            click.echo(f"   {field['path']} = {field['value']}")
        preview = " ".join(c.text.split())[:160]
        click.echo(f"   {preview}")


def _print_citations(answer) -> None:
    if answer.recommendation:
        click.echo(f"recommendation: {answer.recommendation} (confidence {answer.confidence:.2f})")
    for n, c in enumerate(answer.citations, 1):
        click.echo(f"  [{n}] {c.id} :: {c.locator} ({c.source})")


async def _ask_streaming(assistant, question: str, conversation: str | None, echo: bool):
    answer = None
    async for event in assistant.stream(question, conversation):
        if event["type"] == "token" and echo:
            click.echo(event["text"], nl=False)
        elif event["type"] == "replaced" and echo:
            click.echo(f"\n\n[draft replaced: {event['reason']}; grounded answer follows]")
        elif event["type"] == "answer":
            answer = event["answer"]
    return answer


def _build_assistant(settings: Settings):
    from assistant.pipeline import Assistant

    return Assistant.from_config(settings)


@cli.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the Answer JSON.")
@click.option("--conversation", default=None, help="Continue a conversation by its id.")
@pass_ctx
def ask(ctx: Context, question: str, as_json: bool, conversation: str | None) -> None:
    """Answer QUESTION with a recommendation (where warranted) and citations."""
    import asyncio

    from assistant.conversations import Conversations
    from assistant.pipeline import validate_question

    question = validate_question(question, ctx.settings.answer.max_question_chars)
    if conversation:
        Conversations(Path(ctx.settings.data_dir) / "conversations.sqlite").require(conversation)
    assistant = _build_assistant(ctx.settings)

    async def run():
        await assistant.generator.start()
        try:
            return await _ask_streaming(assistant, question, conversation, echo=not as_json)
        finally:
            await assistant.generator.close()

    answer = asyncio.run(run())
    if as_json:
        click.echo(answer.model_dump_json(indent=2))
        return
    if answer.declined or answer.model.endswith("(composed)"):
        click.echo(answer.answer)
    click.echo()
    _print_citations(answer)
    click.echo(f"conversation: {answer.conversation_id}")


@cli.command()
@click.option("--conversation", default=None, help="Continue a conversation by its id.")
@pass_ctx
def chat(ctx: Context, conversation: str | None) -> None:
    """Interactive chat: tokens stream as they come; /new starts over, /quit or Ctrl-D leaves."""
    import asyncio

    asyncio.run(_chat_loop(_build_assistant(ctx.settings), conversation))


async def _chat_loop(assistant, conversation: str | None) -> None:
    from assistant.errors import InputError

    await assistant.generator.start()
    click.echo("ServeWise chat. Ask about KServe vs Ray Serve or your manifests. /new, /quit.")
    try:
        while True:
            try:
                question = input("\nyou> ").strip()
            except EOFError:
                break
            if question in {"/quit", "/exit"}:
                break
            if question == "/new":
                conversation = None
                continue
            if not question:
                continue
            click.echo("servewise> ", nl=False)
            try:
                answer = await _ask_streaming(assistant, question, conversation, echo=True)
            except InputError as exc:
                click.echo(f"error: {exc}")
                continue
            if answer.declined or answer.model.endswith("(composed)"):
                click.echo(answer.answer, nl=False)
            click.echo()
            _print_citations(answer)
            conversation = answer.conversation_id
    finally:
        await assistant.generator.close()


@cli.group()
def feedback() -> None:
    """Thumbs up/down recorded on answers: list them, export them as evaluation items."""


def _feedback_filters(command: Callable) -> Callable:
    """``--rating`` and ``--since``, shared by ``feedback list`` and ``feedback export``."""
    since = click.option("--since", "since_text", metavar="YYYY-MM-DD", help="Only from this day on (UTC).")
    rating = click.option("--rating", type=click.Choice(["up", "down"]), help="Only this rating.")
    return rating(since(command))


def _since(text: str | None) -> date | None:
    """The ``--since`` date; a one-line error when it is not YYYY-MM-DD."""
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        raise click.ClickException(f"--since wants a date YYYY-MM-DD, not {text!r}") from None


def _feedback_store(settings: Settings) -> FeedbackStore | None:
    """The data dir's feedback store, or None when nothing was recorded (creates no files)."""
    from assistant.feedback import FEEDBACK_FILE, FeedbackStore

    exists = (Path(settings.data_dir) / FEEDBACK_FILE).exists()
    return FeedbackStore.from_config(settings) if exists else None


@feedback.command("list")
@_feedback_filters
@pass_ctx
def feedback_list(ctx: Context, rating: str | None, since_text: str | None) -> None:
    """One line per rating, oldest first: time, rating, source, conversation, question, comment."""
    since, store = _since(since_text), _feedback_store(ctx.settings)
    for fb in store.find(rating, since) if store else []:
        comment = f"  # {fb.comment}" if fb.comment else ""
        question = " ".join(fb.question.split())[:80]
        when = f"{fb.at:%Y-%m-%dT%H:%M:%SZ}"
        click.echo(f"{when} {fb.rating:<4} {fb.source} {fb.conversation_id} {question}{comment}")


@feedback.command("export")
@_feedback_filters
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="FILE.jsonl or FILE.yaml.")
@pass_ctx
def feedback_export(ctx: Context, rating: str | None, since_text: str | None, out: str | None) -> None:
    """Evaluation dataset items, one per question rated (latest rating wins); a thumbs-up proposes
    gold labels for review. JSONL on stdout unless --out names a .jsonl or .yaml/.yml file."""
    from assistant.feedback import dump_items

    suffix = Path(out).suffix.lower() if out else ".jsonl"
    if suffix not in {".jsonl", ".yaml", ".yml"}:
        raise click.ClickException(f"--out must end in .jsonl, .yaml or .yml, not {out!r}")
    since, store = _since(since_text), _feedback_store(ctx.settings)
    items = store.export_items(rating, since) if store else []
    text = dump_items(items, "jsonl" if suffix == ".jsonl" else "yaml")
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    click.echo(f"{len(items)} item{'s' * (len(items) != 1)} written to {out or 'stdout'}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line and exit 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="servewise", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ServeWiseError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
