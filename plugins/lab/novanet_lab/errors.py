"""The one exception type lab commands raise for anything a user can fix or should read.

The CLI prints ``str(LabError)`` and exits non-zero; nothing below the CLI prints tracebacks for
expected failures (bad spec, missing binary, agent not ready, CNI error).
"""

from __future__ import annotations


class LabError(Exception):
    """A failure reported to the user as one clear message (never a traceback)."""
