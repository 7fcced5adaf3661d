"""``novanet``: the user-facing command. Its subcommands come from plugins (``novanet lab ...`` from
the lab plugin, novanet-lab) through ``novanet_register_cli`` (program ``"novanet"``), next to the
core's own ``install-cni``.

Expected failures (ConfigError, the environment) are printed as ``Error: ...`` with exit code 1;
tracebacks are for bugs only.
"""

from __future__ import annotations

from typing import Any

import click
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.backends import ConfigError


class _Group(click.Group):
    """Turns expected errors into click errors: ``Error: ...`` on stderr, exit 1."""

    _plugins_registered = False

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # Plugins add their own ``novanet`` subcommands (novanet_register_cli, program="novanet").
        if self.name == "main" and not _Group._plugins_registered:
            _Group._plugins_registered = True
            try:
                from novanet_core.config.models import NovaNetConfig
                from novanet_core.plugins.manager import PluginHost

                host = PluginHost(NovaNetConfig(), "cli")
                host.pm.hook.novanet_register_cli.call_historic(kwargs={"cli": self, "program": "novanet"})
            except Exception as e:  # a broken plugin must not take the core commands down
                click.echo(f"novanet: warning: plugin commands unavailable: {e}", err=True)
            from novanet_core import __version__
            from novanet_core.cli import tree

            tree.finish(self, "novanet", __version__)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
        except (OSError, NetlinkError) as e:  # the environment (permissions, kernel features), not a bug
            raise click.ClickException(f"{type(e).__name__}: {e}") from None


@click.group(cls=_Group)
def main() -> None:
    """NovaNet command line."""


@main.command("install-cni")
@click.option("--bin-dir", default="/opt/cni/bin", show_default=True, help="where the runtime finds CNI plugins")
@click.option("--conf-dir", default="/etc/cni/net.d", show_default=True, help="where the runtime finds network configs")
@click.option("--agent-socket", default="/run/novanet/cni.sock", show_default=True)
@click.option("--binary", default=None, help="the built novanet-cni to install (default: this installation's, "
              "<prefix>/libexec/novanet/novanet-cni, or NOVANET_CNI_BINARY)")
def install_cni(bin_dir: str, conf_dir: str, agent_socket: str, binary: str | None) -> None:
    """Install the static novanet-cni binary and 10-novanet.conflist (the DaemonSet's install-cni step)."""
    from novanet_core.cni.install import InstallError, install

    try:
        written = install(bin_dir, conf_dir or None, agent_socket, binary)
    except (InstallError, OSError) as e:
        raise click.ClickException(str(e)) from None
    for path in written:
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
