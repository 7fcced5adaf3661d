"""Valid documents the fuzz targets start from: every kind a state source carries, NetworkPolicies
that use every field, agent configs, lab specs and CNI invocations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"zone": "a"}},
        "spec": {"podCIDR": "10.42.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.11"}, {"type": "Hostname",
                                                                                     "address": "node-1"}]}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"team": "red"}}}
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web", "tier": "fe"}},
       "spec": {"nodeName": "node-1", "containers": [
           {"name": "c", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"},
                                   {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
           {"name": "d", "ports": [{"containerPort": 9000}]}]},
       "status": {"podIP": "10.42.1.5", "hostIP": "172.30.0.11", "conditions": [{"type": "Ready", "status": "True"}]}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "web", "namespace": "x"},
          "spec": {"podSelector": {"matchLabels": {"app": "web"},
                                   "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]},
                   "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}},
                                          "namespaceSelector": {"matchExpressions": [{"key": "team",
                                                                                      "operator": "Exists"}]}},
                                         {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}],
                                "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}, {"port": "http"}]},
                               {}],
                   "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]},
                              {"to": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn",
                                                                             "values": ["x"]}]}}]}]}}
DENY_ALL = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "x"},
           "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.0.20",
                    "clusterIPs": ["10.96.0.20"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080},
                              {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}],
                    "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                    "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
                    "publishNotReadyAddresses": False}}
ENDPOINTSLICE = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": "web-abc", "namespace": "x", "labels": {"kubernetes.io/service-name": "web"}},
                 "addressType": "IPv4",
                 "endpoints": [{"addresses": ["10.42.1.5"], "conditions": {"ready": True, "serving": True,
                                                                           "terminating": False},
                                "targetRef": {"kind": "Pod", "namespace": "x", "name": "a"}, "nodeName": "node-1",
                                "zone": "a"}],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "appProtocol": "http"}]}

MANIFESTS: list[dict[str, Any]] = [NODE, NAMESPACE, POD, POLICY, DENY_ALL, SERVICE, ENDPOINTSLICE]

AGENT_CONFIG: dict[str, Any] = {
    "nodeName": "node-1", "nodeIP": "172.30.0.11", "clusterCIDR": "10.42.0.0/16", "podCIDR": "10.42.1.0/24",
    "nodeCIDRMaskSize": 24, "routingMode": "overlay", "tunnelProtocol": "vxlan", "datapath": "ebpf", "mtu": 1450,
    "underlayInterface": "eth0",
    "ipam": {"type": "host-local", "dataDir": "/var/lib/cni/networks/novanet"},
    "policy": {"defaultDeny": False}, "egress": {"masqueradeEnabled": True},
    "bpf": {"root": "/sys/fs/bpf/novanet", "headerTree": "/var/lib/novanet/ktree", "attachMode": "auto"},
    "sockets": {"agent": "/run/novanet/novanet.sock", "cni": "/run/novanet/cni.sock",
                "dataplane": "/run/novanet/dataplane.sock"},
    "metrics": {"address": "127.0.0.1:9103"},
    "stateSource": {"type": "manifests", "path": "/etc/novanet/manifests", "kubeconfig": None},
    "routing": {"type": "frr-bgp", "settings": {"asn": 64512}},
    "plugins": {"load": [], "disabled": []}, "pluginSettings": {"vxlan": {"port": 4789}},
    "stateDir": "/run/novanet/state", "logLevel": "info",
}
AGENT_ENV = {"NOVANET_NODE_NAME": "node-1", "NOVANET_MTU": "1400", "NOVANET_POLICY_DEFAULT_DENY": "true",
             "NOVANET_ROUTING_MODE": "native", "NOVANET_POD_CIDR": "10.42.9.0/24"}


def lab_specs() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("lab-*.yaml"))]


CNI_CONF = {"cniVersion": "1.1.0", "name": "novanet", "type": "novanet-cni", "agentSocket": "/run/novanet/cni.sock",
            "mtu": 1450,
            "prevResult": {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                           "ips": [{"address": "10.42.1.5/32", "gateway": "10.42.1.1", "interface": 0}]},
            "cni.dev/valid-attachments": [{"containerID": "abc123", "ifname": "eth0"}]}
CNI_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123def456", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;IgnoreUnknown=1",
           "CNI_PATH": "/opt/cni/bin"}
