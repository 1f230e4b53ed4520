"""Fake OpenAI-compatible provider: public import path and ``python -m`` entry point.

Run ``python -m durapipe.testing.fake_provider --help`` for the process mode;
see `durapipe.testing._fake_provider` for the documentation.
"""

from durapipe.testing._fake_provider import (
    PAID_OUTCOMES,
    Action,
    Call,
    Drop,
    FakeProvider,
    Hang,
    Malformed,
    Reply,
    ResponseHook,
    SchemaInvalid,
    Status,
    ToolCalls,
    action_from_dict,
    action_to_dict,
    main,
    read_ledger,
)

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

if __name__ == "__main__":
    raise SystemExit(main())
