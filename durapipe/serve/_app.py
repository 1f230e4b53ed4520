"""The MTHDS protocol over HTTP (aiohttp), backed by durapipe runs on Temporal.

Routes, all under ``/v1``: ``GET version`` (public), ``GET models``, ``POST validate``,
``POST execute``, ``POST start`` and the durable run lifecycle ``GET runs/{id}/status``,
``GET runs/{id}/results`` and ``GET runs/{id}/progress``. Every route but ``version`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from temporalio.client import Client
from temporalio.service import RPCError

from durapipe._errors import PipelineError, RunError
from durapipe.adapters import DEFAULT_TASK_QUEUE
from durapipe.client._connection import ConnectOptions
from durapipe.client._handle import RunHandle
from durapipe.serve._ended import EndedRuns
from durapipe.serve._loads import DEFAULT_MAX_LOADS, MethodLoads
from durapipe.serve._memory import requested_output, run_inputs
from durapipe.serve._methods import (
    Method,
    choose_pipe,
    decode_files,
    load_method,
    problem_items,
    trust_item,
    untrusted,
)
from durapipe.serve._problems import ServeError, problem_item
from durapipe.serve._runs import (
    TRUNCATED_STEPS,
    UNAVAILABLE_RETRY_AFTER_S,
    Idempotency,
    failure_problem,
    results_body,
    run_progress,
    run_results,
    run_status,
    start_run,
    temporal_lost,
    wait_result,
)
from durapipe.serve._slow import (
    ClientLimits,
    answer_and_close,
    close_after_response,
    count_as_execute,
    keep_place,
    read_body,
)
from durapipe.serve._stalls import StalledRuns
from durapipe.serve._trust import Capabilities, trust_problems
from durapipe.spec import Pipeline, resolve

logger = logging.getLogger("durapipe.serve")

PROTOCOL_VERSION: Final = "1.0"
DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
DEFAULT_EXECUTE_WAIT_S: Final = 600.0
# The form `pipelex-sdk` sends: 1 to 255 visible ASCII characters.
_IDEMPOTENCY_KEY: Final = re.compile(r"[!-~]{1,255}")
# How long a client should wait before asking again for a run that is still going.
POLL_RETRY_AFTER_S: Final = 1

_CLIENT: Final = web.AppKey("client", Client)
# Starts whose client left while they ran (see `_shielded`), until they end.
_STARTS: Final = web.AppKey("starts", set[asyncio.Task[RunHandle]])
# How long a server that stops waits for those (each is one start call to Temporal).
STARTS_GRACE_S: Final = 10.0
_STALLS: Final = web.AppKey("stalls", StalledRuns)
_ENDED: Final = web.AppKey("ended", EndedRuns)
_LOADS: Final = web.AppKey("loads", MethodLoads)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServeConfig:
    """How `durapipe serve` runs.

    Attributes:
        token: the bearer token every request but ``GET /v1/version`` must carry.
        capabilities: the models and functions of the workers (the trust boundary).
        pipeline: pipes this runner holds, run by ``pipe_code`` alone (the file the workers load).
        connection: how to reach Temporal.
        task_queue: the workers' task queue.
        max_body_bytes: the largest request body accepted.
        execute_wait_s: how long ``execute`` waits for its run before answering ``202`` with the
            run id (the protocol's degrade; the run goes on and its result is read by id).
        deck: the MTHDS model deck bundles' model references resolve through
            (`durapipe.adapters.mthds.ModelDeck`; None: the one ``DURAPIPE_MTHDS_DECK`` names).
        allow_urls: the ``http(s)`` URL prefixes whose Document and Image inputs this server may
            fetch (none by default: a client sends a file's bytes as a ``data:`` URL); a path
            of the server's own disk is never read.
        methods: the folders of installed methods (the server's own) that the package addresses
            of a method a client sends resolve from (None: ``DURAPIPE_MTHDS_METHODS``).
        limits: how long a request may take to arrive and how many connections may be open
            (slow clients, see `ClientLimits`).
        max_loads: how many methods may load at once (`MethodLoads`; 0: no cap).
    """

    token: str
    capabilities: Capabilities = field(default_factory=Capabilities)
    pipeline: Pipeline | None = None
    connection: ConnectOptions = field(default_factory=ConnectOptions)
    task_queue: str = DEFAULT_TASK_QUEUE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    deck: Any = None
    execute_wait_s: float = DEFAULT_EXECUTE_WAIT_S
    allow_urls: tuple[str, ...] = ()
    methods: tuple[Path, ...] | None = None
    limits: ClientLimits = field(default_factory=ClientLimits)
    max_loads: int = DEFAULT_MAX_LOADS


_CONFIG: Final = web.AppKey("config", ServeConfig)


def create_app(config: ServeConfig, client: Client) -> web.Application:
    """The protocol's aiohttp application, starting runs through ``client``.

    Example:
        >>> app = create_app(ServeConfig(token="s3cret"), await durapipe.connect())  # doctest: +SKIP
        >>> web.run_app(app, port=8081)  # doctest: +SKIP
    """
    app = web.Application(middlewares=[_problems, _auth], client_max_size=config.max_body_bytes)
    app[_CLIENT] = client
    app[_STALLS] = StalledRuns(client)
    app[_ENDED] = EndedRuns()
    app[_LOADS] = MethodLoads(config.max_loads)
    app[_CONFIG] = config
    app[_STARTS] = set()
    app.on_response_prepare.append(close_after_response)
    app.on_shutdown.append(_finish_starts)
    app.router.add_get("/v1/version", _version)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/validate", _validate)
    app.router.add_post("/v1/execute", _execute)
    app.router.add_post("/v1/start", _start)
    app.router.add_get("/v1/runs/{run_id}/status", _status)
    app.router.add_get("/v1/runs/{run_id}/results", _results)
    app.router.add_get("/v1/runs/{run_id}/progress", _progress)
    return app


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as a problem document; an unknown route or method too.

    An answer given before the request's body has all arrived (a body cut for its pace or its
    size, a missing token, an unknown route) ends its connection with it (`answer_and_close`):
    aiohttp would otherwise read and throw away the rest for up to 10 s, the connection holding
    its place under the caps.
    """
    response = await _answer(request, handler)
    if request.content.is_eof() or response.prepared or not isinstance(response, web.Response):
        return response
    return await answer_and_close(request, response)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServeError as err:
        unavailable = err.code == "runtime.unavailable"
        return err.response(
            {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)} if unavailable else None
        )
    except RPCError as err:
        # Temporal down or unreachable part way through (a status read's own describe is answered
        # where it is made): not this runner's bug, and asking again later may work. One line.
        where = _named(request)
        logger.warning("durapipe serve: %s: Temporal did not answer: %s", where, err.message)
        lost = temporal_lost(err, where)
        return lost.response({"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
    except web.HTTPRequestEntityTooLarge as err:
        limit = request.app[_CONFIG].max_body_bytes
        return ServeError(
            "request.too_large",
            f"The request body passes this runner's limit of {limit} bytes; send a smaller method or inputs.",
            params={
                "limit": limit,
                "size": err.actual_size if hasattr(err, "actual_size") else limit + 1,
            },
        ).response()
    except web.HTTPMethodNotAllowed:
        return ServeError(
            "request.method_not_allowed",
            f"The route {request.path} does not accept {request.method}.",
        ).response()
    except web.HTTPNotFound:
        return ServeError(
            "request.not_found",
            f"This runner serves no route {request.path}; its routes are under /v1: version, "
            "models, validate, execute, start, runs/{id}/status|results|progress.",
        ).response()
    except Exception:
        # A bug of this runner, not a mistake of the caller: logged whole, answered in one sentence.
        logger.exception("durapipe serve: %s %s failed", request.method, request.path)
        return ServeError(
            "runtime.unexpected",
            f"The runner met an unexpected error on {request.method} {request.path}; its log has the details.",
        ).response()


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token auth on every route but ``/v1/version`` (the protocol keeps it public)."""
    if request.path == "/v1/version":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="durapipe"'}
    if scheme.lower() != "bearer" or not token.strip():
        return ServeError(
            "auth.missing_credential",
            "This runner needs a bearer token: send 'Authorization: Bearer <token>' with the "
            "token durapipe serve was started with.",
        ).response(challenge)
    expected = request.app[_CONFIG].token.encode("utf-8")
    if not hmac.compare_digest(token.strip().encode("utf-8"), expected):
        return ServeError(
            "auth.invalid_credential",
            "The bearer token was refused: send the token durapipe serve was started with.",
        ).response(challenge)
    return await handler(request)


def _runner_version() -> str:
    try:
        return version("durapipe")
    except PackageNotFoundError:
        return "0"


async def _version(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "protocol_version": PROTOCOL_VERSION,
            "runner_version": _runner_version(),
            "blob_store": False,
            "implementation": "durapipe",
            "run_lifecycle": True,
        }
    )


async def _models(request: web.Request) -> web.Response:
    category = request.query.get("type")
    known = ("llm", "extract", "img_gen", "search", "judgment")
    if category is not None and category not in known:
        raise ServeError(
            "request.invalid",
            f"The model category '{category}' is not one of: {', '.join(known)}.",
            params={"field": "type"},
        )
    deck = request.app[_CONFIG].capabilities.models
    models = [
        {"name": name, "type": kind}
        for name, kind in sorted(deck.items())
        if category is None or kind == category
    ]
    return web.json_response({"models": models})


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        ServeError: the body is not a JSON object.
    """
    config = request.app[_CONFIG]
    raw = await read_body(request, config.limits, config.max_body_bytes)
    try:
        body = json.loads(raw or b"{}")
    except UnicodeDecodeError:
        raise ServeError(
            "request.malformed",
            "The request body is not UTF-8 JSON.",
            params={"reason": "not_utf8"},
        ) from None
    except json.JSONDecodeError as err:
        raise ServeError(
            "request.malformed",
            f"The request body is not JSON ({err.msg} at position {err.pos}).",
            params={"reason": "not_json"},
        ) from None
    except RecursionError:
        raise ServeError(
            "request.malformed",
            "The request body's JSON is nested too deeply to read; send a flatter document.",
            params={"reason": "too_deep"},
        ) from None
    if not isinstance(body, dict):
        raise ServeError(
            "request.invalid", "The request body must be a JSON object.", params={"field": ""}
        )
    return body


def _method(config: ServeConfig, body: dict[str, Any]) -> Method:
    """The method a run request carries, or the pipes this runner holds when it carries none."""
    if body.get("files") is not None:
        return load_method(
            decode_files(body["files"]), config.deck, config.capabilities, config.methods
        )
    if config.pipeline is not None and body.get("pipe_code"):
        return Method(config.pipeline)
    raise ServeError(
        "request.invalid",
        "The request carries no method: send its bundles in 'files'"
        + (" or name one of this runner's pipes in 'pipe_code'." if config.pipeline else "."),
        params={"field": "files"},
    )


def _prepared(
    config: ServeConfig, body: dict[str, Any], key: str | None
) -> tuple[Method, str, str | None, Idempotency | None]:
    """The method, pipe and ``output_name`` a run request asks for, checked, and its idempotency.

    Raises:
        ServeError: no method, no such pipe, an output it cannot make, or one the workers do not
            offer.
    """
    method = _method(config, body)
    pipe = choose_pipe(method, body.get("pipe_code"))
    # Of the body as it arrived, before anything reads it.
    idempotency = None if key is None else Idempotency.of(key, body, pipe)
    method, output_name = requested_output(body, method, pipe)
    _trusted(config, method, pipe)
    return method, pipe, output_name, idempotency


def _trusted(config: ServeConfig, method: Method, pipe: str) -> None:
    """Refuse a pipe that reaches a model or a function the workers do not offer."""
    found = trust_problems(resolve(method.pipeline, pipe), config.capabilities)
    if found:
        raise untrusted(found)


async def _validate(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    request.app[_LOADS].refuse_if_full(_named(request))
    body = await _body(request)
    # Loading and checking a method is CPU work in proportion to its size (a 236 KB method, 2,000
    # pipes: 0.8 s): off the event loop, so every other client is answered meanwhile, and a few
    # at once (`MethodLoads`). A client that leaves meanwhile cancels only the wait; the check
    # ends in its thread, unread.
    loads = request.app[_LOADS]
    return web.json_response(await loads.run(_named(request), _verdict, config, body))


def _named(request: web.Request) -> str:
    """``POST /v1/validate``: the request as a log line names it."""
    return f"{request.method} {request.path}"


def _verdict(config: ServeConfig, body: dict[str, Any]) -> dict[str, Any]:
    """The validation report of the method ``body`` carries: every problem, or its pipes."""
    tree = decode_files(body.get("files"))
    errors: list[dict[str, Any]] = []
    try:
        method = load_method(tree, config.deck, config.capabilities, config.methods)
    except ServeError as err:
        if err.code not in ("method.invalid", "request.malformed"):
            raise
        errors = err.errors or [problem_item(err.code, err.detail)]
    else:
        for pipe in method.pipeline.pipes:
            errors += [
                trust_item(item)
                for item in trust_problems(resolve(method.pipeline, pipe), config.capabilities)
            ]
        # One fault found through several pipes is one fault.
        errors = list({json.dumps(e, sort_keys=True): e for e in errors}.values())
    if errors:
        count = len(errors)
        return {
            "is_valid": False,
            "errors": errors,
            "warnings": [],
            "pending_signatures": [],
            "is_runnable": False,
            "message": f"The method has {count} problem{'s' if count > 1 else ''}: {errors[0]['detail']}",
        }
    return {
        "is_valid": True,
        "warnings": [],
        "pipes": sorted(method.pipeline.pipes),
        "main_pipe": method.main_pipe,
    }


async def _start_run(request: web.Request, body: dict[str, Any]) -> tuple[RunHandle, str]:
    """Start the run a request asks for; the method and inputs are checked before anything starts."""
    config = request.app[_CONFIG]
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ServeError(
            "request.invalid",
            "The Idempotency-Key header must be 1 to 255 visible ASCII characters.",
            params={"field": "Idempotency-Key"},
        )
    # The method's load and checks are CPU work in proportion to its size: off the event loop,
    # a few at once.
    prepared = await request.app[_LOADS].run(_named(request), _prepared, config, body, key)
    method, pipe, output_name, idempotency = prepared
    # A file input may be fetched (an allowed URL) and is stored: off the event loop.
    inputs = await asyncio.to_thread(
        run_inputs,
        body.get("inputs"),
        method,
        pipe,
        allow_urls=config.allow_urls,
        max_bytes=config.max_body_bytes,
    )
    start = start_run(
        request.app[_CLIENT],
        method,
        pipe,
        inputs,
        task_queue=config.task_queue,
        idempotency=idempotency,
        output_name=output_name,
    )
    ended = keep_place(request)
    task = asyncio.ensure_future(start)
    task.add_done_callback(lambda _: ended())
    try:
        handle = await _shielded(request.app, task)
    except PipelineError as err:
        raise _refused_inputs(err) from None
    except RPCError as err:
        raise ServeError(
            "runtime.unavailable",
            f"Temporal cannot be reached ({err.message}); nothing was started, send the request again.",
        ) from None
    return handle, pipe


async def _shielded(app: web.Application, start: asyncio.Task[RunHandle]) -> RunHandle:
    """The handle of the run ``start`` starts, which ends even if its client leaves meanwhile.

    A handler whose client closed its connection is cancelled (`handler_cancellation`). Cancelled
    inside Temporal's start call, a start might or might not have started its run, and a client
    sending it again without an ``Idempotency-Key`` could start a second one. So a start that has
    begun is carried to its end, and says in the log which run it started; a stopping server
    waits for it (`_finish_starts`).
    """
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        if not start.done():
            logger.warning(
                "durapipe serve: a start's client closed the connection while its run was "
                "starting; the start goes on"
            )
            app[_STARTS].add(start)
            start.add_done_callback(_left_behind(app))
        raise


def _left_behind(app: web.Application) -> Callable[[asyncio.Task[RunHandle]], None]:
    def ended(start: asyncio.Task[RunHandle]) -> None:
        app[_STARTS].discard(start)
        if start.cancelled():
            return
        err = start.exception()
        if err is None:
            run_id = start.result().run_id
            logger.warning(
                "durapipe serve: started run %s for a client that left before the answer; it "
                "goes on, at /v1/runs/%s/status",
                run_id,
                run_id,
            )
        else:
            logger.warning("durapipe serve: a start whose client left failed: %s", err)

    return ended


async def _finish_starts(app: web.Application) -> None:
    """Let the starts whose clients left end before the server stops (see `_shielded`)."""
    starts = app[_STARTS]
    if starts:
        await asyncio.wait(set(starts), timeout=STARTS_GRACE_S)


def _refused_inputs(err: PipelineError) -> ServeError:
    """The refusal of inputs that do not fit the pipe: ``input.missing`` or ``input.invalid``."""
    first = err.problems[0]
    named = re.search(r"input '([^']+)'", first.where)
    name = named.group(1) if named else ""
    more = (
        f" (and {len(err.problems) - 1} more, listed in 'errors')" if len(err.problems) > 1 else ""
    )
    detail = f"The run was not started: {first}{more}."
    if "missing input" in first.message:
        return ServeError(
            "input.missing", detail, params={"input": name}, errors=problem_items(err.problems)
        )
    return ServeError(
        "input.invalid",
        detail,
        params={"input": name, "field": ""},
        errors=problem_items(err.problems),
    )


async def _start(request: web.Request) -> web.Response:
    request.app[_LOADS].refuse_if_full(_named(request))  # before its method is even read
    handle, pipe = await _start_run(request, await _body(request))
    return web.json_response(
        {"pipeline_run_id": handle.run_id, "pipe_code": pipe, "workflow_id": handle.run_id},
        status=202,
        headers={"Location": f"/v1/runs/{handle.run_id}/status"},
    )


async def _execute(request: web.Request) -> web.Response:
    request.app[_LOADS].refuse_if_full(_named(request))  # before its method is even read
    body = await _body(request)
    # It is about to wait for its run: under the executes' cap, not the connection caps.
    count_as_execute(request)
    handle, pipe = await _start_run(request, body)
    client = request.app[_CLIENT]
    try:
        result = await wait_result(handle, request.app[_CONFIG].execute_wait_s)
    except asyncio.CancelledError:
        # Its connection closed (`handler_cancellation`): the wait stops, and with it the place it
        # held under the executes' caps; the run goes on, durably.
        logger.warning(
            "durapipe serve: stopped waiting for run %s: its client closed the connection (or "
            "this server stops); the run goes on, at /v1/runs/%s/status",
            handle.run_id,
            handle.run_id,
        )
        raise
    except ServeError as err:
        logger.warning("durapipe serve: %s", err.detail)  # the operator starts the worker
        raise
    except TimeoutError:
        # The protocol's execute degrade: the run goes on, durably; the client follows it by id
        # instead of holding a connection open for as long as the run takes.
        return web.json_response(
            {"pipeline_run_id": handle.run_id, "pipe_code": pipe},
            status=202,
            headers={
                "Location": f"/v1/runs/{handle.run_id}/status",
                "Retry-After": str(POLL_RETRY_AFTER_S),
            },
        )
    except RunError:
        raise await failure_problem(client, handle.run_id, "FAILED") from None
    body = await results_body(client, handle.run_id, result)
    memory = body["working_memory"]
    answer = {
        "pipeline_run_id": handle.run_id,
        "pipe_output": {"working_memory": memory, "pipeline_run_id": handle.run_id},
        "main_stuff_name": body["main_stuff_name"],
        "pipe_code": pipe,
    }
    if TRUNCATED_STEPS in body:
        answer[TRUNCATED_STEPS] = body[TRUNCATED_STEPS]
    return web.json_response(answer)


async def _status(request: web.Request) -> web.Response:
    app = request.app
    read = await run_status(app[_CLIENT], request.match_info["run_id"], app[_STALLS], app[_ENDED])
    return web.json_response(read)


async def _progress(request: web.Request) -> web.Response:
    app = request.app
    progress = await run_progress(
        app[_CLIENT], request.match_info["run_id"], app[_STALLS], app[_ENDED]
    )
    return web.json_response(progress)


async def _results(request: web.Request) -> web.Response:
    app = request.app
    client = app[_CLIENT]
    read = await run_status(client, request.match_info["run_id"], app[_STALLS], app[_ENDED])
    body = await run_results(client, read, app[_ENDED])
    if body is None:
        # Still going: 202 with a hint of when to ask again (the lifecycle's running answer),
        # and, for a run that cannot make progress, why (the status read's degradation).
        running = {
            key: read[key]
            for key in ("pipeline_run_id", "status", "degraded", "degradation")
            if key in read
        }
        return web.json_response(
            running, status=202, headers={"Retry-After": str(POLL_RETRY_AFTER_S)}
        )
    return web.json_response(body)
