"""Workflows end to end: a real gateway process, the fake upstream and the demo model.

The native protocol (`POST /v1/workflows/{name}`: numbered, named events; JSON without
streaming), the seed's protocol (`POST /workflow/query`, read here with the rules of the seed's
own TypeScript reader), progress and its estimate, errors in a step, `when:` conditions, and
the validation of workflows at start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from tests.conftest import GatewayProcess, parse_sse
from tests.fake_upstream import API_KEY, EXPECTED_TEXT, TEXT_PIECES, FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
KEY = "tg-workflow-key-7c1d0e"
AUTH = {"Authorization": f"Bearer {KEY}"}


def workflow_config(fake: FakeUpstream) -> dict[str, Any]:
    common = {"api_key": API_KEY, "timeouts": {"connect": 2, "first_byte": 5, "idle": 2}}
    return {
        "models": [
            {
                "name": "writer",
                "provider": "openai",
                "base_url": fake.base("ok", "wf") + "/v1",
                "model": "fake-model",
                **common,
            },
            {
                "name": "critic",
                "provider": "anthropic",
                "base_url": fake.base("ok", "wfcritic"),
                "model": "claude-fake",
                **common,
            },
            {
                "name": "broken",
                "provider": "openai",
                "base_url": fake.base("error_mid", "wf") + "/v1",
                "model": "fake-model",
                **common,
            },
            {
                "name": "endless",
                "provider": "openai",
                "base_url": fake.base("slow_stream", "wf") + "/v1",
                "model": "fake-model",
                **common,
            },
        ],
        "auth": {"api_keys": [KEY]},
        "workflows": [
            {
                "name": "three",
                "description": "draft, shout, review",
                "steps": [
                    {"name": "draft", "kind": "llm", "model": "writer", "prompt": "Draft: {input}"},
                    {"name": "shout", "kind": "function", "function": "tests.workflow_steps:shout"},
                    {
                        "name": "review",
                        "kind": "llm",
                        "model": "critic",
                        "system": "You review drafts.",
                        "prompt": "Review {steps.shout.output} (asked: {input})",
                        "max_tokens": 50,
                    },
                ],
            },
            {
                "name": "fails-second",
                "steps": [
                    {"name": "one", "kind": "llm", "model": "writer", "prompt": "{input}"},
                    {"name": "two", "kind": "llm", "model": "broken", "prompt": "{input}"},
                    {"name": "three", "kind": "function", "function": "tests.workflow_steps:count"},
                ],
            },
            {
                "name": "function-fails",
                "steps": [
                    {"name": "one", "kind": "function", "function": "tests.workflow_steps:count"},
                    {"name": "two", "kind": "function", "function": "tests.workflow_steps:fails"},
                ],
            },
            {
                "name": "branches",
                "steps": [
                    {
                        "name": "words",
                        "kind": "function",
                        "function": "tests.workflow_steps:words",
                        "args": {"sep": "|"},
                    },
                    {
                        "name": "only-if-urgent",
                        "kind": "function",
                        "function": "tests.workflow_steps:count",
                        "when": [{"value": "input", "op": "contains", "arg": "urgent"}],
                    },
                    {
                        "name": "unless-empty",
                        "kind": "function",
                        "function": "tests.workflow_steps:count",
                        "when": [{"value": "steps.only-if-urgent.output", "op": "not_empty"}],
                    },
                ],
            },
            {
                "name": "slow",
                "steps": [
                    {"name": "first", "kind": "function", "function": "tests.workflow_steps:count"},
                    {"name": "long", "kind": "llm", "model": "endless", "prompt": "{input}"},
                ],
            },
        ],
        "workflow_query": {"workflow": "three"},
    }


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = GatewayProcess(
        workflow_config(fake),
        tmp_path_factory.mktemp("workflows"),
        env={"PYTHONPATH": str(ROOT)},
    )
    yield process
    process.stop()


def run(gw: GatewayProcess, name: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/workflows/{name}", json=body, headers=AUTH, timeout=30)


def events_of(response: httpx.Response) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event name, data) of every event; ids must be present on all."""
    return [(int(e["id"]), e["event"], json.loads(e["data"])) for e in parse_sse(response.text)]


def test_a_three_step_workflow_streams_every_event_numbered_and_in_order(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    response = run(gw, "three", {"input": "tides"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response)
    assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
    names = [name for _, name, _ in events]
    pieces = ["chunk"] * len(TEXT_PIECES)
    assert names == [
        "run_start",
        *["step_start", "progress", *pieces, "step_end"],
        *["step_start", "progress", "chunk", "step_end"],
        *["step_start", "progress", *pieces, "step_end"],
        "final_end",
    ]
    start = events[0][2]
    assert start["workflow"] == "three" and start["total_steps"] == 3
    assert start["stream_id"] == response.headers["x-tidegate-stream-id"]
    text: dict[str, str] = {}
    for _, name, data in events:
        if name == "chunk":
            text[data["step"]] = text.get(data["step"], "") + data["content"]
    assert text == {
        "draft": EXPECTED_TEXT,
        "shout": EXPECTED_TEXT.upper(),
        "review": EXPECTED_TEXT,
    }
    step_ends = [data for _, name, data in events if name == "step_end"]
    assert [(s["index"], s["name"]) for s in step_ends] == [
        (1, "draft"),
        (2, "shout"),
        (3, "review"),
    ]
    assert step_ends[0]["usage"]["output_tokens"] > 0 and step_ends[1]["usage"] is None
    final = events[-1][2]
    assert final["status"] == "completed" and final["run_id"] == start["run_id"]
    assert final["usage"]["output_tokens"] == sum(
        s["usage"]["output_tokens"] for s in step_ends if s["usage"]
    )
    # The third step's prompt was rendered from the input and the second step's output, and
    # went to the Anthropic upstream with its system prompt and limit.
    review = fake.last("ok/wfcritic").body
    assert review["system"] == "You review drafts."
    assert review["max_tokens"] == 50
    expected = f"Review {EXPECTED_TEXT.upper()} (asked: tides)"
    assert review["messages"] == [{"role": "user", "content": [{"type": "text", "text": expected}]}]
    assert fake.last("ok/wf").body["messages"] == [{"role": "user", "content": "Draft: tides"}]


def test_without_streaming_the_run_is_one_json_object(gw: GatewayProcess) -> None:
    response = run(gw, "three", {"input": "tides", "stream": False})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["workflow"] == "three"
    assert body["run_id"].startswith("run_")
    assert [s["name"] for s in body["steps"]] == ["draft", "shout", "review"]
    assert [s["content"] for s in body["steps"]] == [
        EXPECTED_TEXT,
        EXPECTED_TEXT.upper(),
        EXPECTED_TEXT,
    ]
    assert body["content"] == EXPECTED_TEXT  # the last step's output
    assert body["usage"]["input_tokens"] > 0
    assert all(isinstance(s["duration_ms"], int) for s in body["steps"])


def test_progress_counts_up_and_estimates_from_earlier_runs(gw: GatewayProcess) -> None:
    events = events_of(run(gw, "three", {"input": "x"}))
    progress = [data for _, name, data in events if name == "progress"]
    assert [(p["index"], p["total"], p["step"]) for p in progress] == [
        (1, 3, "draft"),
        (2, 3, "shout"),
        (3, 3, "review"),
    ]
    elapsed = [p["elapsed_ms"] for p in progress]
    assert elapsed == sorted(elapsed)
    # Every step of "three" has run before (this run at least): the next run has estimates.
    again = events_of(run(gw, "three", {"input": "x"}))
    estimates = [d["eta_ms"] for _, n, d in again if n == "progress"]
    assert all(isinstance(e, int) for e in estimates), estimates
    assert estimates == sorted(estimates, reverse=True)  # less left at each step
    assert estimates[0] < 30_000  # plausible: these steps take milliseconds here


def test_a_workflow_never_run_has_no_estimate(fake: FakeUpstream, tmp_path: Path) -> None:
    process = GatewayProcess(workflow_config(fake), tmp_path, env={"PYTHONPATH": str(ROOT)})
    try:
        events = events_of(run(process, "three", {"input": "x"}))
        assert [d["eta_ms"] for _, n, d in events if n == "progress"] == [None, None, None]
    finally:
        process.stop()


def test_when_conditions_skip_steps(gw: GatewayProcess) -> None:
    calm = run(gw, "branches", {"input": "a b", "stream": False}).json()
    assert [(s["name"], s["skipped"]) for s in calm["steps"]] == [
        ("words", False),
        ("only-if-urgent", True),
        ("unless-empty", True),
    ]
    assert calm["steps"][0]["content"] == "a|b|"  # the step's args reached the function
    urgent = run(gw, "branches", {"input": "urgent b", "stream": False}).json()
    assert [s["skipped"] for s in urgent["steps"]] == [False, False, False]
    assert urgent["steps"][1]["content"] == "1 earlier step(s)"


def test_an_upstream_failure_in_step_two_is_an_error_event_then_final_end(
    gw: GatewayProcess,
) -> None:
    events = events_of(run(gw, "fails-second", {"input": "q"}))
    names = [name for _, name, _ in events]
    assert names[-2:] == ["error", "final_end"]
    error, final = events[-2][2], events[-1][2]
    assert error["step"] == "two" and error["code"] and error["message"]
    assert final["status"] == "error"
    assert "step_start" in names and names.count("step_end") == 1  # step one ended, two did not
    # Step three never started.
    assert not any(d.get("name") == "three" for _, n, d in events if n == "step_start")
    whole = run(gw, "fails-second", {"input": "q", "stream": False}).json()
    assert whole["success"] is False and whole["error"]["step"] == "two"


def test_a_function_that_raises_is_a_step_failure_naming_the_exception(gw: GatewayProcess) -> None:
    events = events_of(run(gw, "function-fails", {"input": "q"}))
    error = next(d for _, n, d in events if n == "error")
    assert error == {
        "message": "ValueError: the warehouse is closed",
        "code": "step_failed",
        "step": "two",
    }
    assert events[-1][2]["status"] == "error"


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("three", {"input": ""}, 400, "invalid_request"),
        ("three", {"input": "   "}, 400, "invalid_request"),
        ("three", {}, 400, "invalid_request"),
        ("three", {"input": 3}, 400, "invalid_request"),
        ("three", {"input": "x", "stream": "yes"}, 400, "invalid_request"),
        ("nope", {"input": "x"}, 404, "workflow_not_found"),
    ],
)
def test_bad_requests_are_json_errors_before_any_event(
    gw: GatewayProcess, name: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = run(gw, name, body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_unknown_workflow_names_the_configured_ones(gw: GatewayProcess) -> None:
    message = run(gw, "nope", {"input": "x"}).json()["error"]["message"]
    assert "'nope'" in message and "three" in message


class SeedReader:
    """The seed's front-end reader (`streamWorkflow` in seed 003), rule for rule: split the new
    text on newlines; take lines starting with `data: `; trim; JSON.parse (failures ignored);
    the string "[DONE]" ends; `{type: step_start}` opens a new step; other strings are content.
    """

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.done = False
        self.unparsed: list[str] = []

    def feed(self, new_data: str) -> None:
        for line in new_data.split("\n"):
            if not line.startswith("data: "):
                continue
            data = line[6:].strip()
            if not data:
                continue
            try:
                parsed = json.loads(data)
            except ValueError:
                self.unparsed.append(data)
                continue
            if parsed == "[DONE]":
                self.done = True
                return
            if isinstance(parsed, dict) and parsed.get("type"):
                if parsed["type"] == "step_start":
                    self.steps.append("")
            elif isinstance(parsed, str):
                self.steps[-1] += parsed


def seed_query(gw: GatewayProcess, message: str, path: str = "/workflow/query") -> httpx.Response:
    return httpx.post(gw.url + path, json={"message": message}, headers=AUTH, timeout=30)


def test_the_seeds_reader_gets_every_step_and_the_end(gw: GatewayProcess) -> None:
    with httpx.stream(
        "POST", gw.url + "/workflow/query", json={"message": "tides"}, headers=AUTH, timeout=30
    ) as response:
        assert response.status_code == 200
        reader = SeedReader()
        raw = ""
        for text in response.iter_text():
            raw += text
        # The seed reads what arrived so far at each progress event; the server writes whole
        # events, so feeding per event boundary is what a browser sees.
        for block in raw.split("\n\n"):
            reader.feed(block + "\n\n")
    assert reader.done
    assert reader.steps == [EXPECTED_TEXT, EXPECTED_TEXT.upper(), EXPECTED_TEXT]
    assert reader.unparsed == []
    # Exactly the seed's wire form, with nothing the seed does not write (no ids, no names).
    assert raw.startswith('data: {"type":"step_start"}\n\n')
    assert raw.endswith('data: {"type":"step_end"}\n\ndata: "[DONE]"\n\n')
    assert "id:" not in raw and "event:" not in raw


def test_the_seed_format_reports_a_failure_as_its_error_line(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    config = workflow_config(fake)
    config["workflow_query"] = {"workflow": "fails-second"}
    process = GatewayProcess(config, tmp_path, env={"PYTHONPATH": str(ROOT)})
    try:
        raw = seed_query(process, "q").text
        reader = SeedReader()
        reader.feed(raw)
        lines = [line for line in raw.split("\n") if line]
        assert lines[-1].startswith("data: Error: ")
        assert '"[DONE]"' not in raw
        assert not reader.done
        assert reader.unparsed == [lines[-1][6:]]  # the seed's reader skips it, as in the seed
        sync = seed_query(process, "q", "/workflow/query-sync")
        assert sync.status_code == 502
        assert sync.json()["detail"]
    finally:
        process.stop()


def test_seed_endpoints_validate_as_the_seed_does(gw: GatewayProcess) -> None:
    for path in ("/workflow/query", "/workflow/query-sync"):
        response = seed_query(gw, "", path)
        assert (response.status_code, response.json()) == (400, {"detail": "Message is required"})


def test_the_seeds_sync_twin(gw: GatewayProcess) -> None:
    body = seed_query(gw, "tides", "/workflow/query-sync").json()
    assert body["success"] is True
    assert body["content"] == EXPECTED_TEXT
    assert body["workflow_id"] == "three"
    assert body["run_id"].startswith("run_")


def check(tmp_path: Path, workflows: list[dict[str, Any]], **extra: Any) -> str:
    config = {
        "models": [{"name": "demo", "provider": "demo"}],
        "workflows": workflows,
        **extra,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "tidegate", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr


LLM = {"name": "a", "kind": "llm", "model": "demo", "prompt": "{input}"}


@pytest.mark.parametrize(
    ("workflows", "extra", "needles"),
    [
        ([{"name": "w", "steps": [{**LLM, "model": "gpt-9"}]}], {}, ["steps[0].model", "gpt-9"]),
        (
            [{"name": "w", "steps": [{**LLM, "prompt": "{steps.b.output}"}]}],
            {},
            ["workflows[0].steps[0]", "'b'", "does not come before"],
        ),
        (
            [{"name": "w", "steps": [{"name": "f", "kind": "function", "function": "no.such:f"}]}],
            {},
            ["steps[0].function", "no.such:f"],
        ),
        (
            [
                {
                    "name": "w",
                    "steps": [
                        {
                            "name": "f",
                            "kind": "function",
                            "function": "tests.workflow_steps:shout",
                            "args": {"colour": "red"},
                        }
                    ],
                }
            ],
            {},
            ["steps[0].args", "colour"],
        ),
        ([{"name": "w", "steps": [LLM, LLM]}], {}, ["steps[1].name", "'a'"]),
        ([{"name": "w", "steps": [{**LLM, "kind": "magic"}]}], {}, ["workflows[0].steps[0]"]),
        ([{"name": "w", "steps": []}], {}, ["workflows[0].steps"]),
        (
            [{"name": "w", "steps": [LLM]}],
            {"workflow_query": {"workflow": "other"}},
            ["workflow_query.workflow", "other"],
        ),
    ],
)
def test_bad_workflows_are_refused_at_start_up_naming_the_field(
    tmp_path: Path, workflows: list[dict[str, Any]], extra: dict[str, Any], needles: list[str]
) -> None:
    message = check(tmp_path, workflows, **extra)
    for needle in needles:
        assert needle in message, message
