"""Tries again, every few seconds, a policy apply that the policy maps had no room for
(policymap.py: its endpoints fail closed meanwhile), and the Service frontends the service maps
had no room for (services.py: refused meanwhile), so that they recover once load falls."""

from __future__ import annotations

from typing import Any

from novanet_ebpf_policy.periodic import Periodic


class PolicyRetry(Periodic):
    name = "policy-retry"

    def __init__(self, backend: Any, interval: float = 2.0):
        super().__init__()
        self.be, self.interval = backend, interval

    def run_once(self) -> object:
        return self.be.retry_policy(), self.be.retry_services()
