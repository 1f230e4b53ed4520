"""A fake OpenAI-compatible Chat Completions provider for tests.

`FakeProvider` is a small real HTTP server (aiohttp) on ``127.0.0.1`` that speaks
enough of the OpenAI Chat Completions API for ``litellm`` (and the ``openai`` SDK)
to talk to it for real::

    with FakeProvider() as fake:
        response = litellm.completion(
            model="openai/gpt-x",  # any name after "openai/"
            api_base=fake.base_url,  # http://127.0.0.1:<port>/v1
            api_key="sk-fake",
            messages=[{"role": "user", "content": "hi"}],
            num_retries=0,
        )

Every call is recorded in a ledger (`Call` records) and the answer for each call
can be scripted per model name (`Reply`, `Status`, `Hang`, `Drop`, `Malformed`,
`SchemaInvalid`, `ToolCalls`), or made to fail at random with a seeded rate.

Arrival times:
    A `Call` has two: ``received_at``, when the server's event loop got to the
    request, and ``kernel_received_at``, when the kernel had received it (the
    listening socket sets ``SO_TIMESTAMPNS`` and every read is a ``recvmsg``;
    Linux only, see `durapipe.testing._fake_provider._arrivals`). On a loaded
    host the loop's time can be tenths of a second late, so rates
    (`FakeProvider.max_rate`) count by the kernel's (`Call.arrived_at`).

Passing the idempotency key and attempt number:
    The server reads the idempotency key from the ``X-Durapipe-Idempotency-Key``
    request header (falling back to ``metadata.idempotency_key`` in the JSON body,
    for raw HTTP clients) and the attempt number from ``X-Durapipe-Attempt``.
    With litellm, pass them as ``extra_headers``; litellm hands them to the
    ``openai`` SDK, which sends them as ordinary HTTP headers to ``api_base``::

        await litellm.acompletion(
            model="openai/gpt-x",
            api_base=fake.base_url,
            api_key="sk-fake",
            messages=messages,
            extra_headers={
                "X-Durapipe-Idempotency-Key": key,
                "X-Durapipe-Attempt": str(attempt),
            },
        )

    (``metadata={...}`` given to litellm is *not* forwarded to the provider; it is
    litellm's own logging metadata.)

    ``FakeProvider(honour_idempotency=True)`` (``--honour-idempotency``) models a
    provider or gateway that deduplicates by that key: a repeated key gets the
    stored answer again, recorded as ``replayed`` and not billed. Without it,
    every completion is billed, as the OpenAI API does.

Retries:
    Pass ``num_retries=0`` to litellm when a test needs exactly one HTTP request
    per call: litellm then also sets the ``openai`` SDK's ``max_retries`` to 0.
    Without it, the SDK itself retries connection errors, 408/409/429 and 5xx
    responses (2 retries by default), and the ledger shows 3 calls.

What litellm raises (``openai/`` models, litellm 1.106):
    ``Status(401)`` -> ``AuthenticationError``; ``Status(404)`` ->
    ``NotFoundError``; ``Status(400)`` -> ``BadRequestError``;
    ``Status(400, error_code="context_length_exceeded")`` ->
    ``ContextWindowExceededError``; ``Status(400,
    error_code="content_policy_violation")`` -> ``ContentPolicyViolationError``;
    ``Status(429)`` -> ``RateLimitError``; ``Status(500)`` ->
    ``InternalServerError``; ``Status(502)`` -> ``BadGatewayError``;
    ``Status(503)`` -> ``ServiceUnavailableError``; `Drop` ->
    ``InternalServerError`` ("Connection error."); `Hang` beyond the client's
    ``timeout`` -> ``Timeout``.

Retry-After on litellm exceptions:
    For a `Status` with ``retry_after`` the server sends a ``Retry-After``
    header. On the litellm exception it is in
    ``exc.litellm_response_headers["retry-after"]`` (an ``httpx.Headers``);
    ``exc.response.headers`` is empty for these mapped exceptions.

Three ways to run it:
    * ``with FakeProvider() as fake:`` -- the server runs on its own event loop
      in a background thread, so synchronous tests and any other event loop can
      call it.
    * ``async with FakeProvider() as fake:`` -- the same, started and stopped
      without blocking the caller's event loop.
    * As a separate process, for scenarios where workers in several processes
      share one provider::

          python -m durapipe.testing.fake_provider --port 0 \\
              [--script FILE.json] [--ledger FILE.jsonl] \\
              [--failure-rate 0.2 --seed 1] [--honour-idempotency]
              [--tls DIR] [--max-concurrency-report]

      It prints ``listening on http://127.0.0.1:PORT/v1`` (``https://`` with
      ``--tls DIR``: a self-signed certificate made in DIR, clients trust
      ``DIR/cert.pem``) and serves until
      SIGTERM/SIGINT. The ledger is appended to the JSONL file (one flushed line
      per finished call, see `read_ledger`). Control endpoints:
      ``GET /_fake/ledger`` (calls and concurrency figures as JSON),
      ``POST /_fake/script`` (a script document, see `FakeProvider.load_script`)
      and ``POST /_fake/reset``.
"""

from durapipe.testing._fake_provider._actions import (
    Action,
    Drop,
    Hang,
    Malformed,
    Reply,
    SchemaInvalid,
    Status,
    ToolCalls,
    action_from_dict,
    action_to_dict,
)
from durapipe.testing._fake_provider._cli import main
from durapipe.testing._fake_provider._ledger import PAID_OUTCOMES, Call, ResponseHook, read_ledger
from durapipe.testing._fake_provider._provider import FakeProvider

__all__ = [
    "PAID_OUTCOMES",
    "Action",
    "Call",
    "Drop",
    "FakeProvider",
    "Hang",
    "Malformed",
    "Reply",
    "ResponseHook",
    "SchemaInvalid",
    "Status",
    "ToolCalls",
    "action_from_dict",
    "action_to_dict",
    "main",
    "read_ledger",
]
