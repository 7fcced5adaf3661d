"""ipFamilies / ipFamilyPolicy as the API server fills them in from the cluster's serviceCIDR families."""

from __future__ import annotations

import pytest

from novanet_core.state.model import ObjectError, parse_object
from novanet_core.state.services import resolve_ip_families

DUAL, V4, V6, DUAL6 = (4, 6), (4,), (6,), (6, 4)


def svc(**spec):
    return parse_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "x"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec},
        }
    )


@pytest.mark.parametrize(
    ("spec", "cluster", "want"),
    [
        ({}, V4, (("IPv4",), "SingleStack")),
        ({}, DUAL6, (("IPv6",), "SingleStack")),  # the primary family of serviceCIDR
        ({"ipFamilyPolicy": "PreferDualStack"}, DUAL, (("IPv4", "IPv6"), "PreferDualStack")),
        ({"ipFamilyPolicy": "PreferDualStack"}, V4, (("IPv4",), "PreferDualStack")),
        ({"ipFamilyPolicy": "RequireDualStack"}, DUAL6, (("IPv6", "IPv4"), "RequireDualStack")),
        (
            {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4"]},
            DUAL6,
            (("IPv4", "IPv6"), "RequireDualStack"),
        ),
        ({"ipFamilies": ["IPv6"]}, DUAL, (("IPv6",), "SingleStack")),
        ({"clusterIP": "fd00:96::10"}, DUAL, (("IPv6",), "SingleStack")),  # the family of the given address
        (
            {"clusterIPs": ["fd00:96::10", "10.96.0.10"], "ipFamilyPolicy": "PreferDualStack"},
            DUAL,
            (("IPv6", "IPv4"), "PreferDualStack"),
        ),
        # PreferDualStack drops a secondary family the cluster has no range for
        (
            {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"},
            V4,
            (("IPv4",), "PreferDualStack"),
        ),
        ({"clusterIP": "None"}, DUAL, (("IPv4",), "SingleStack")),
        ({"clusterIP": "None", "selector": None}, DUAL, (("IPv4", "IPv6"), "RequireDualStack")),
        ({"type": "ExternalName", "externalName": "db.example.com"}, DUAL, ((), "")),
    ],
)
def test_families_are_filled_in_as_the_api_server_does(spec, cluster, want):
    assert resolve_ip_families(svc(**spec), cluster) == want


@pytest.mark.parametrize(
    ("spec", "cluster", "path", "why"),
    [
        ({"ipFamilyPolicy": "RequireDualStack"}, V4, "spec.ipFamilyPolicy", "only IPv4"),
        ({"ipFamilies": ["IPv6"]}, V4, r"spec.ipFamilies\[0\]", "no IPv6 range"),
        (
            {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"},
            V6,
            "spec.ipFamilyPolicy",
            "only IPv6",
        ),
        (
            {"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack"},
            V4,
            r"spec.ipFamilies\[0\]",
            "no IPv6 range",
        ),
        ({"clusterIP": "fd00:96::10"}, V4, r"spec.clusterIPs\[0\]", "no IPv6 range"),
        (
            {"clusterIPs": ["10.96.0.10", "fd00:96::10"], "ipFamilyPolicy": "PreferDualStack"},
            V4,
            r"spec.clusterIPs\[1\]",
            "no IPv6 range",
        ),  # an address is never dropped
        (
            {"ipFamilies": ["IPv4", "IPv6"]},
            DUAL,
            "spec.ipFamilyPolicy",
            "PreferDualStack or RequireDualStack",
        ),
        (
            {"clusterIPs": ["10.96.0.10", "fd00:96::10"]},
            DUAL,
            "spec.ipFamilyPolicy",
            "two ipFamilies or clusterIPs",
        ),
        (
            {"clusterIPs": ["10.96.0.10", "fd00:96::10"], "ipFamilyPolicy": "SingleStack"},
            DUAL,
            "spec.clusterIPs",
            "two addresses",
        ),
        (
            {"clusterIP": "10.96.0.10", "ipFamilies": ["IPv6"]},
            DUAL,
            r"spec.ipFamilies\[0\]",
            "does not match spec.clusterIPs",
        ),
    ],
)
def test_bad_families_name_the_field(spec, cluster, path, why):
    with pytest.raises(ObjectError, match=rf"{path}: .*{why}"):
        resolve_ip_families(svc(**spec), cluster)
