"""The Services parts that need no root: the SCTP CRC powers the datapath multiplies by, the
frontend key parsing and the ``service list`` table."""

from __future__ import annotations

import random
import struct

from novanet_ebpf_policy.layouts import CRC32C_POLY, SCTP_CRC_SLOTS, sctp_crc_powers
from novanet_ebpf_policy.service_cli import backend_state, frontend_rows
from novanet_ebpf_policy.services import parse_key
from novanet_lab.sctp import crc32c


def _mulmod(a: int, b: int) -> int:
    """The datapath's nv_crc_mulmod, bit for bit."""
    p = 0
    for i in range(32):
        if a & (0x80000000 >> i):
            p ^= b
        b = (b >> 1) ^ CRC32C_POLY if b & 1 else b >> 1
    return p


def test_port_rewrite_crc_delta_equals_a_full_recompute() -> None:
    powers = sctp_crc_powers(1600)
    assert len(sctp_crc_powers()) == SCTP_CRC_SLOTS
    rng = random.Random(7)
    for _ in range(200):
        pkt = bytearray(rng.randbytes(rng.randrange(12, 1500)))
        pkt[8:12] = bytes(4)
        crc = crc32c(bytes(pkt))
        new_ports = rng.randbytes(4)
        delta = struct.unpack_from("<I", pkt, 0)[0] ^ struct.unpack("<I", new_ports)[0]
        pkt[0:4] = new_ports
        assert crc ^ _mulmod(powers[len(pkt) - 4], delta) == crc32c(bytes(pkt))


def test_frontend_key_parsing() -> None:
    assert parse_key("kube-system/kube-dns:dns-tcp/TCP") == ("kube-system", "kube-dns", "dns-tcp")
    assert parse_key("x/web:8080/UDP/nodeport") == ("x", "web", "")


def test_service_list_rows() -> None:
    svc = {"id": 3, "ip": "10.96.0.10", "port": 53, "protocol": "UDP", "kind": "ClusterIP",
           "key": "kube-system/kube-dns:dns/UDP", "affinity_timeout": 0, "external_local": False,
           "backends": [{"ip": "10.42.0.5", "port": 53, "protocol": "UDP", "selectable": True, "terminating": False},
                        {"ip": "10.42.0.6", "port": 53, "protocol": "UDP", "selectable": False,
                         "terminating": True}]}
    rows = frontend_rows([svc, {**svc, "id": 4, "backends": [], "affinity_timeout": 30}])
    assert rows == [
        ["3", "10.96.0.10:53/UDP", "ClusterIP", "kube-system/kube-dns:dns/UDP", "1 => 10.42.0.5:53/UDP (active)"],
        ["", "", "", "", "2 => 10.42.0.6:53/UDP (terminating)"],
        ["4", "10.96.0.10:53/UDP", "ClusterIP (ClientIP affinity 30s)", "kube-system/kube-dns:dns/UDP",
         "(no backend: refused)"],
    ]
    assert backend_state({"selectable": False, "terminating": False}) == "not-ready"
