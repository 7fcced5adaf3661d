"""Runs the ebpf backend as a dataplane process would (tests start it with nsenter --net=...).

argv[1]: JSON {"config": {...}, "settings": {...}, "endpoints": [Endpoint dicts]}. Prints one line
``READY <json>`` once serving, then idles until killed (tests kill it with SIGKILL: no cleanup).
"""

from __future__ import annotations

import json
import sys
import time

from novanet_ebpf_policy.backend import EbpfDatapath

from novanet_core.backends import BackendContext
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import Endpoint


def main() -> None:
    spec = json.loads(sys.argv[1])
    dp = EbpfDatapath(BackendContext(config=NovaNetConfig.model_validate(spec["config"]), component="dataplane"))
    dp.start()
    dp.configure(spec["settings"])
    for e in spec["endpoints"]:
        dp.upsert_endpoint(Endpoint.from_dict(e))
    info = {"endpoints": dp.list_endpoints(), "links": dp.links(), "programs": dp.prog.ids if dp.prog else {},
            "last_start": dp.last_start}
    print("READY " + json.dumps(info), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
