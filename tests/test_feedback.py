"""Feedback: the store over real SQLite and a real conversation store, the export through the real
CLI, and ``POST /v1/feedback`` through the FastAPI app in-process."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from assistant.cli import cli
from assistant.conversations import Conversations
from assistant.errors import InputError, InputTooLargeError, NotFoundError
from assistant.feedback import REVIEW_DOWN, REVIEW_NO_ANSWER, REVIEW_PROPOSED, FeedbackStore
from assistant.serve_settings import ServeSettings
from assistant.types import Answer, Citation, Turn
from serve.api import create_api

DAY = 86400.0
T0 = datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()


def cite(ref: str) -> Citation:
    return Citation(id=ref, title=ref, source="corpus/x.md", locator=ref, text="t")


def answer(text: str, cid: str = "", **fields) -> Answer:
    return Answer(answer=text, model="m", conversation_id=cid, **fields)


class Clock:
    """A settable clock: ``now`` seconds since the epoch."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def conversations(tmp_path) -> Conversations:
    return Conversations(tmp_path / "conversations.sqlite")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path, conversations, clock) -> FeedbackStore:
    """The store where ``--data-dir tmp_path`` finds it."""
    return FeedbackStore(tmp_path / "feedback.sqlite", conversations, history_turns=6, clock=clock)


def converse(conversations: Conversations, *exchanges: tuple[str, str]) -> str:
    """A conversation with these (question, answer) exchanges appended as the pipeline does."""
    cid = conversations.create()
    for question, reply in exchanges:
        conversations.append(
            cid, [Turn(role="user", content=question), Turn(role="assistant", content=reply)]
        )
    return cid


UP_ANSWER = dict(
    recommendation="ray-serve",
    confidence=0.8,
    citations=[
        cite("fit/ray-serve-existing-ray"),
        cite("InferenceService/sklearn-iris"),
        cite("ray-serve/overview#deployments"),
        cite("review/rollback-unit"),
    ],
)


# -- the store ------------------------------------------------------------------------------------
def test_record_rates_the_latest_exchange_with_earlier_turns_as_history(store, conversations):
    cid = converse(conversations, ("We run Ray.", "Noted."), ("Which platform?", "Ray Serve [1]."))
    fb = store.record(
        cid, "up", comment=" good ", answer=answer("Ray Serve [1].", cid, **UP_ANSWER).model_dump()
    )
    assert (fb.question, fb.answer_text, fb.comment, fb.source) == (
        "Which platform?",
        "Ray Serve [1].",
        "good",
        "api",
    )
    assert [t.content for t in fb.history] == ["We run Ray.", "Noted."]
    assert fb.at == datetime(2025, 3, 1, 12, tzinfo=UTC) and len(fb.id) == 32
    assert store.find() == [fb]


def test_the_answer_sent_picks_an_earlier_exchange(store, conversations):
    cid = converse(conversations, ("First?", "One."), ("Second?", "Two."))
    fb = store.record(cid, "down", answer=answer("One."))
    assert (fb.question, fb.history) == ("First?", [])
    with pytest.raises(InputError, match="not an answer of conversation"):
        store.record(cid, "up", answer=answer("Never said."))
    with pytest.raises(InputError, match=r"answer\.conversation_id 'other'"):
        store.record(cid, "up", answer=answer("One.", "other"))


def test_bad_input_is_refused_with_a_clear_message(store, conversations):
    cid = converse(conversations, ("Q?", "A."))
    with pytest.raises(NotFoundError, match="unknown conversation id 'nope'"):
        store.record("nope", "up")
    with pytest.raises(InputError, match="no answered question"):
        store.record(conversations.create(), "up")
    with pytest.raises(InputTooLargeError, match="2001 characters; the limit is 2000"):
        store.record(cid, "down", comment="x" * 2001)
    with pytest.raises(InputError, match="rating must be 'up' or 'down'"):
        store.record(cid, "meh")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="answer is not an Answer JSON: answer: Field required"):
        store.record(cid, "up", answer={"recommendation": "kserve"})
    assert store.find() == []


def test_export_proposes_labels_from_a_thumbs_up_only(store, conversations):
    up = converse(conversations, ("Which platform?", "Ray Serve [1]."))
    out = converse(conversations, ("Best pizza?", "Not covered."))
    down = converse(conversations, ("Canary on KServe?", "Wrong."))
    bare = converse(conversations, ("Cold start?", "Scale to zero."))
    store.record(up, "up", answer=answer("Ray Serve [1].", up, **UP_ANSWER))
    store.record(out, "up", answer=answer("Not covered.", declined=True))
    store.record(down, "down", comment="cited nothing")
    store.record(bare, "up")
    items = {item["question"]: item for item in store.export_items()}
    assert items["Which platform?"] == {
        "id": store.find()[0].item_id,
        "question": "Which platform?",
        "history": [],
        "platform": "ray-serve",
        "criteria": ["fit/ray-serve-existing-ray", "review/rollback-unit"],
        "scope": "in",
        "source": "feedback",
        "review": REVIEW_PROPOSED,
        "feedback": {
            "rating": "up",
            "comment": "",
            "at": "2025-03-01T12:00:00Z",
            "answer_text": "Ray Serve [1].",
            "recommendation": "ray-serve",
            "cited": [c.id for c in UP_ANSWER["citations"]],
        },
    }
    assert {k: items["Best pizza?"][k] for k in ("platform", "criteria", "scope")} == {
        "platform": "none",
        "criteria": [],
        "scope": "out",
    }
    for question, review in [("Canary on KServe?", REVIEW_DOWN), ("Cold start?", REVIEW_NO_ANSWER)]:
        assert items[question]["review"] == review
        assert not {"platform", "criteria", "scope"} & set(items[question])
    assert items["Canary on KServe?"]["feedback"]["comment"] == "cited nothing"
    assert all(item["id"].startswith("fb-") for item in items.values())


def test_the_same_question_in_a_conversation_is_one_item_latest_rating_wins(store, conversations, clock):
    cid = converse(conversations, ("Which?", "KServe."), ("Which?", "Ray Serve."))
    other = converse(conversations, ("Which?", "KServe."))
    store.record(cid, "up", answer=answer("KServe."))
    clock.now += 60
    store.record(cid, "down")
    clock.now += 60
    store.record(other, "up")
    items = store.export_items()
    assert [(i["question"], i["feedback"]["rating"]) for i in items] == [("Which?", "down"), ("Which?", "up")]
    assert items[0]["history"] == [
        {"role": "user", "content": "Which?"},
        {"role": "assistant", "content": "KServe."},
    ]
    assert len({i["id"] for i in items}) == 2
    assert [i["feedback"]["rating"] for i in store.export_items(rating="up")] == ["up"]  # cid's up is stale
    assert len(store.find()) == 3  # every rating is kept


def test_since_filters_by_utc_day(store, conversations, clock):
    for day, question in enumerate(["Day one?", "Day two?", "Day three?"]):
        clock.now = T0 + day * DAY
        store.record(converse(conversations, (question, "A.")), "up")
    assert [fb.question for fb in store.find(since=date(2025, 3, 2))] == ["Day two?", "Day three?"]
    assert [i["question"] for i in store.export_items(since=date(2025, 3, 3))] == ["Day three?"]
    assert store.export_items(rating="down") == []


def test_concurrent_records_from_async_code_all_land(store, conversations):
    cids = [converse(conversations, (f"Q{n}?", "A.")) for n in range(16)]

    async def rate_all():
        await asyncio.gather(*(asyncio.to_thread(store.record, cid, "up") for cid in cids))

    asyncio.run(rate_all())
    assert sorted(fb.question for fb in store.find()) == sorted(f"Q{n}?" for n in range(16))


# -- the CLI --------------------------------------------------------------------------------------
def run_cli(tmp_path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "feedback", *args])


@pytest.fixture
def recorded(store, conversations, clock) -> FeedbackStore:
    """An up (with its answer) on day one and a down on day two."""
    cid = converse(conversations, ("Which platform?", "Ray Serve [1]."))
    store.record(cid, "up", answer=answer("Ray Serve [1].", cid, **UP_ANSWER), source="gradio")
    clock.now += DAY
    store.record(converse(conversations, ("Canary?", "Wrong.")), "down", comment="no")
    return store


def test_cli_exports_yaml_items_like_the_dev_set(tmp_path, recorded):
    out = tmp_path / "feedback.yaml"
    result = run_cli(tmp_path, "export", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"2 items written to {out}\n"
    items = yaml.safe_load(out.read_text())["items"]
    assert [(i["question"], i["feedback"]["rating"]) for i in items] == [
        ("Which platform?", "up"),
        ("Canary?", "down"),
    ]
    assert all(i["id"].startswith("fb-") and i["question"] for i in items)
    assert items[0]["criteria"] == ["fit/ray-serve-existing-ray", "review/rollback-unit"]


def test_cli_exports_jsonl_to_a_file_or_stdout_with_filters(tmp_path, recorded):
    out = tmp_path / "up.jsonl"
    assert run_cli(tmp_path, "export", "--rating", "up", "--out", str(out)).exit_code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["platform"] == "ray-serve"
    result = run_cli(tmp_path, "export", "--since", "2025-03-02")
    assert [json.loads(line)["question"] for line in result.stdout.splitlines()] == ["Canary?"]
    assert result.stderr == "1 item written to stdout\n"


def test_cli_lists_one_line_per_rating(tmp_path, recorded):
    lines = run_cli(tmp_path, "list").stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("2025-03-01T12:00:00Z up   gradio ") and lines[0].endswith("Which platform?")
    assert lines[1].endswith("Canary?  # no")


def test_cli_errors_are_one_line(tmp_path, recorded):
    for args, message in [
        (["export", "--since", "yesterday"], "Error: --since wants a date YYYY-MM-DD, not 'yesterday'\n"),
        (["export", "--out", str(tmp_path / "x.csv")], "Error: --out must end in .jsonl, .yaml or .yml"),
    ]:
        result = run_cli(tmp_path, *args)
        assert result.exit_code == 1 and result.stderr.startswith(message), result.output
        assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_cli_with_nothing_recorded_writes_nothing_and_creates_no_store(tmp_path):
    result = run_cli(tmp_path, "export")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "0 items written to stdout\n")
    assert not (tmp_path / "feedback.sqlite").exists()


# -- POST /v1/feedback ----------------------------------------------------------------------------
def api(store: FeedbackStore | None, **settings) -> TestClient:
    """The app as the ingress builds it, with the store; no backend is needed for feedback."""
    return TestClient(create_api(ServeSettings(**settings), feedback=store), raise_server_exceptions=False)


def test_feedback_route_records_and_answers_201(store, conversations):
    cid = converse(conversations, ("Which platform?", "Ray Serve [1]."))
    body = {
        "conversation_id": cid,
        "rating": "up",
        "comment": "clear",
        "answer": answer("Ray Serve [1].", cid).model_dump(),
    }
    reply = api(store).post("/v1/feedback", json=body)
    assert reply.status_code == 201
    fb = store.find()[0]
    assert reply.json() == {"id": fb.id, "conversation_id": cid, "rating": "up", "at": "2025-03-01T12:00:00Z"}
    assert (fb.comment, fb.source, fb.answer.answer) == ("clear", "api", "Ray Serve [1].")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"conversation_id": "nope", "rating": "up"}, 404, "unknown conversation id 'nope'"),
        ({"conversation_id": "{cid}", "rating": "meh"}, 422, "body.rating: Input should be 'up' or 'down'"),
        ({"conversation_id": "{cid}", "rating": "up", "stars": 5}, 422, "body.stars: Extra inputs"),
        ({"rating": "up"}, 422, "body.conversation_id: Field required"),
        ({"conversation_id": "{cid}", "rating": "up", "comment": "x" * 2001}, 413, "the limit is 2000"),
    ],
)
def test_feedback_route_errors(store, conversations, body, status, fragment):
    cid = converse(conversations, ("Q?", "A."))
    body = {k: v.format(cid=cid) if k == "conversation_id" else v for k, v in body.items()}
    reply = api(store).post("/v1/feedback", json=body)
    assert reply.status_code == status
    assert fragment in reply.json()["error"]["message"]
    assert store.find() == []


def test_feedback_route_needs_the_token_when_one_is_set(store, conversations):
    c = api(store, auth_token="s3cret")
    body = {"conversation_id": converse(conversations, ("Q?", "A.")), "rating": "down"}
    reply = c.post("/v1/feedback", json=body)
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert c.post("/v1/feedback", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 201


def test_feedback_route_without_a_store_is_503(conversations):
    reply = api(None).post("/v1/feedback", json={"conversation_id": "c", "rating": "up"})
    assert reply.status_code == 503
    assert "feedback is not enabled" in reply.json()["error"]["message"]
