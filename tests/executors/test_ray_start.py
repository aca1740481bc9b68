"""Joining a cluster started the way docs/deployment.md starts one: `ray start --head` on loopback,
then `loopmeter eval run --executor ray --ray-address HOST:PORT` from another process.

Once a machine has a Ray token (`ray get-auth-token --generate` writes ~/.ray/auth_token, as Ray's
token guide says), Ray 2.60's `ray start` turns token authentication on by itself; a driver sends
the token only with RAY_AUTH_MODE=token in its environment, which the deployment recipe sets on
every machine. Marked `ray`; skipped without the extra.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import loopmeter_cmd

pytest.importorskip("ray")

pytestmark = pytest.mark.ray


def _kill_marked(mark: str) -> None:
    """The head's processes alone (`ray stop` would stop every Ray process on the machine)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


def _gcs_environ(mark: str) -> str:
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if proc.name.isdigit() and b"gcs_server" in cmdline and mark.encode() in cmdline:
                return (proc / "environ").read_bytes().decode(errors="replace").replace("\0", "\n")
        except OSError:
            pass
    raise AssertionError("no gcs_server for the head")


@pytest.fixture
def head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    temp = tempfile.mkdtemp(prefix="lmray-", dir="/tmp")  # short: Ray's socket paths live under it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path / "home"), RAY_USAGE_STATS_ENABLED="0", LOOPMETER_HOME=str(tmp_path / "lm"))
    env.pop("LOOPMETER_DB_URL", None)
    (tmp_path / "home").mkdir()
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", "2", "--resources", json.dumps({"loopmeter_sandbox": 2}),
                        "--include-dashboard", "false", "--object-store-memory", str(80 << 20), "--temp-dir", temp],
                       env=env, check=True, capture_output=True, timeout=120)
        assert "RAY_AUTH_MODE=token" in _gcs_environ(temp)  # the head turned token authentication on
        yield f"127.0.0.1:{port}", env
    finally:
        _kill_marked(temp)


def test_an_eval_joins_a_cluster_started_with_ray_start(head: tuple[str, dict[str, str]]) -> None:
    address, env = head
    out = subprocess.run(loopmeter_cmd("eval", "run", "gold", "--agent", "oracle", "--executor", "ray",
                                       "--ray-address", address, "--json"),
                         env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (config,) = json.loads(out.stdout)["configs"]
    assert (config["n_tasks"], config["pass_rate"]) == (13, 1.0)
