"""``novanet-dataplane`` entry point."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

from novanet_core import __version__, debug_api
from novanet_core.api.server import ApiServer, Limits
from novanet_core.backends import BackendContext, ConfigError
from novanet_core.config.loader import load_config
from novanet_core.dataplane.service import DataplaneService
from novanet_core.logging_setup import setup_logging
from novanet_core.metrics import start_metrics
from novanet_core.plugins.manager import PluginHost

log = logging.getLogger("novanet.dataplane")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="NOVANET_CONFIG")
@click.option("--metrics-address", default=None,
              help="serve dataplane metrics here (host:port; default metrics.dataplaneAddress, '' = off)")
@click.version_option(__version__, prog_name="novanet-dataplane", message="%(prog)s %(version)s")
def main(config_path: str | None, metrics_address: str | None) -> None:
    """Run the NovaNet dataplane (the BPF owner) for this node."""
    # Whatever umask the runtime hands us, nothing we create is group- or world-writable.
    os.umask(0o022)
    try:
        config = load_config(config_path)
        setup_logging(config.logLevel, "novanet-dataplane")
        host = PluginHost(config, "dataplane")
        host.select()
        backend = host.create("datapath", BackendContext(config=config, component="dataplane"))
        backend.start()
    except ConfigError as e:
        click.echo(f"novanet-dataplane: {e}", err=True)
        sys.exit(2)
    svc = DataplaneService(backend)
    router = svc.router()
    debug_api.register(router, "dataplane")
    host.hook.novanet_register_api(router=router, component="dataplane", backends={"datapath": backend})
    srv = ApiServer(config.sockets.dataplane, router, root_only=True, limits=Limits.from_config(config.api))
    svc.api_server = srv
    srv.start()
    start_metrics(config.metrics.dataplaneAddress if metrics_address is None else metrics_address, host, "dataplane",
                  backends={"datapath": backend})
    log.info("started: datapath %s, serving %s", backend.name, config.sockets.dataplane)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    log.info("stopping; pinned programs and maps keep forwarding")
    srv.stop()
    backend.stop()


if __name__ == "__main__":
    main()
