"""The public helpers for plugin subcommands of ``novanetctl`` (documented in docs/plugin-authoring.md).

A plugin's commands (``novanet_register_cli(program="novanetctl")``) use these instead of
``novanetctl`` internals, so that every command, core or plugin, behaves the same way:

- ``-o table|json`` per command, falling back to the global ``novanetctl -o``;
- talking to the agent or the dataplane: a daemon that is down (socket missing, nobody listening,
  connection lost mid-stream, or the agent answering ``unavailable`` because its dataplane is
  down) exits with code 3 and one line on stderr, never a traceback; an error answer exits 1;
- ``json_shape`` records the shape of a command's ``-o json`` output for the generated CLI
  reference (docs/cli.md).

``ctx.obj`` is the novanetctl context: any object with ``agent()`` and ``dataplane()`` returning a
:class:`novanet_core.api.client.ApiClient`, and ``output`` (the global ``-o``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import click

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from novanet_core.cli.output import table as _table

__all__ = [
    "EXIT_ERROR", "EXIT_UNREACHABLE", "EXIT_USAGE", "agent_call", "agent_stream", "dataplane_call",
    "dataplane_stream", "emit", "emit_json", "emit_json_line", "fail", "json_shape", "output_format",
    "output_option", "table",
]

EXIT_ERROR = 1  # the daemon answered with an error
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_UNREACHABLE = 3  # the daemon is down or unreachable

F = TypeVar("F", bound=Callable[..., Any])

output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]), default=None,
                             help="Output format (default: the global -o, else table).")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; None and "" print as ``-``."""
    return _table(headers, rows)


def json_shape(shape: str) -> Callable[[F], F]:
    """Declare the shape of the command's ``-o json`` output (shown in docs/cli.md)."""

    def deco(f: F) -> F:
        f.__novanet_json_shape__ = shape  # type: ignore[attr-defined]
        return f

    return deco


def _ctx(ctx: click.Context | None) -> click.Context:
    return ctx or click.get_current_context()


def output_format(local: str | None = None, ctx: click.Context | None = None) -> str:
    """The command's ``-o`` if given, else the global one, else ``table``."""
    if local:
        return local
    obj = _ctx(ctx).find_root().obj
    return getattr(obj, "output", None) or "table"


def _prog(ctx: click.Context | None = None) -> str:
    try:
        return _ctx(ctx).find_root().info_name or "novanetctl"
    except RuntimeError:
        return "novanetctl"


def fail(msg: str, code: int = EXIT_ERROR, ctx: click.Context | None = None) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"{_prog(ctx)}: {msg}", err=True)
    sys.exit(code)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def emit_json_line(obj: Any) -> None:
    """One compact object per line (streams: ``flows -f -o json``)."""
    click.echo(json.dumps(obj, separators=(",", ":"), default=str))


def emit(obj: Any, render: Callable[[Any], str | None], local: str | None = None) -> None:
    """Print ``obj`` as JSON under ``-o json``, else whatever ``render(obj)`` returns."""
    if output_format(local) == "json":
        emit_json(obj)
        return
    text = render(obj)
    if text is not None:
        click.echo(text)


_DAEMON_HINT = {"agent": "is novanet-agent running on this node?",
                "dataplane": "is novanet-dataplane running on this node?"}


def _client(which: str, ctx: click.Context) -> ApiClient:
    obj = ctx.find_root().obj
    try:
        return obj.agent() if which == "agent" else obj.dataplane()
    except Unreachable as e:
        # Finding the dataplane's socket asks the agent first.
        fail(f"agent not reachable ({e}); {_DAEMON_HINT['agent']}", EXIT_UNREACHABLE, ctx)
    except ApiError as e:
        _api_error(e, ctx)


def _api_error(e: ApiError, ctx: click.Context) -> NoReturn:
    # "unavailable": the agent is up but what it needs for this answer (its dataplane) is not.
    fail(f"{e.code}: {e.message}", EXIT_UNREACHABLE if e.code == "unavailable" else EXIT_ERROR, ctx)


# Answers meaning "this daemon has no such method here" (a plugin not active, a section missing).
_MISSING = ("unknown_method", "unsupported")


def _call(which: str, method: str, params: dict[str, Any] | None, ctx: click.Context | None,
          missing_ok: bool = False) -> Any:
    c = _ctx(ctx)
    client = _client(which, c)
    try:
        with client:
            return client.call(method, params)
    except Unreachable as e:
        fail(f"{which} not reachable ({e}); {_DAEMON_HINT[which]}", EXIT_UNREACHABLE, c)
    except ApiError as e:
        if missing_ok and e.code in _MISSING:
            return None
        _api_error(e, c)


def _stream(which: str, method: str, params: dict[str, Any] | None, ctx: click.Context | None) -> Iterator[Any]:
    c = _ctx(ctx)
    client = _client(which, c)
    try:
        with client:
            yield from client.stream(method, params)
    except Unreachable as e:
        fail(f"{which} not reachable ({e}); {_DAEMON_HINT[which]}", EXIT_UNREACHABLE, c)
    except ApiError as e:
        _api_error(e, c)


def agent_call(method: str, params: dict[str, Any] | None = None, ctx: click.Context | None = None,
               missing_ok: bool = False) -> Any:
    """Call a method of the node's agent; exits 3 if it is down, 1 on an error answer.
    ``missing_ok``: None instead of an exit when the agent has no such method (a plugin not active)."""
    return _call("agent", method, params, ctx, missing_ok)


def dataplane_call(method: str, params: dict[str, Any] | None = None, ctx: click.Context | None = None,
                   missing_ok: bool = False) -> Any:
    """Call a method of the node's dataplane (its socket is asked from the agent unless given)."""
    return _call("dataplane", method, params, ctx, missing_ok)


def agent_stream(method: str, params: dict[str, Any] | None = None,
                 ctx: click.Context | None = None) -> Iterator[Any]:
    """Items of a streaming agent method; exits 3 if the agent goes away, also mid-stream."""
    return _stream("agent", method, params, ctx)


def dataplane_stream(method: str, params: dict[str, Any] | None = None,
                     ctx: click.Context | None = None) -> Iterator[Any]:
    """Items of a streaming dataplane method (``ebpf.flows``); exits 3 if it goes away."""
    return _stream("dataplane", method, params, ctx)
