"""The bridge's source text, read once; the runner writes it beside proxy.sock for the sandbox."""

from pathlib import Path

BRIDGE_CODE = (Path(__file__).with_name("bridge.py")).read_text()
