#!/usr/bin/env bash
# System packages loopmeter and its tests use: bubblewrap (the sandbox),
# PostgreSQL (store tests), git, tmux, and the real agent CLIs from npm
# (Claude Code, Codex) that tests drive offline against loopback model servers.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v git >/dev/null || need+=(git)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v node >/dev/null || need+=(nodejs npm)
command -v ip >/dev/null || need+=(iproute2)
command -v tmux >/dev/null || need+=(tmux)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Real agent CLIs, pinned to versions seen to run offline here.
if [ "${LOOPMETER_SKIP_NPM:-0}" != "1" ] && command -v npm >/dev/null; then
  want_claude="2.1.197"
  want_codex="0.169.0"
  if ! claude --version 2>/dev/null | grep -q "$want_claude"; then
    $SUDO npm install -g --silent --no-fund --no-audit "@anthropic-ai/claude-code@$want_claude" >/dev/null 2>&1 || echo "warning: claude-code did not install"
  fi
  if ! codex --version 2>/dev/null | grep -q "$want_codex"; then
    $SUDO npm install -g --silent --no-fund --no-audit "@openai/codex@$want_codex" >/dev/null 2>&1 || echo "warning: codex did not install"
  fi
  want_gemini="0.61.0"  # the gemini backend test drives it against a loopback Gemini API server
  if ! gemini --version 2>/dev/null | grep -q "$want_gemini"; then
    $SUDO npm install -g --silent --no-fund --no-audit "@google/gemini-cli@$want_gemini" >/dev/null 2>&1 || echo "warning: gemini-cli did not install"
  fi
  # ccusage (compared against `loopmeter usage` in tests and benchmarks/usage.py) is a
  # launcher plus a native binary package of the same version; 20.0.26 has no linux
  # binary on the registry, 20.0.24 does.
  want_ccusage="20.0.24"
  if ! ccusage --version 2>/dev/null | grep -q "$want_ccusage"; then
    $SUDO npm install -g --silent --no-fund --no-audit "ccusage@$want_ccusage" \
      "@ccusage/ccusage-linux-$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/')@$want_ccusage" >/dev/null 2>&1 \
      || echo "warning: ccusage did not install"
  fi
fi
