"""Geneve wire format as NovaNet sends it (RFC 8926), and the MTU it costs.

Outer IPv4 (20) + UDP (8) + Geneve base header (8) + one option: 4-byte option header + 4 bytes
of data, the sender's source security identity (8) + inner Ethernet (14) = 58 bytes, so the pod
MTU is the underlay MTU - 58 (1442 on a 1500 underlay; VXLAN's is 1450). Over an IPv6 underlay
the outer header is 40 bytes: 78, pod MTU 1422 (VXLAN's 1430).
"""

from __future__ import annotations

PORT = 6081  # IANA Geneve
VNI = 1  # one virtual network, as the original NovaNet
ETH_P_TEB = 0x6558  # Transparent Ethernet Bridging: the payload is an Ethernet frame
# The identity option. Class 0xFFF0 lies in the range IANA reserves for experimental use
# (0xFFF0-0xFFFF), which Wireshark decodes as "Experimental"; type 0x01 has the critical bit (0x80)
# clear, so a receiver that does not know it may ignore it.
OPT_CLASS = 0xFFF0
OPT_TYPE = 0x01
OPT_DATA_LEN = 4  # one 32-bit identity, network byte order

OUTER_IPV4, OUTER_IPV6, UDP, GENEVE_BASE, INNER_ETH = 20, 40, 8, 8, 14
OPTION = 4 + OPT_DATA_LEN
OVERHEAD = OUTER_IPV4 + UDP + GENEVE_BASE + OPTION + INNER_ETH  # 58
OVERHEAD6 = OUTER_IPV6 + UDP + GENEVE_BASE + OPTION + INNER_ETH  # 78
# outer UDP source port: a hash of the inner flow scaled into this range (ECMP/RSS entropy)
SPORT_MIN, SPORT_MAX = 32768, 61000
