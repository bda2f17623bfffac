"""Logging of the operator: levels in one place, and what must never reach a log.

- ``RADSCALE_LOG_LEVEL`` (the chart's ``logLevel``: debug, info, warning, error) sets the level of
  the process's root logger, so of kopf's own messages (``debug`` is kopf's ``--verbose``) and ours.
  Unset, the level kopf's command line chose (``--verbose``/``--debug``/``--quiet``) stays.
- botocore, boto3, s3fs, aiobotocore and urllib3 stay at WARNING whatever the level: at DEBUG they
  log request headers (the S3 access key id) and object keys.
- Values read from result files or specs never reach a log or an Event: :func:`describe` says what
  is wrong with a file by error type and field path only (map keys, which come from the file, are
  not named), and :class:`Redact`, on the root handlers and kopf's Event poster, replaces the text of
  any pydantic ``ValidationError`` (which quotes its input) in a message or traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import traceback
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
QUIET = ("botocore", "boto3", "s3fs", "aiobotocore", "urllib3")
"""Loggers held at WARNING (or above) even in debug: their DEBUG records carry credentials."""


def level_from_env(env: Mapping[str, str]) -> int | None:
    """The level ``RADSCALE_LOG_LEVEL`` names; None when unset; ValueError naming the choices."""
    raw = (env.get("RADSCALE_LOG_LEVEL") or "").strip().lower()
    if not raw:
        return None
    if raw not in LEVELS:
        raise ValueError(f"RADSCALE_LOG_LEVEL={raw!r}: must be one of {', '.join(LEVELS)}")
    return LEVELS[raw]


def configure(env: Mapping[str, str]) -> int:
    """Apply the environment's level to the root logger (kopf logs through it: ``debug`` is what
    ``kopf run --verbose`` gives); quieten the noisy loggers; install the redaction filter on the
    handlers kopf set up. Returns the root level now in force."""
    level = level_from_env(env)
    root = logging.getLogger()
    if level is not None:
        root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, level or logging.WARNING))
    redact = Redact()
    for handler in [*root.handlers, *logging.getLogger("kopf.objects").handlers]:
        if not any(isinstance(f, Redact) for f in handler.filters):
            handler.addFilter(redact)
    return root.level


# --- saying what is wrong without saying what was read ------------------------------------------


@functools.cache
def _known_names() -> frozenset[str]:
    """Field names and aliases of the models whose errors reach logs: a path part that is not one of
    them is a map key read from the file, and is not named."""
    from radscale import cells
    from radscale.operator import api

    names: set[str] = set()
    seen: set[type] = set()

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            if annotation in seen:
                return
            seen.add(annotation)
            for n, f in annotation.model_fields.items():
                names.update({n, f.alias or n})
                walk(f.annotation)
        for arg in typing.get_args(annotation):
            walk(arg)

    for model in (cells.CellResult, cells.CellSpec, api.ScalingStudy, api.ScalingStudyStatus):
        walk(model)
    return frozenset(names)


def _path(loc: tuple[Any, ...], last_is_key: bool) -> str:
    known = _known_names()
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if text.startswith(("function-", "constrained-")):
            continue
        if (last_is_key and i == len(loc) - 1) or text not in known:
            text = "<key>"
        out += f".{text}" if out else text
    return out or "."


def describe(exc: BaseException) -> str:
    """What is wrong, by error type and location, never quoting the input."""
    if isinstance(exc, pydantic.ValidationError):
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
        parts = [f"{_path(tuple(e['loc']), e['type'] == 'extra_forbidden')} ({e['type']})" for e in errors[:10]]
        more = f", and {len(errors) - 10} more" if len(errors) > 10 else ""
        return f"{len(errors)} validation error(s) for {exc.title}: {', '.join(parts)}{more}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not {exc.encoding} text (bad byte at offset {exc.start})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} (errno {exc.errno})"
    return type(exc).__name__


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def safe_str(exc: BaseException) -> str:
    """``str(exc)`` with the text of every pydantic ValidationError it was raised from (and quotes)
    replaced by :func:`describe`: for messages printed to a terminal or a log."""
    text = str(exc)
    for e in _chain(exc):
        if isinstance(e, pydantic.ValidationError):
            text = text.replace(str(e), describe(e))
    return text


class Redact(logging.Filter):
    """Replace the text of every pydantic ValidationError in a record (its message, its arguments,
    its traceback) by :func:`describe`: the error's own text quotes the values it was given."""

    def filter(self, record: logging.LogRecord) -> bool:
        errors: list[BaseException] = []
        if record.exc_info and record.exc_info[1] is not None:
            errors += [e for e in _chain(record.exc_info[1]) if isinstance(e, pydantic.ValidationError)]
        if isinstance(record.args, tuple):
            for arg in record.args:
                if isinstance(arg, BaseException):
                    errors += [e for e in _chain(arg) if isinstance(e, pydantic.ValidationError)]
        if not errors:
            return True
        swaps = [(str(e), describe(e)) for e in errors]

        def scrub(text: str) -> str:
            for raw, safe in swaps:
                text = text.replace(raw, safe)
            return text

        message = scrub(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            te = traceback.TracebackException(*record.exc_info)
            for part in _tb_chain(te):
                part._str = scrub(part._str)  # type: ignore[attr-defined]  # the exception's text, as printed
            record.exc_text = "".join(te.format()).rstrip("\n")
        return True


def _tb_chain(te: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    seen: set[int] = set()
    todo = [te]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo += [t for t in (cur.__cause__, cur.__context__) if t is not None]
        todo += list(getattr(cur, "exceptions", None) or [])
