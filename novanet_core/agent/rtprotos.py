"""Names for NovaNet's route protocol numbers, so ``ip route`` prints ``proto novanet`` as the guide
shows it (iproute2 reads ``/etc/iproute2/rt_protos.d/*.conf`` after ``rt_protos``, so a name here
wins over the stock table's, which calls 99 ``openr``).

The agent writes the file at start when the directory exists (a node, the lab; a container needs
the host's directory mounted); it is only a display name, so failing to write it is logged, never
fatal.
"""

from __future__ import annotations

import logging
import os

from novanet_core.protocols import RTPROT_NOVANET, RTPROT_NOVANET_NAME, RTPROT_NOVANET_ROUTING

log = logging.getLogger("novanet.agent")

RT_PROTOS_DIR = "/etc/iproute2/rt_protos.d"
FILE_NAME = "novanet.conf"


def content() -> str:
    return ("# Route protocols of NovaNet (written by novanet-agent; see novanet_core.protocols)\n"
            f"{RTPROT_NOVANET}\t{RTPROT_NOVANET_NAME}\n"
            f"{RTPROT_NOVANET_ROUTING}\t{RTPROT_NOVANET_NAME}-routing\n")


def ensure_registered(directory: str = RT_PROTOS_DIR) -> bool:
    """Write ``novanet.conf`` if missing or different; True when the names are in place."""
    path = os.path.join(directory, FILE_NAME)
    want = content()
    try:
        with open(path) as f:
            if f.read() == want:
                return True
    except OSError:
        pass
    if not os.path.isdir(directory):
        log.info("route protocol names not registered: %s does not exist (ip route shows proto %d)",
                 directory, RTPROT_NOVANET)
        return False
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(want)
        os.replace(tmp, path)  # atomic: two agents on one machine (the lab) never see half a file
    except OSError as e:
        log.warning("route protocol names not registered in %s: %s", directory, e)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True
