"""Sample agent logs for the demo, written in the agents' own on-disk formats.

The demo ingests them through the same reader as real logs, so the usage
screens have something to show on a machine that has never run an agent.
Every sample session's project is named `sample/...`, so it is never mistaken
for real work.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

CLAUDE_MODELS = ["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]
CODEX_MODEL = "gpt-5-codex"
PROJECTS = ["sample/api", "sample/web", "sample/ml-pipeline"]
# Branches the sample sessions worked on, chosen by day and session (not by the random
# stream, so the sample's calls and tokens stay what they were before sessions had branches).
BRANCHES = ["main", "sample/fix-login", "sample/faster-build", "sample/new-report"]


def _branch(day: int, session: int) -> str:
    return BRANCHES[(day + session) % len(BRANCHES)]


def _repository_url(project: str) -> str:
    return f"https://example.com/{project}.git"  # example.com: never a real repository


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def write_sample_logs(root: Path, *, now: datetime | None = None, days: int = 14, seed: int = 7,
                      workdir: str = "/home/dev") -> Path:
    """Write Claude Code and Codex session logs under `root`; returns `root`. The sessions worked
    in `workdir`/sample/... (the demo passes the folder of its sample repositories)."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    claude_dir = root / "claude" / "projects"
    codex_dir = root / "codex" / "sessions"
    for day in range(days, 0, -1):
        start = now - timedelta(days=day, hours=rng.randint(0, 6))
        for s in range(rng.randint(1, 3)):
            project = rng.choice(PROJECTS)
            session = f"{day:02d}{s}{rng.randrange(16**8):08x}-demo-{rng.randrange(16**4):04x}"
            path = claude_dir / ("-home-dev-" + project.replace("/", "-")) / f"{session}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            ts = start + timedelta(minutes=30 * s)
            lines = []
            context = rng.randint(8_000, 20_000)
            for call in range(rng.randint(4, 14)):
                ts += timedelta(seconds=rng.randint(5, 90))
                model = CLAUDE_MODELS[0] if rng.random() < 0.8 else CLAUDE_MODELS[1]
                write = rng.randint(200, 3_000)
                usage = {"input_tokens": rng.randint(2, 40), "cache_creation_input_tokens": write,
                         "cache_read_input_tokens": context, "output_tokens": rng.randint(80, 1_500),
                         "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0}}
                context += write
                msg_id = f"msg_demo{day:02d}{s}{call:03d}"
                lines.append({"type": "assistant", "sessionId": session, "cwd": f"{workdir}/{project}",
                              "gitBranch": _branch(day, s), "isSidechain": False, "timestamp": _iso(ts), "requestId": f"req_demo{msg_id[8:]}",
                              "uuid": f"u-{msg_id}", "message": {"id": msg_id, "role": "assistant", "model": model,
                                                               "content": [{"type": "text", "text": "..."}],
                                                               "usage": usage}})
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        if day % 2 == 0:
            ts = start + timedelta(hours=2)
            session = f"demo-codex-{day:02d}"
            path = codex_dir / f"{ts:%Y/%m/%d}" / f"rollout-{ts:%Y-%m-%dT%H-%M-%S}-{session}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            project = rng.choice(PROJECTS)
            events = [{"timestamp": _iso(ts), "type": "session_meta",
                       "payload": {"id": session, "cwd": f"{workdir}/{project}", "cli_version": "0.169.0",
                                   "git": {"branch": _branch(day, 9), "commit_hash": f"{day:02d}" * 20,
                                           "repository_url": _repository_url(project)}}},
                      {"timestamp": _iso(ts), "type": "turn_context",
                       "payload": {"cwd": f"{workdir}/{project}", "model": CODEX_MODEL}}]
            total = {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0, "reasoning_output_tokens": 0}
            for _ in range(rng.randint(3, 8)):
                ts += timedelta(seconds=rng.randint(10, 120))
                inp = rng.randint(3_000, 12_000)
                total["input_tokens"] += inp
                total["cached_input_tokens"] += int(inp * rng.uniform(0.3, 0.8))
                reasoning = rng.randint(50, 600)
                total["output_tokens"] += reasoning + rng.randint(50, 800)
                total["reasoning_output_tokens"] += reasoning
                info = {"total_token_usage": {**total, "total_tokens": total["input_tokens"] + total["output_tokens"]}}
                events.append({"timestamp": _iso(ts), "type": "event_msg",
                               "payload": {"type": "token_count", "info": info}})
            path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return root


# How each sample branch lands on a sample repository's default branch, as its pull request:
# (branch, PR number, how, trailer). Sessions on `main` and on the squashed branch stay
# unattributed (a squash commit names its PR, not its branch).
SAMPLE_PRS = [
    ("sample/fix-login", 1, "merge", "Co-authored-by: Claude <noreply@anthropic.com>"),
    ("sample/faster-build", 2, "merge-reverted", "Co-authored-by: Codex <noreply@openai.com>"),
    ("sample/new-report", 3, "squash", "Co-authored-by: Claude <noreply@anthropic.com>"),
]


def write_sample_repos(root: Path) -> list[Path]:
    """A local git repository per sample project under `root` (origin: its example.com URL, never
    contacted), where the sample branches landed on `main` as SAMPLE_PRS say: merged, merged then
    reverted, squashed. For `loopmeter outcomes sync --repo`. Returns the repositories."""
    import subprocess

    from loopmeter.hostgit import clean_env

    env = {**clean_env(), "GIT_AUTHOR_NAME": "Sample Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "Sample Dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    repos = []
    for project in PROJECTS:
        repo = root / project
        repo.mkdir(parents=True, exist_ok=True)

        def git(*args: str, _repo: Path = repo) -> str:
            return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=_repo, env=env, check=True,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout.strip()

        if (repo / ".git").exists():  # an earlier demo made it
            repos.append(repo)
            continue
        git("init", "-q", "-b", "main")
        git("remote", "add", "origin", _repository_url(project))
        (repo / "README.md").write_text(f"# {project}\n\nA sample repository of the loopmeter demo.\n")
        git("add", "README.md")
        git("commit", "-q", "-m", "Initial commit")
        for branch, number, how, trailer in SAMPLE_PRS:
            git("checkout", "-q", "-b", branch)
            name = branch.rsplit("/", 1)[-1]
            (repo / f"{name}.txt").write_text(f"{name}\n")
            git("add", f"{name}.txt")
            git("commit", "-q", "-m", f"{name.replace('-', ' ').capitalize()}\n\n{trailer}\n")
            git("checkout", "-q", "main")
            if how == "squash":
                git("merge", "-q", "--squash", branch)
                git("commit", "-q", "-m", f"{name.replace('-', ' ').capitalize()} (#{number})\n\n{trailer}\n")
            else:
                git("merge", "-q", "--no-ff", "-m", f"Merge pull request #{number} from dev/{branch}", branch)
            if how == "merge-reverted":
                git("revert", "--no-edit", "-m", "1", "HEAD")
        repos.append(repo)
    return repos
