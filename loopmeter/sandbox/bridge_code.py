"""The bridge's source text, read once, passed to `python3 -c` inside the sandbox."""

from pathlib import Path

BRIDGE_CODE = (Path(__file__).with_name("bridge.py")).read_text()
