"""Tools whose failure messages quote what they hold: their input, as lookups often do, or the
worker's own credentials, as careless tools do."""

from __future__ import annotations

import os

from temporalio.exceptions import ApplicationError

from durapipe import ToolError


def lookup(customer: str) -> str:
    """Fail the way a record lookup does, naming what it looked for."""
    raise LookupError(f"no record found for {customer}")


def refused(customer: str) -> str:
    """Fail with `ToolError` (not retried), quoting the worker's CRM key as a careless tool does."""
    raise ToolError(f"the CRM refused key {os.environ['CRM_API_KEY']} for {customer}")


def rejected(customer: str) -> str:
    """Fail with Temporal's own `ApplicationError`, quoting the worker's CRM key."""
    raise ApplicationError(f"CRM key {os.environ['CRM_API_KEY']} rejected", non_retryable=True)


def broke(customer: str) -> str:
    """Fail with a plain exception quoting the worker's CRM key (not retried: one attempt)."""
    raise PermissionError(f"CRM key {os.environ['CRM_API_KEY']} has no access")


def loud(customer: str) -> str:
    """Fail with a message of 3,000,000 characters, more than Temporal records in a failure."""
    raise ValueError("x" * 3_000_000)


def detailed(customer: str) -> str:
    """Fail with an `ApplicationError` whose message is clean and whose details quote the key."""
    key = os.environ["CRM_API_KEY"]
    raise ApplicationError(
        "the CRM refused the key", {"sent": key, "tried": [f"key={key}"]}, non_retryable=True
    )
