"""Entry point ``lab`` (group ``novanet.plugins``): adds ``novanet lab ...`` and lets
``novanetctl --node NAME [--lab LAB]`` find a lab node's agent socket.

Loaded by every NovaNet process like any plugin, so nothing here imports the lab's modules until
a command needs them.
"""

from __future__ import annotations

import os

import click

from novanet_core.hookspecs import hookimpl

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with


def lab_node_socket(node: str, lab: str | None) -> str:
    """The agent socket of a running lab node (the layout is the lab's: novanet_lab.paths)."""
    from novanet_lab.lifecycle import list_labs
    from novanet_lab.paths import LabPaths

    labs = [lab] if lab else list_labs()
    hits = [str(LabPaths(name).socket(node, "agent")) for name in labs]
    hits = [h for h in hits if os.path.exists(h)]
    if not hits:
        raise click.UsageError(f"--node {node}: no running lab node of that name (labs: {', '.join(labs) or 'none'})")
    if len(hits) > 1:
        raise click.UsageError(f"--node {node}: several labs have that node ({', '.join(labs)}); add --lab NAME")
    return hits[0]


@hookimpl
def novanet_register_cli(cli: click.Group, program: str) -> None:
    if program == "novanet":
        from novanet_lab.cli import lab

        cli.add_command(lab)
    elif program == "novanetctl":
        add = getattr(cli, "add_node_resolver", None)
        if add is not None:
            add("lab", lab_node_socket)
