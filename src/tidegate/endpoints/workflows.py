"""Workflows over HTTP: the native protocol and the seed's front-end protocol (the formats:
formats/workflow.py).

- `GET /v1/workflows`: the configured workflows, `{"object": "list", "data": [{name,
  description, steps: [{name, kind}]}]}` (what the playground offers next to the models).
- `POST /v1/workflows/{name}` `{"input": "...", "stream": true, "resumable": false}`: native
  SSE (numbered, named events; resumable through `GET /v1/streams/{id}`), or JSON without
  streaming.
- `POST /workflow/query` `{"message": "..."}` and `POST /workflow/query-sync`: the workflow named
  by `workflow_query.workflow`, in the seed's protocol.

A streamed run is registered like any stream: it has an id, can be cancelled
(`POST /v1/streams/{id}/cancel`: `final_end` with status `cancelled`), and ends with the
in-band shutdown error if the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import Handler, Route
from tidegate.errors import InvalidRequest, NotFound
from tidegate.events import RunEnd, RunError, WorkflowEvent
from tidegate.formats import workflow as protocol
from tidegate.relay import stream_headers
from tidegate.services import Services
from tidegate.settings import LLMStep, WorkflowConfig
from tidegate.streams import DEFAULT_RESUME_GRACE, StreamLog, keep_for_resume
from tidegate.workflows.runner import WorkflowRunner, new_run_id

MAX_INPUT_CHARS = 200_000


class WorkflowNotFound(NotFound):
    """The request names a workflow the config does not define."""

    code = "workflow_not_found"


def _workflow(services: Services, name: str | None) -> WorkflowConfig:
    for workflow in services.config.workflows:
        if workflow.name == name:
            return workflow
    known = ", ".join(w.name for w in services.config.workflows) or "none"
    raise WorkflowNotFound(f"unknown workflow {name!r}; configured workflows: {known}")


async def _begin(services: Services, ctx: RequestContext, workflow: WorkflowConfig) -> None:
    """A run begins: its ledger row, then, for a key with a policy, every llm step's model
    must be one of its models (403) and the run is admitted like one request (429 over a
    limit); each step's usage is charged as it ends (workflows/runner.py), the lease ended by
    `_limited`."""
    services.ledger_begin(ctx)
    identity = ctx.identity
    if identity is None or identity.policy is None:
        return
    limits, policy = services.limits, identity.policy
    for step in workflow.steps:
        if isinstance(step, LLMStep):
            limits.check_model(identity, policy, step.model)
    name = f"workflow:{workflow.name}"
    ctx.lease = await limits.admit(identity, policy, name, check_model=False)


def _limited(handler: Handler) -> Handler:
    """`handler`, ending the run's lease (if it took one) however it ends."""

    async def handle(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
        try:
            await handler(services, ctx, request, send)
            ctx.answered()
        finally:
            if ctx.lease is not None:
                await ctx.lease.end(None, None)

    handle.__doc__ = handler.__doc__
    return handle


def _text(fields: dict[str, Any], name: str, message: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(message)
    if len(value) > MAX_INPUT_CHARS:
        raise InvalidRequest(f"'{name}' is longer than {MAX_INPUT_CHARS} characters")
    return value


def _summary(workflow: WorkflowConfig) -> dict[str, Any]:
    steps = [{"name": step.name, "kind": step.kind} for step in workflow.steps]
    return {"name": workflow.name, "description": workflow.description, "steps": steps}


async def list_workflows(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> None:
    """`GET /v1/workflows`: every configured workflow, its description and its steps' names
    and kinds (nothing else of a step: prompts, URLs and arguments stay server-side)."""
    data = [_summary(workflow) for workflow in services.config.workflows]
    ctx.status = 200
    body = orjson.dumps({"object": "list", "data": data})
    await send_bytes(send, 200, body, headers=ctx.response_headers())


async def run_native(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`POST /v1/workflows/{name}`: a run, streamed in the native protocol or answered whole."""
    workflow = _workflow(services, request.params["name"])
    body = request.json_object()
    question = _text(body, "input", "'input' is required: a non-empty string")
    stream, resumable = body.get("stream", True), body.get("resumable", False)
    if not isinstance(stream, bool) or not isinstance(resumable, bool):
        raise InvalidRequest("'stream' and 'resumable' must be true or false")
    ctx.model, ctx.stream, ctx.resumable = f"workflow:{workflow.name}", stream, resumable
    await _begin(services, ctx, workflow)
    run_id = new_run_id()
    events = WorkflowRunner(services).run(ctx, workflow, question, run_id)
    if not stream:
        collected = [event async for event in events]
        answer = protocol.run_to_json(collected, workflow.name)
        ctx.status = 200
        await send_bytes(send, 200, orjson.dumps(answer), headers=ctx.response_headers())
        return
    encoder = protocol.NativeEncoder()
    await _serve(services, ctx, send, events, encoder, run_id)


async def run_seed(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`POST /workflow/query`: the configured workflow in the seed's streaming protocol."""
    question = _text(request.json_object(), "message", "Message is required")
    workflow = _workflow(services, services.config.workflow_query.workflow)
    ctx.model, ctx.stream = f"workflow:{workflow.name}", True
    await _begin(services, ctx, workflow)
    run_id = new_run_id()
    events = WorkflowRunner(services).run(ctx, workflow, question, run_id)
    await _serve(services, ctx, send, events, protocol.SeedEncoder(), run_id)


async def run_seed_sync(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> None:
    """`POST /workflow/query-sync`: the configured workflow, answered whole as the seed does."""
    question = _text(request.json_object(), "message", "Message is required")
    workflow = _workflow(services, services.config.workflow_query.workflow)
    ctx.model = f"workflow:{workflow.name}"
    await _begin(services, ctx, workflow)
    run_id = new_run_id()
    events = [e async for e in WorkflowRunner(services).run(ctx, workflow, question, run_id)]
    answer = protocol.run_to_json(events, workflow.name)
    error = answer.get("error")
    if error is not None:
        ctx.status, ctx.error_code = 502, str(error["code"])
        body = orjson.dumps({"detail": error["message"]})
        await send_bytes(send, 502, body, headers=ctx.response_headers())
        return
    result = {
        "success": True,
        "content": answer["content"],
        "workflow_id": workflow.name,
        "run_id": run_id,
    }
    ctx.status = 200
    await send_bytes(send, 200, orjson.dumps(result), headers=ctx.response_headers())


async def _serve(
    services: Services,
    ctx: RequestContext,
    send: Send,
    events: AsyncIterator[WorkflowEvent],
    encoder: protocol.NativeEncoder | protocol.SeedEncoder,
    run_id: str,
) -> None:
    """Stream a run: registered for cancel and shutdown; in the native protocol also kept in
    the stream log (resumable), going on for a while without its client when asked to."""
    running = await services.streams.start(ctx.owner)
    ctx.stream_id = running.id
    settings = services.config.streams
    log = None
    if isinstance(encoder, protocol.NativeEncoder):
        log = StreamLog(services.state, running.id, settings.retention)
        encoder.stream_id, encoder.resume_token = running.id, await log.begin()
        send = log.tee(send)
        ctx.send_wrapped()
        grace = settings.resume_grace or (DEFAULT_RESUME_GRACE if ctx.resumable else 0)
        if grace and ctx.watcher is not None:
            ctx.watcher.on_disconnect = keep_for_resume(services.state, running, grace)
    ctx.headers_out.append((b"x-tidegate-stream-id", running.id.encode()))
    ctx.status = 200
    ctx.committed = True
    ctx.mark_first_byte()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": stream_headers(protocol.CONTENT_TYPE) + ctx.response_headers(),
        }
    )
    status = "completed"
    try:
        async for event in events:
            if isinstance(event, RunError):
                ctx.error_code = event.code
            if isinstance(event, RunEnd):
                status = event.status
            await _write(send, encoder.encode(event))
    except asyncio.CancelledError:
        reason = running.absorb()
        if reason is None:  # the client left: a later resume still finds a complete stream
            if log is not None and isinstance(encoder, protocol.NativeEncoder):
                left = RunError("the client disconnected", "client_closed", None)
                with contextlib.suppress(Exception):
                    await log.append(encoder.encode(left) + encoder.end("error", run_id, None))
                    await log.close()
            raise
        status = "cancelled" if reason.code == "cancelled" else "error"
        ctx.error_code = reason.code
        if isinstance(encoder, protocol.NativeEncoder):
            tail = b""
            if status == "error":
                tail = encoder.encode(RunError(reason.message, reason.code, None))
            tail += encoder.end(status, run_id, None)
        else:
            tail = encoder.error(reason.message)
        await _write(send, tail)
    finally:
        await services.streams.end(running, keep=settings.retention if log is not None else 0)
    try:
        async with asyncio.timeout(services.config.limits.write_timeout):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except TimeoutError:
        ctx.error_code = "client_stalled"
    finally:
        if log is not None:
            await log.close()
    if status != "completed" and ctx.error_code is None:
        ctx.error_code = status


async def _write(send: Send, frames: bytes) -> None:
    if frames:
        await send({"type": "http.response.body", "body": frames, "more_body": True})


ROUTES = [
    Route("GET", "/v1/workflows", list_workflows, protocol.error_body),
    Route("POST", "/v1/workflows/{name}", _limited(run_native), protocol.error_body),
    Route("POST", "/workflow/query", _limited(run_seed), protocol.seed_error_body),
    Route("POST", "/workflow/query-sync", _limited(run_seed_sync), protocol.seed_error_body),
]
