"""UDP sequence traffic, run as a script inside a pod (system python3, no project imports).

    python3 udp_seq.py echo PORT             answers every datagram with itself
    python3 udp_seq.py send IP PORT INTERVAL  one numbered datagram every INTERVAL seconds

``send`` prints what ``ping -O`` prints, so tests.support.ping.PingWatch reads it unchanged:
``<n> bytes from <ip>: icmp_seq=<seq> `` for an answer (however late) and ``no answer yet for
icmp_seq=<seq>`` when the next request leaves before this one was answered. Through a Service
that is the same claim ping makes for a pod IP: which sequence numbers were answered.
"""

import select
import socket
import sys
import time


def echo(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        d, a = s.recvfrom(64)
        s.sendto(d, a)


def send(ip: str, port: int, interval: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ip, port))
    seq, answered, nxt = 0, set(), time.monotonic()
    while True:
        now = time.monotonic()
        if now >= nxt:
            if seq and seq not in answered:
                print(f"no answer yet for icmp_seq={seq}", flush=True)
            seq += 1
            try:
                s.send(str(seq).encode())
            except OSError:
                pass  # a queued ICMP error: the request counts as unanswered
            nxt += interval
        if select.select([s], [], [], max(0.0, nxt - time.monotonic()))[0]:
            try:
                d = s.recv(64)
            except OSError:
                continue
            n = int(d)
            answered.add(n)
            print(f"{len(d)} bytes from {ip}: icmp_seq={n} ", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
