"""Running one workflow: steps in order, each output streamed as it is made.

- An `llm` step renders its prompt (`{input}`, `{steps.<name>.output}`) and streams a model's
  answer through the gateway's own pipeline (failover, deadlines and redaction as for any
  client), its text as `Chunk`s.
- A `function` step calls a Python callable with the input and the earlier outputs; it may be
  sync or async and return or yield text. Sync code runs in a worker thread, so a slow query
  never blocks the event loop; the step's `timeout` bounds it.
- An `http` step POSTs `{workflow, step, input, steps}` as JSON and takes the text at `field`
  of the JSON answer.

A step whose `when:` conditions do not all hold is skipped. Each step's duration is kept (an
average, in the shared state) so that later runs can estimate the time left.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from tidegate.context import RequestContext
from tidegate.errors import GatewayError, UpstreamNetworkError, UpstreamProtocolError
from tidegate.events import (
    ChatRequest,
    Chunk,
    Message,
    Part,
    Progress,
    RunEnd,
    RunError,
    RunStart,
    StepEnd,
    StepStart,
    TextDelta,
    Usage,
    UsageUpdate,
    WorkflowEvent,
)
from tidegate.providers.http import UpstreamCall
from tidegate.relay import stream_events
from tidegate.services import Services
from tidegate.settings import (
    FunctionStep,
    HTTPStep,
    LLMStep,
    StepCondition,
    WorkflowConfig,
)

_REF = re.compile(r"\{(input|steps\.([A-Za-z0-9_-]+)\.output)\}")
_HTTP_BODY_LIMIT = 4 * 1024 * 1024


def render(template: str, question: str, outputs: dict[str, str]) -> str:
    """`template` with `{input}` and `{steps.<name>.output}` filled in; other braces stay."""

    def fill(m: re.Match[str]) -> str:
        return question if m.group(1) == "input" else outputs.get(m.group(2), "")

    return _REF.sub(fill, template)


def holds(condition: StepCondition, question: str, outputs: dict[str, str]) -> bool:
    """Whether a `when:` condition holds for the input and the outputs so far."""
    value = question if condition.value == "input" else outputs.get(condition.value[6:-7], "")
    op, arg = condition.op, condition.arg
    if op == "==":
        return value.strip() == arg
    if op == "!=":
        return value.strip() != arg
    if op == "contains":
        return arg in value
    if op == "not_contains":
        return arg not in value
    if op == "matches":
        return re.search(arg, value) is not None
    if op == "empty":
        return not value.strip()
    return bool(value.strip())


def new_run_id() -> str:
    """A run id: `run_` and 20 random hex digits."""
    return "run_" + os.urandom(10).hex()


class WorkflowRunner:
    """Runs workflows with the process's services."""

    def __init__(self, services: Services):
        self._services = services

    async def run(
        self, ctx: RequestContext, workflow: WorkflowConfig, question: str, run_id: str
    ) -> AsyncIterator[WorkflowEvent]:
        """The events of one run of `workflow` on `question`, `RunEnd` last (unless the task
        is cancelled: the caller ends the stream then)."""
        total = len(workflow.steps)
        yield RunStart(run_id, workflow.name, total)
        started = time.monotonic()
        outputs: dict[str, str] = {}
        usage = Usage()
        used = False
        averages = await self._averages(workflow)
        for index, step in enumerate(workflow.steps, 1):
            yield StepStart(index, total, step.name)
            elapsed = int((time.monotonic() - started) * 1000)
            remaining = [averages.get(s.name) for s in workflow.steps[index - 1 :]]
            eta = None if None in remaining else int(sum(r or 0 for r in remaining))
            yield Progress(step.name, index, total, elapsed, eta)
            step_started = time.monotonic()
            if not all(holds(c, question, outputs) for c in step.when):
                outputs[step.name] = ""
                yield StepEnd(index, step.name, None, 0, skipped=True)
                continue
            pieces: list[str] = []
            step_usage: Usage | None = None
            try:
                async for piece in self._step(ctx, workflow, step, question, outputs):
                    if isinstance(piece, Usage):
                        step_usage = piece
                        continue
                    pieces.append(piece)
                    yield Chunk(step.name, piece)
            except GatewayError as err:
                yield RunError(err.message, err.code, step.name)
                yield RunEnd("error", run_id, usage if used else None, outputs)
                return
            except Exception as exc:  # a function step's own failure
                message = self._services.redactor.excerpt(f"{type(exc).__name__}: {exc}", 500)
                yield RunError(message, "step_failed", step.name)
                yield RunEnd("error", run_id, usage if used else None, outputs)
                return
            duration = int((time.monotonic() - step_started) * 1000)
            outputs[step.name] = "".join(pieces)
            if step_usage is not None:
                used = True
                usage = _add(usage, step_usage)
            await self._record(workflow, step.name, duration)
            yield StepEnd(index, step.name, step_usage, duration)
        yield RunEnd("completed", run_id, usage if used else None, outputs)

    def _step(
        self,
        ctx: RequestContext,
        workflow: WorkflowConfig,
        step: LLMStep | FunctionStep | HTTPStep,
        question: str,
        outputs: dict[str, str],
    ) -> AsyncIterator[str | Usage]:
        if isinstance(step, LLMStep):
            return self._llm(ctx, step, question, outputs)
        if isinstance(step, FunctionStep):
            return _function(step, question, dict(outputs))
        return self._http(workflow, step, question, outputs)

    async def _llm(
        self, ctx: RequestContext, step: LLMStep, question: str, outputs: dict[str, str]
    ) -> AsyncIterator[str | Usage]:
        messages = []
        if step.system:
            messages.append(
                Message("system", [Part("text", text=render(step.system, question, outputs))])
            )
        messages.append(
            Message("user", [Part("text", text=render(step.prompt, question, outputs))])
        )
        chat = ChatRequest(
            model=step.model,
            messages=messages,
            stream=True,
            max_tokens=step.max_tokens,
            temperature=step.temperature,
            top_p=step.top_p,
            include_usage=True,
        )
        usage: Usage | None = None
        async for events in stream_events(self._services, ctx, step.model, chat):
            for event in events:
                if isinstance(event, TextDelta):
                    yield event.text
                elif isinstance(event, UsageUpdate):
                    usage = event.usage
        if usage is not None:
            if ctx.lease is not None:  # the key's tokens and budget, as each step ends
                ctx.lease.charge_step(usage, step.model, ctx.deployment)
            yield usage

    async def _http(
        self, workflow: WorkflowConfig, step: HTTPStep, question: str, outputs: dict[str, str]
    ) -> AsyncIterator[str | Usage]:
        body = orjson.dumps(
            {"workflow": workflow.name, "step": step.name, "input": question, "steps": outputs}
        )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update({k: v.get_secret_value() for k, v in step.headers.items()})
        call = UpstreamCall(step.url, body, headers, stream=False)
        async with asyncio.timeout(step.timeout):
            response = await self._services.client.send(
                call, connect_timeout=min(step.timeout, 10.0), model=f"workflow step {step.name}"
            )
            try:
                raw = await response.read_body(_HTTP_BODY_LIMIT)
            finally:
                response.close()
        if not 200 <= response.status < 300:
            raise UpstreamNetworkError(
                f"step {step.name!r}: the service answered HTTP {response.status}",
                code="step_http_error",
            )
        try:
            value: Any = orjson.loads(raw)
            for part in step.field.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
        except (orjson.JSONDecodeError, KeyError, IndexError, ValueError, TypeError):
            raise UpstreamProtocolError(
                f"step {step.name!r}: the service's answer has no text at {step.field!r}"
            ) from None
        yield value if isinstance(value, str) else orjson.dumps(value).decode()

    async def _averages(self, workflow: WorkflowConfig) -> dict[str, float]:
        state = self._services.state
        out: dict[str, float] = {}
        for step in workflow.steps:
            raw = await state.get(_duration_key(workflow.name, step.name))
            if raw is not None:
                out[step.name] = float(raw)
        return out

    async def _record(self, workflow: WorkflowConfig, step: str, duration_ms: int) -> None:
        key = _duration_key(workflow.name, step)
        state = self._services.state
        old = await state.get(key)
        average = duration_ms if old is None else 0.7 * float(old) + 0.3 * duration_ms
        await state.set(key, str(round(average, 1)).encode(), ttl=30 * 86400)


def _duration_key(workflow: str, step: str) -> str:
    return f"workflow-duration:{workflow}:{step}"


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
    )


_DONE = object()


def load_function(path: str) -> Callable[..., Any]:
    """The callable `module.path:name`."""
    module, _, name = path.partition(":")
    target: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return target


async def _function(
    step: FunctionStep, question: str, outputs: dict[str, str]
) -> AsyncIterator[str | Usage]:
    """Call the step's function: async functions and async generators on the loop, sync ones
    (and each item of a sync generator) in a worker thread; every wait within what is left of
    the step's timeout (checked per wait: a timeout scope must not span a `yield`)."""
    function = load_function(step.function)
    deadline = time.monotonic() + step.timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    try:
        if inspect.isasyncgenfunction(function):
            items = function(question, outputs, **step.args)
            try:
                while True:
                    try:
                        item = await asyncio.wait_for(anext(items), left())
                    except StopAsyncIteration:
                        return
                    yield str(item)
            finally:
                await items.aclose()
        if inspect.iscoroutinefunction(function):
            yield str(await asyncio.wait_for(function(question, outputs, **step.args), left()))
            return
        call = functools.partial(function, question, outputs, **step.args)
        result = await asyncio.wait_for(asyncio.to_thread(call), left())
        if isinstance(result, str) or not hasattr(result, "__next__"):
            yield str(result)
            return
        while True:
            item = await asyncio.wait_for(asyncio.to_thread(next, result, _DONE), left())
            if item is _DONE:
                return
            yield str(item)
    except TimeoutError:
        raise StepTimeout(f"step {step.name!r} took longer than {step.timeout:g}s") from None


class StepTimeout(GatewayError):
    """A function step ran past its `timeout`."""

    status = 504
    code = "step_timeout"
