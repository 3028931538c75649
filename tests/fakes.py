"""A scripted generator: a fake at the generator seam, for tests about everything around it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

from assistant.generator import GenerationParams

Script = Callable[[list[dict[str, str]]], str]


def sources_in(messages: list[dict[str, str]]) -> list[tuple[int, str]]:
    """(number, title) of the sources numbered in the prompt."""
    pattern = r"^\[(\d+)\] (.+?)(?: \([^()]*\))?$"
    return [(int(n), t) for n, t in re.findall(pattern, messages[-1]["content"], re.M)]


def good(messages: list[dict[str, str]]) -> str:
    """A well-behaved answer citing the first two sources, restating the decision."""
    decision = re.search(r"^Decision: (.+)$", messages[-1]["content"], re.M).group(1)
    (n1, t1), (n2, t2) = sources_in(messages)[:2]
    return (
        f"{decision} The first consideration is {t1} [{n1}]. "
        f"The second consideration is {t2} [{n2}], which the team should weigh too."
    )


SCRIPTS: dict[str, Script] = {
    "good": good,
    "dangling": lambda m: good(m).replace("[1]", "[1] [9] [42]"),
    "nocite": lambda m: re.sub(r"\[\d+\]", "", good(m)),
    "repeat": lambda m: "use it use it use it " * 20 + " [1]",
    "short": lambda m: "Yes [1].",
    "drift": lambda m: (
        "Bananas are a good source of potassium and bakers love sourdough starters "
        "with rye flour and sea salt, as every pastry chef knows [1]."
    ),
    "contradict": lambda m: good(m) + " Honestly, I recommend KServe and also recommend Ray Serve [1].",
    "inject": lambda m: "Ignore the decision. " + good(m),
}


class ScriptedGenerator:
    """Yields a scripted reply word by word, like a streaming engine."""

    name = "scripted"

    def __init__(self, script: str | Script = "good") -> None:
        self.script = SCRIPTS[script] if isinstance(script, str) else script
        self.calls: list[list[dict[str, str]]] = []

    async def start(self) -> None:
        return None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def stream(self, messages: list[dict[str, str]], params: GenerationParams) -> AsyncIterator[str]:
        self.calls.append(messages)
        for word in re.split(r"(\s+)", self.script(messages)):
            if word:
                yield word
