"""`tidegate ask`, run as a subprocess against a real gateway process and the fake upstream.

Invariants: the answer reaches stdout and nothing else does (notes and errors go to stderr, as
one line each); failures exit non-zero (1: refused or failed; 2: a mistake in the command);
Ctrl-C exits 130 and the gateway cancels the upstream within a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.assistant_gateway import KEY_A, start
from tests.conftest import GatewayProcess
from tests.fake_upstream import EXPECTED_TEXT, FIX_TEXT, FakeUpstream
from tests.test_disconnect import wait_closed

CODE = "def add(x):\n    return x + y\n"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "calc.py", line 2, in add\n'
    "NameError: name 'y' is not defined\n"
)


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start(fake, tmp_path_factory.mktemp("cli"))
    yield process
    process.stop()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "calc.py").write_text(CODE)
    (tmp_path / "traceback.txt").write_text(TRACEBACK)
    return tmp_path


def cli_env(gw: GatewayProcess, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update({"TIDEGATE_URL": gw.url, "TIDEGATE_API_KEY": KEY_A, "TERM": "dumb"})
    env.update(extra)
    return env


def tidegate_ask(
    gw: GatewayProcess,
    *args: str,
    stdin: str = "",
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidegate", "ask", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(gw, **(env or {})),
        cwd=cwd,
        timeout=30,
    )


def test_raw_fix_on_the_demo(gw: GatewayProcess, files: Path) -> None:
    done = tidegate_ask(
        gw, "--raw", "--model", "demo", "--code", "calc.py", "--error", "traceback.txt", cwd=files
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("[tidegate demo: fix] A canned diagnosis")
    assert "NameError: name 'y' is not defined" in done.stdout
    assert f"```python\n# FIX (tidegate demo): the corrected line goes here\n{CODE}```" in (
        done.stdout
    )


def test_raw_fix_on_an_upstream_with_the_traceback_on_stdin(
    gw: GatewayProcess, fake: FakeUpstream, files: Path
) -> None:
    done = tidegate_ask(
        gw,
        "--raw",
        "--model",
        "openai-fix",
        "--task",
        "fix",
        "--code",
        str(files / "calc.py"),
        "--error",
        "-",
        stdin=TRACEBACK,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == FIX_TEXT
    sent = fake.last("fix/assist").body["messages"][-1]["content"]
    assert CODE.strip() in sent and TRACEBACK.strip() in sent and "`calc.py`" in sent


def test_markdown_rendering_in_a_dumb_terminal(gw: GatewayProcess, files: Path) -> None:
    done = tidegate_ask(
        gw, "--model", "openai-fix", "--code", "calc.py", "--error", "traceback.txt", cwd=files
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # no colours or cursor moves for a dumb terminal
    assert "```" not in out  # rendered, not raw markdown
    assert "NameError: name 'y' is not defined" in out
    assert "def add(x, y=0):" in out
    assert "return x + y  # fixed: y is a parameter now" in out


def test_json_prints_the_ask_result(gw: GatewayProcess) -> None:
    done = tidegate_ask(gw, "--json", "--model", "kb", "What is tidegate?", "--session", "j1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == EXPECTED_TEXT
    assert result["session_id"] == "j1"
    assert result["finish_reason"] == "stop"


def test_url_and_key_options_override_the_environment(gw: GatewayProcess) -> None:
    done = tidegate_ask(
        gw,
        "--url",
        gw.url,
        "--key",
        KEY_A,
        "--raw",
        "hi",
        env={"TIDEGATE_URL": "http://127.0.0.1:9"},
    )
    assert (done.returncode, done.stdout) == (0, EXPECTED_TEXT + "\n")


@pytest.mark.parametrize(
    ("args", "env", "status", "message"),
    [
        (["--model", "nope", "q"], {}, 1, "tidegate: 404 model_not_found: unknown model 'nope'"),
        (["q"], {"TIDEGATE_API_KEY": "wrong"}, 1, "tidegate: 401 unauthorized:"),
        (["--task", "fix"], {}, 1, "tidegate: 400 invalid_request: 'question' is required"),
        (["q"], {"TIDEGATE_URL": "http://127.0.0.1:9"}, 1, "tidegate: cannot reach the gateway"),
        (["--code", "missing.py"], {}, 2, "tidegate: cannot read --code missing.py"),
        (["q"], {"TIDEGATE_URL": "localhost:8080"}, 2, "tidegate: 'localhost:8080' is not an"),
        (["--raw", "--model", "openai-error_mid", "q"], {}, 1, "tidegate: the answer failed"),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(
    gw: GatewayProcess, args: list[str], env: dict[str, str], status: int, message: str
) -> None:
    done = tidegate_ask(gw, *args, env=env)
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_a_partial_answer_stays_on_stdout_when_the_answer_fails(gw: GatewayProcess) -> None:
    done = tidegate_ask(gw, "--raw", "--model", "openai-error_mid", "q")
    assert done.returncode == 1
    assert done.stdout.strip() and EXPECTED_TEXT.startswith(done.stdout.strip())
    assert "upstream_error" in done.stderr


@pytest.mark.parametrize("mode", ["--raw", "--markdown"])
def test_ctrl_c_stops_the_stream_and_the_upstream(
    gw: GatewayProcess, fake: FakeUpstream, mode: str
) -> None:
    """Invariant: SIGINT mid-stream exits 130 and the upstream connection closes within 1 s."""
    before = fake.count("slow_stream/assist")
    args = ["--raw"] if mode == "--raw" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidegate", "ask", *args, "--model", "openai-slow", "q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(gw),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        recorded = [r for r in fake.requests if r.scenario == "slow_stream/assist"]
        if len(recorded) > before and time.monotonic() - recorded[before].started > 0.3:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        raise AssertionError("the stream never started")
    if mode == "--raw":
        assert proc.stdout.read(5) == b"tick "  # the answer is arriving
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "tidegate: stopped"
    assert b"Traceback" not in err
    upstream = wait_closed(fake, "slow_stream/assist", before)
    assert upstream.closed_at is not None and upstream.closed_at - interrupted < 1.0
    assert not upstream.completed


def test_markdown_rendering_live_in_a_terminal(gw: GatewayProcess, files: Path) -> None:
    """In a real terminal the answer is redrawn as it grows (rich's Live), and the cursor and
    the last line end are restored at its end."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidegate", "ask", "--model", "openai-fix", "--code", "calc.py"],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
        env=cli_env(gw, TERM="xterm-256color", COLUMNS="100"),
        cwd=files,
    )
    os.close(child)
    output = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child side is closed: the process has ended
            break
        if not data:
            break
        output += data
    os.close(main)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    text = output.decode("utf-8", "replace")
    assert "\x1b[?25l" in text and text.rstrip().endswith("\x1b[?25h")  # cursor hidden, shown
    assert "fixed: y is a parameter now" in text
    assert "```" not in text
