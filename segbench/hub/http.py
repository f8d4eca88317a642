"""HTTP failures of huggingface_hub calls: which are transient, one-line reports with the token redacted, retries
with backoff, and the write-token check (the split huggingface_hub itself makes between utils/_http.py and its
commit API)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from ..errors import SegbenchError

# Retries around one repo's whole sync (create, diff, upload, commit). The commit POST itself is not retried by
# huggingface_hub; re-diffing before each attempt makes a retry after a lost response a no-op, not a 2nd commit.
ATTEMPTS = 4
BACKOFF_S = 1.0  # first wait; doubles each attempt
MAX_WAIT_S = 30.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level exception classes of whichever HTTP client huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):  # whichever huggingface_hub imported (by version)
        mod = sys.modules.get(module)
        if mod is None:
            continue
        for name in ("TransportError", "ConnectionError", "Timeout"):
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    return tuple(errors)


_TRANSPORT = _transport_errors()


# ---------------------------------------------------------------------------------------------------------------
# Errors and redaction
# ---------------------------------------------------------------------------------------------------------------

def redact(text: str) -> str:
    """Remove the token from anything we print, in case a server echoes it."""
    token = get_token()
    return text.replace(token, "hf_***") if token else text


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the first response in the exception chain, None for a network-level failure."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Network errors, timeouts, HTTP 408/429/5xx: worth another try."""
    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    return any(isinstance(e, _TRANSPORT) for e in _chain(exc))


def short_error(exc: BaseException) -> str:
    """One line for a report: the HTTP status and the server's message, or the exception's first line."""
    status = http_status(exc)
    if isinstance(exc, SegbenchError):
        text = str(exc)
    elif status is not None:
        e = next((e for e in _chain(exc) if getattr(e, "response", None) is not None), exc)
        reason = getattr(e.response, "reason_phrase", None) or getattr(e.response, "reason", None) or ""
        server = getattr(e, "server_message", None) or ""
        text = f"HTTP {status} {reason}".strip() + (f": {server.splitlines()[0]}" if server else "")
    else:
        root = list(_chain(exc))[-1]
        first = (str(root).strip().splitlines() or [""])[0]
        text = f"{type(root).__name__}: {first}" if first else type(root).__name__
    return redact(text)[:300]


# ---------------------------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------------------------

def with_retries(
    fn: Callable[[], Any],
    *,
    what: str,
    attempts: int | None = None,
    backoff_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Call ``fn`` and retry transient failures with exponential backoff (honouring ``Retry-After``)."""
    attempts = ATTEMPTS if attempts is None else max(1, attempts)
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            wait = min(MAX_WAIT_S, backoff_s * 2 ** (attempt - 1))
            retry_after = _retry_after(exc)
            if retry_after is not None:
                wait = min(MAX_WAIT_S, max(wait, retry_after))
            if log:
                log(f"  {what}: {short_error(exc)}; retrying in {wait:.1f}s ({attempt + 1}/{attempts})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def _retry_after(exc: BaseException) -> float | None:
    for e in _chain(exc):
        headers = getattr(getattr(e, "response", None), "headers", None)
        if headers is not None and headers.get("Retry-After"):
            try:
                return float(headers["Retry-After"])
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------------------------

def check_write_access(api: HfApi) -> str:
    """The user name behind the token, or SegbenchError (one line) when there is no usable write token.

    The token comes from ``HF_TOKEN`` or the saved login (huggingface_hub's ``get_token``); it is never printed.
    """
    if not get_token():
        raise SegbenchError(
            "Hugging Face token not found: set HF_TOKEN or run 'hf auth login' with a token that has write access"
        )
    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        if http_status(exc) == 401:
            raise SegbenchError(
                "Hugging Face token rejected (401): set HF_TOKEN or run 'hf auth login' with a valid write token"
            ) from None
        raise SegbenchError(f"{api.endpoint}: token check failed ({short_error(exc)}); try again later") from None
    except Exception as exc:
        if is_transient(exc):
            raise SegbenchError(
                f"{api.endpoint}: Hugging Face Hub not reachable ({short_error(exc)}); "
                "check the connection or --endpoint"
            ) from None
        raise
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise SegbenchError(
            "Hugging Face token is read-only: pushing needs a token with write access "
            "(https://huggingface.co/settings/tokens)"
        )
    return str(info["name"])


def no_write_access(exc: BaseException, repo_id: str) -> SegbenchError | None:
    """The one-line error for a 401/403 on ``repo_id`` (a token without rights there), else None."""
    if http_status(exc) in (401, 403):
        return SegbenchError(
            f"{repo_id}: no write access ({short_error(exc)}); "
            "use a write token for this namespace or pick another --owner"
        )
    return None
