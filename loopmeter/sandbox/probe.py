"""Is a sandbox runner usable here? (bubblewrap found, user namespaces working.)"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

INSTALL_HINT = "install bubblewrap: sudo apt-get install bubblewrap (Debian/Ubuntu) or sudo dnf install bubblewrap"
USERNS_HINT = (
    "user namespaces are blocked: allow them (e.g. sysctl kernel.apparmor_restrict_unprivileged_userns=0 "
    "on Ubuntu 24.04, or kernel.unprivileged_userns_clone=1)"
)


@dataclass
class RunnerStatus:
    runner: str
    found: bool
    path: str | None
    version: str | None
    userns: bool
    usable: bool
    error: str | None
    hint: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_bwrap(bwrap: str | None = None) -> RunnerStatus:
    path = bwrap or shutil.which("bwrap")
    if not path:
        return RunnerStatus("bwrap", False, None, None, False, False, "bwrap not found on PATH", INSTALL_HINT)
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
        version = out.stdout.strip().split()[-1] if out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return RunnerStatus("bwrap", True, path, None, False, False, str(exc), INSTALL_HINT)
    try:
        test = subprocess.run(
            [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        userns = test.returncode == 0
        error = None if userns else (test.stderr.strip() or f"exit {test.returncode}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        userns, error = False, str(exc)
    return RunnerStatus("bwrap", True, path, version, userns, userns, error, None if userns else USERNS_HINT)
