"""Rounds of closed-loop clients against a ServeWise that is already up (``make run`` or
``servewise serve``): Serve's overhead and per-hop waits per round, from each answer's ``timings``.

Where ``bench/serve.py`` starts a fresh server and measures one round per level (cold start and
ratios included), this keeps one server and repeats rounds, so round-to-round spread shows:

    .venv/bin/python bench/serve_rounds.py [--url http://127.0.0.1:8000] [--clients 8]
        [--requests-per-client 4] [--rounds 3]

Each round gets its own in-scope dev questions (no prefix-cache hits across rounds). It asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
from answer import questions
from serve_http import TIMEOUT, pct, read_answer
from serve_parts import closed_loop

KEYS = (
    "serve_overhead_ms",
    "wait_retriever_ms",
    "to_retriever_ms",
    "queued_retriever_ms",
    "back_retriever_ms",
    "wait_reranker_ms",
    "wait_generator_ms",
    "retrieve_ms",
    "first_token_ms",
)


async def timings(client: httpx.AsyncClient, url: str, question: str) -> dict[str, float]:
    """One ``POST /v1/ask/stream`` read to the end; the final answer's ``timings``."""
    state: dict = {"parts": [], "stamps": [], "answer": None, "error": None, "problems": []}
    await read_answer(client, f"{url}/v1/ask/stream", question, state)
    if state["answer"] is None:
        raise RuntimeError(state["error"] or "the stream ended without an answer")
    return state["answer"]["timings"]


async def one_round(client: httpx.AsyncClient, url: str, qs: list[str], clients: int) -> list[dict]:
    """``clients`` closed loops over ``qs``; each answer's ``timings``."""
    run = await closed_loop(lambda q: timings(client, url, q), qs, clients)
    return run["results"]


async def main_async(args: argparse.Namespace) -> None:
    per_round = args.clients * args.requests_per_client
    pool = questions(per_round * args.rounds)
    print("round  " + "  ".join(f"{k.removesuffix('_ms')} p50/p95" for k in KEYS))
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for n in range(args.rounds):
            rows = await one_round(client, args.url, pool[n * per_round : (n + 1) * per_round], args.clients)
            cells = []
            for key in KEYS:
                values = [r[key] for r in rows if key in r]
                cells.append(f"{pct(values, 0.5) or 0:.1f}/{pct(values, 0.95) or 0:.1f}")
            print(f"{n + 1:5d}  " + "  ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
