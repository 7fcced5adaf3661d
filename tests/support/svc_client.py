"""Service test client, run as a script inside a pod (system python3, no project imports):

    python3 svc_client.py IP PORT N tcp|udp|udp-connected

N connections (TCP) or exchanges (UDP) to IP:PORT; prints one JSON object: ``answers`` (what
the server sent, stripped), ``peers`` (the address the socket reported: getpeername for TCP,
recvfrom's for UDP) and ``errors`` (``<exception>:<errno>`` per failed attempt). A connected UDP
socket is the only kind an ICMP error reaches.
"""

import json
import socket
import sys


def main() -> None:
    ip, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    out = {"answers": [], "peers": [], "errors": []}
    for _ in range(n):
        try:
            if proto == "tcp":
                c = socket.create_connection((ip, port), timeout=3)
                out["peers"].append("{}:{}".format(*c.getpeername()[:2]))
                out["answers"].append(c.recv(200).decode().strip())
                c.close()
            else:
                u = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
                u.settimeout(3)
                if proto == "udp-connected":
                    u.connect((ip, port))
                    u.send(b"q\n")
                else:
                    u.sendto(b"q\n", (ip, port))
                d, a = u.recvfrom(200)
                out["answers"].append(d.decode().strip())
                out["peers"].append(f"{a[0]}:{a[1]}")
                u.close()
        except OSError as e:
            out["errors"].append(type(e).__name__ + ":" + str(e.errno))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
