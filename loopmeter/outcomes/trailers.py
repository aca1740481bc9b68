"""What a commit message or a PR author says about who wrote the code: the one place for
trailers (`Loopmeter-Run`, `Co-authored-by: <agent>`, "Generated with Claude Code"), bot
authors, and revert markers (`This reverts commit <sha>`, `Reverts owner/repo#N`).

Agent names are the ones usage rows carry (`claude-code`, `codex`, ...).
"""

from __future__ import annotations

import re

TRAILER = re.compile(r"^Loopmeter-Run:\s*(\S+)\s*$", re.MULTILINE)
ATTEMPT_TRAILER = re.compile(r"^Loopmeter-Attempt:\s*(\S+)\s*$", re.MULTILINE)
REVERTS_COMMIT = re.compile(r"This reverts commit ([0-9a-f]{7,64})", re.IGNORECASE)
REVERTS_PR = re.compile(r"^Reverts\s+[\w.-]+/[\w.-]+#(\d+)\s*$", re.MULTILINE)
PR_NUMBER = re.compile(r"^Merge pull request #(\d+) from \S+?/(\S+)|\(#(\d+)\)\s*$", re.MULTILINE)
MERGED_BRANCH = re.compile(r"^Merge (?:remote-tracking )?branch '([^']+)'")

_CO_AUTHOR = re.compile(r"^Co-authored-by:\s*(.+?)\s*<([^>]*)>\s*$", re.MULTILINE | re.IGNORECASE)
_MADE_WITH = re.compile(r"^Made-with:\s*(\S+)", re.MULTILINE | re.IGNORECASE)
_GENERATED = re.compile(r"Generated with \[?Claude Code\]?", re.IGNORECASE)

# a co-author's name or e-mail (lower case) containing the key names the agent
_AGENT_WORDS: tuple[tuple[str, str], ...] = (
    ("claude", "claude-code"), ("anthropic", "claude-code"), ("cursor", "cursor"), ("copilot", "copilot"),
    ("devin", "devin"), ("codex", "codex"), ("openai", "codex"), ("gemini", "gemini"), ("jules", "jules"),
    ("windsurf", "windsurf"), ("codeium", "windsurf"), ("aider", "aider"),
)

# bot logins (lower case) that are coding agents; other bots (dependabot, renovate) are not
BOT_AGENTS: dict[str, str] = {
    "claude[bot]": "claude-code", "claude": "claude-code", "copilot": "copilot",
    "copilot-swe-agent[bot]": "copilot", "devin-ai-integration[bot]": "devin",
    "google-labs-jules[bot]": "jules", "cursor[bot]": "cursor", "cursoragent": "cursor",
    "chatgpt-codex-connector[bot]": "codex", "codex[bot]": "codex",
}


def _agent_of(text: str) -> str | None:
    low = text.lower()
    return next((agent for word, agent in _AGENT_WORDS if word in low), None)


def agents_in_message(message: str) -> list[str]:
    """Agents a commit message names: co-author trailers, `Made-with:`, Claude Code's footer."""
    found: set[str] = set()
    for name, email in _CO_AUTHOR.findall(message):
        agent = _agent_of(name) or _agent_of(email)
        if agent:
            found.add(agent)
    for word in _MADE_WITH.findall(message):
        agent = _agent_of(word)
        if agent:
            found.add(agent)
    if _GENERATED.search(message):
        found.add("claude-code")
    return sorted(found)


def bot_agent(login: str | None) -> str | None:
    """The agent a PR or commit author is, when it is a known agent's account."""
    return BOT_AGENTS.get(login.lower()) if login else None


def run_ids(message: str) -> list[str]:
    return TRAILER.findall(message)


def reverted_sha(message: str) -> str | None:
    m = REVERTS_COMMIT.search(message)
    return m.group(1).lower() if m else None


def reverted_pr(body: str | None) -> int | None:
    m = REVERTS_PR.search(body or "")
    return int(m.group(1)) if m else None


def pr_of_commit(message: str) -> tuple[int | None, str | None]:
    """(PR number, head branch) a default-branch commit names: GitHub's merge-commit subject
    ("Merge pull request #N from owner/branch") or a squash subject ending in "(#N)"; a plain
    `git merge` subject gives the branch only."""
    first = message.split("\n", 1)[0]
    m = PR_NUMBER.search(first)
    if m:
        if m.group(1):
            return int(m.group(1)), m.group(2)
        return int(m.group(3)), None
    b = MERGED_BRANCH.search(first)
    return None, (b.group(1) if b else None)
