"""Config loading: defaults, file, environment overrides, and errors that name the key."""

from __future__ import annotations

import json

import pytest

from novanet_core.backends import ConfigError
from novanet_core.config import load_config


def test_defaults_follow_the_guide():
    c = load_config(env={})
    assert c.bpf.root == "/sys/fs/bpf/novanet"
    assert c.ipam.dataDir == "/var/lib/cni/networks/novanet"
    assert c.sockets.cni == "/run/novanet/cni.sock" and c.sockets.dataplane == "/run/novanet/dataplane.sock"
    assert c.policy.defaultDeny is False and c.egress.masqueradeEnabled is True
    assert c.routingMode == "overlay" and c.mtu == "auto"


def test_yaml_and_json_files_and_env_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("clusterCIDR: 10.50.0.0/16\npolicy: {defaultDeny: true}\n")
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"clusterCIDR": "10.60.0.0/16", "mtu": 1400}))
    assert load_config(y, env={}).policy.defaultDeny is True
    assert load_config(j, env={}).mtu == 1400
    c = load_config(y, env={"NOVANET_NODE_IP": "192.0.2.7", "NOVANET_POLICY_DEFAULT_DENY": "false", "NOVANET_MTU": "1450"})
    assert c.nodeIP == "192.0.2.7" and c.policy.defaultDeny is False and c.mtu == 1450


@pytest.mark.parametrize(
    ("data", "env", "fragment"),
    [
        ({"clusterCIDR": "10.0.0.1/8"}, {}, "clusterCIDR: '10.0.0.1/8' is not a CIDR"),
        ({"policy": {"defaultDeny": "perhaps"}}, {}, "policy.defaultDeny: Input should be a valid boolean"),
        ({"routingMode": "mesh"}, {}, "routingMode: Input should be 'overlay' or 'native'"),
        ({"ipam": {"tpye": "x"}}, {}, "ipam.tpye: unknown key"),
        ({"mtu": 100}, {}, "mtu: must be 'auto' or 576..9000"),
        ({"podCIDR": "10.99.0.0/24"}, {}, "podCIDR 10.99.0.0/24 is not inside clusterCIDR"),
        ({"metrics": {"address": "nope"}}, {}, "metrics.address: 'nope' is not host:port"),
        ({"metrics": {"address": "172.30.0.2,fd00:172:30::2:9103"}}, {},
         "metrics.address: '172.30.0.2,fd00:172:30::2:9103' is not host:port (one address; an IPv6 host is "
         "written [addr]:port)"),
        ({"metrics": {"dataplaneAddress": "[fd00::zz]:9104"}}, {},
         "metrics.dataplaneAddress: '[fd00::zz]:9104': [fd00::zz] is not an IPv6 address"),
        ({}, {"NOVANET_NODE_IP": "not-an-ip"}, "nodeIP: 'not-an-ip' is not an IP address (from $NOVANET_NODE_IP)"),
        ({"nodeCIDRMaskSize": 8}, {}, "nodeCIDRMaskSize: Input should be greater than or equal to 16"),
        # dual-stack: one range per family, every family of the cluster on the node
        ({"clusterCIDR": "10.42.0.0/16,10.43.0.0/16"}, {},
         "clusterCIDR: 10.42.0.0/16 and 10.43.0.0/16 are both IPv4: a dual-stack value has one IPv4 and one IPv6"),
        ({"clusterCIDR": ["10.42.0.0/16", "fd00:42::/48", "fd00:43::/48"]}, {},
         "clusterCIDR: 3 CIDRs given: at most one IPv4 and one IPv6"),
        ({"clusterCIDR": "10.42.0.0/16,fd00:42::1/48"}, {}, "clusterCIDR: 'fd00:42::1/48' is not a CIDR"),
        ({"clusterCIDR": "10.42.0.0/16,fd00:42::/48", "podCIDR": "fd00:42:0:7::/64"}, {},
         "podCIDR (fd00:42:0:7::/64) has no IPv4 range but clusterCIDR has 10.42.0.0/16"),
        ({"clusterCIDR": "10.42.0.0/16", "podCIDR": "10.42.7.0/24,fd00:42:0:7::/64"}, {},
         "podCIDR fd00:42:0:7::/64 is IPv6 but clusterCIDR (10.42.0.0/16) has no IPv6 range"),
        ({"clusterCIDR": "10.42.0.0/16,fd00:42::/48", "podCIDR": "10.42.7.0/24,fd00:99::/64"}, {},
         "podCIDR fd00:99::/64 is not inside clusterCIDR fd00:42::/48"),
        ({"clusterCIDR": "fd00:42::/48", "serviceCIDR": "fd00:42:0:ff::/112"}, {},
         "serviceCIDR fd00:42:0:ff::/112 overlaps clusterCIDR fd00:42::/48"),
        ({"serviceCIDR": "10.96.0.0/12,10.97.0.0/16"}, {}, "serviceCIDR"),
        ({}, {"NOVANET_NODE_IP": "192.0.2.7,192.0.2.8"}, "nodeIP: 192.0.2.7 and 192.0.2.8 are both IPv4"),
        ({"nodeCIDRMaskSizeIPv6": 40}, {}, "nodeCIDRMaskSizeIPv6: Input should be greater than or equal to 48"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, data, env, fragment):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        load_config(p, env=env)
    assert fragment in str(e.value)


@pytest.mark.parametrize("cluster", ["10.42.0.0/16, fd00:42::/48", ["10.42.0.0/16", "fd00:42::/48"]],
                         ids=["comma", "list"])
def test_dual_stack_ranges_in_either_form(tmp_path, cluster):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"clusterCIDR": cluster, "podCIDR": ["10.42.7.0/24", "fd00:42:0:7::/64"],
                             "serviceCIDR": ["10.96.0.0/12", "fd00:96::/108"]}))
    c = load_config(p, env={"NOVANET_NODE_IP": "192.0.2.7,fd00:1::7"})
    assert c.clusterCIDR == "10.42.0.0/16,fd00:42::/48"
    assert c.serviceCIDR == "10.96.0.0/12,fd00:96::/108" and c.service_cidrs == ["10.96.0.0/12", "fd00:96::/108"]
    assert c.cluster_cidrs == ["10.42.0.0/16", "fd00:42::/48"] and c.ip_families == [4, 6]
    assert c.pod_cidrs == ["10.42.7.0/24", "fd00:42:0:7::/64"] and c.node_ips == ["192.0.2.7", "fd00:1::7"]
    assert c.cluster_cidr(6) == "fd00:42::/48" and c.node_cidr_mask(6) == 64
    # IPv6 first: IPv6 is the primary family (a pod's podIP)
    v6 = load_config(p, env={"NOVANET_CLUSTER_CIDR": "fd00:42::/48,10.42.0.0/16",
                             "NOVANET_POD_CIDR": "fd00:42:0:7::/64,10.42.7.0/24"})
    assert v6.ip_families == [6, 4]


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML/JSON"):
        load_config(bad, env={})
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a map"):
        load_config(lst, env={})
