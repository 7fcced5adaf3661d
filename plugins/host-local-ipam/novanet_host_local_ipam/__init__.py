"""NovaNet's first-party ``host-local`` IPAM backend (``ipam.type: host-local``).

Hands out pod addresses from the node PodCIDR and keeps one file per allocated IP under
``ipam.dataDir``, in the layout of the reference CNI ``host-local`` plugin.
"""

from novanet_host_local_ipam.backend import HostLocalIpam
from novanet_host_local_ipam.pool import Pool

__version__ = "0.1.0"
__all__ = ["HostLocalIpam", "Pool", "__version__"]
