"""Built-in plugin: fallback discovery of the node IP when ``nodeIP``/``NOVANET_NODE_IP`` is unset."""

from __future__ import annotations

from novanet_core import netlink
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl


@hookimpl(trylast=True)
def novanet_node_ip(config: NovaNetConfig) -> str | None:
    with netlink.IPRoute() as ipr:
        for r in ipr.get_routes(family=2, dst_len=0, table=254):
            src = r.get_attr("RTA_PREFSRC")
            if src:
                return src
            oif = r.get_attr("RTA_OIF")
            for a in ipr.get_addr(family=2, index=oif) if oif else []:
                return a.get_attr("IFA_ADDRESS")
        for a in ipr.get_addr(family=2):
            if a["scope"] == 0 and not a.get_attr("IFA_ADDRESS", "").startswith("127."):
                return a.get_attr("IFA_ADDRESS")
    return None
