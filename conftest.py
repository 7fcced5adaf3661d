"""Collection rules for every test of the repository (tests/, plugins/*/tests, contrib/*/tests):
kept at the root so that they hold however a test file is named on the command line."""

import os
import shutil

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # a fresh venv with only the wheels runs some tests without the test extras
    pass
else:
    # A loaded machine makes examples slow to generate or run; that is not a failing example.
    settings.register_profile("novanet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("novanet")


def pytest_addoption(parser):
    parser.addoption("--run-long", action="store_true", default=False,
                     help="also run the tests marked long (make test-long)")


def pytest_collection_modifyitems(config, items):
    # Files with slow or lab tests first: make test hands whole files to its workers in this
    # order, so the many short files fill the end instead of a lone lab test making a tail. A file
    # keeps its place among its kind and its tests their order.
    slow_files = {item.path for item in items if "slow" in item.keywords or "lab" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)
    # The long forms (full matrices) stay out of make test; make test-long asks for them.
    if not config.getoption("--run-long"):
        skip_long = pytest.mark.skip(reason="long form: run with make test-long (pytest --run-long)")
        for item in items:
            if "long" in item.keywords:
                item.add_marker(skip_long)
    # Tests marked root need root and iproute2; say why they are skipped rather than failing
    # obscurely (CI runs as root, so there they always run).
    if os.geteuid() == 0 and shutil.which("ip"):
        return
    skip = pytest.mark.skip(reason="needs root and iproute2")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
