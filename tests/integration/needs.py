"""What integration tests need from the machine, and the one rule for when it is missing:
skip with a printed reason on a developer's machine, fail in CI (which installs it all)."""

from __future__ import annotations

import os
import shutil

import pytest

from semtrust.orchestrator.bundle import find_busybox
from semtrust.sensors.fanotify import supported


def need(cond: bool, reason: str) -> None:
    if cond:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def need_container_host() -> None:
    """Root, runc, busybox-static and fanotify permission events."""
    need(os.geteuid() == 0, "container mode needs root")
    need(shutil.which("runc") is not None or os.access("/usr/sbin/runc", os.X_OK),
         "runc not installed (Debian package runc)")
    need(find_busybox() is not None, "busybox not installed (Debian package busybox-static)")
    why = supported()
    need(why is None, why or "")
