"""What every NovaNet command tree gets once the plugins have added theirs: ``--version`` on every
command, a ``completion`` command, and a walk over the tree (for the generated CLI reference)."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


def walk(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree, depth first, subcommands sorted by name."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from walk(cmd.commands[name], (*path, name))


def _version_option(prog: str, version: str) -> click.Option:
    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(f"{prog} {version}")
            ctx.exit()

    return click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=show,
                        help="Print the version and exit.")


def add_version_everywhere(root: click.Command, prog: str, version: str) -> None:
    """``PROG ... CMD --version`` prints ``PROG VERSION`` for every command (idempotent)."""
    for _, cmd in walk(root):
        if not any("--version" in p.opts for p in cmd.params if isinstance(p, click.Option)):
            cmd.params.append(_version_option(prog, version))


def completion_command(prog: str) -> click.Command:
    env_var = f"_{prog.replace('-', '_').upper()}_COMPLETE"

    @click.command("completion")
    @click.argument("shell", type=click.Choice(SHELLS))
    def completion(shell: str) -> None:
        """Print the shell completion script: eval "$(PROG completion bash)" (or zsh, fish)."""
        root = click.get_current_context().find_root().command
        cls = get_completion_class(shell)
        assert cls is not None  # every name in SHELLS is one of click's
        click.echo(cls(root, {}, prog, env_var).source())

    completion.help = (completion.help or "").replace("PROG", prog)
    return completion


def finish(root: click.Group, prog: str, version: str) -> click.Group:
    """Add ``completion`` and ``--version`` everywhere; call after plugins registered their commands."""
    if "completion" not in root.commands:
        root.add_command(completion_command(prog))
    add_version_everywhere(root, prog, version)
    return root
