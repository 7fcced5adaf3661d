"""``novanet-agent``: the per-node control plane process."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

from novanet_core import __version__, debug_api
from novanet_core.agent.api_methods import cni_router, control_router
from novanet_core.agent.service import Agent
from novanet_core.api.server import ApiServer, Limits
from novanet_core.backends import ConfigError
from novanet_core.config.loader import load_config
from novanet_core.logging_setup import setup_logging
from novanet_core.metrics import start_metrics
from novanet_core.plugins.manager import PluginHost

log = logging.getLogger("novanet.agent")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="NOVANET_CONFIG",
              help="config file (YAML or JSON); NOVANET_* variables override it")
@click.option("--log-level", default=None, help="override logLevel")
@click.option("--withdraw-on-exit", is_flag=True,
              help="withdraw this node's routes when stopping (drain/uninstall); a restart keeps them")
@click.version_option(__version__, prog_name="novanet-agent", message="%(prog)s %(version)s")
def main(config_path: str | None, log_level: str | None, withdraw_on_exit: bool) -> None:
    """Run the NovaNet agent for this node."""
    # Whatever umask the runtime hands us, nothing we create is group- or world-writable.
    os.umask(0o022)
    try:
        config = load_config(config_path, overrides={"logLevel": log_level} if log_level else None)
        setup_logging(config.logLevel, "novanet-agent")
        host = PluginHost(config, "agent")
        host.select()
        agent = Agent(config, host)
    except ConfigError as e:
        click.echo(f"novanet-agent: {e}", err=True)
        sys.exit(2)
    servers = []
    try:
        agent.start()
    except ConfigError as e:
        log.error("fatal: %s", e)
        sys.exit(2)
    limits = Limits.from_config(config.api)
    cni_srv = ApiServer(config.sockets.cni, cni_router(agent), root_only=True, limits=limits)
    ctl_router = control_router(agent)
    debug_api.register(ctl_router, "agent", config.bpf.root, agent)
    host.hook.novanet_register_api(router=ctl_router, component="agent", backends=agent.backends)
    ctl_srv = ApiServer(config.sockets.agent, ctl_router, root_only=True, limits=limits)
    agent.api_servers = {"cni": cni_srv, "agent": ctl_srv}
    for s in (cni_srv, ctl_srv):
        s.start()
        servers.append(s)
    start_metrics(config.metrics.address, host, "agent", agent, agent.backends)
    log.info("started: serving %s and %s", config.sockets.cni, config.sockets.agent)
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping (pinned datapath state and pods are left running)", signum)
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    agent.stop(withdraw=withdraw_on_exit)
    for s in servers:
        s.stop()


if __name__ == "__main__":
    main()
