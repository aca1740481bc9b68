"""The built-in agent's tools. File tools act on the host inside the worktree only;
`run_command` goes through the policy and runs in the sandbox."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_READ = 60_000
MAX_LIST = 500
MAX_OUT = 8_000

SCHEMAS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "list_files", "description": "List files under a directory of the repository (recursive).",
        "parameters": {"type": "object", "properties": {"path": {"type": "string", "default": "."}}}}},
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a text file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
    {"type": "function", "function": {
        "name": "write_file", "description": "Create or overwrite a file with the given content.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                       "required": ["path", "content"]}}},
    {"type": "function", "function": {
        "name": "edit_file",
        "description": "Replace exactly one occurrence of `search` with `replace` in a file.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string"}, "search": {"type": "string"}, "replace": {"type": "string"}},
            "required": ["path", "search", "replace"]}}},
    {"type": "function", "function": {
        "name": "grep", "description": "Search files for a regular expression; prints path:line: text.",
        "parameters": {"type": "object", "properties": {"pattern": {"type": "string"},
                                                        "path": {"type": "string", "default": "."}},
                       "required": ["pattern"]}}},
    {"type": "function", "function": {
        "name": "run_command",
        "description": "Run a shell command in the repository (sandboxed); prints exit code and output.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
]


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model."""


def inside(workdir: Path, rel: str) -> Path:
    """The path inside the worktree, or ToolError when it would leave it (.., absolute, symlink)."""
    root = workdir.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ToolError(f"refused: {rel} is outside the repository")
    if ".git" in target.relative_to(root).parts:
        raise ToolError("refused: the .git directory is not for editing")
    return target


def _walk(root: Path, start: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            out.append(Path(dirpath, name))
    return out


class Toolbox:
    """Runs one tool call. `run_command` is given by the backend (policy + sandbox)."""

    def __init__(self, workdir: Path, run_command: Callable[[str], str],
                 guard: Callable[[str, str], str | None] | None = None):
        self.workdir = workdir
        self._run_command = run_command
        # guard(action, relative path) -> a refusal, or None to go ahead (the policy's read/write rules)
        self._guard = guard

    def _checked(self, action: str, rel: str) -> Path:
        target = inside(self.workdir, rel)
        if self._guard is not None:
            refusal = self._guard(action, str(target.relative_to(self.workdir.resolve())))
            if refusal:
                raise ToolError(refusal)
        return target

    def call(self, name: str, args: dict[str, Any]) -> str:
        handler = getattr(self, f"tool_{name}", None)
        if handler is None:
            return f"error: unknown tool {name}"
        try:
            return str(handler(**args))
        except ToolError as exc:
            return f"error: {exc}"
        except TypeError as exc:
            return f"error: bad arguments for {name}: {exc}"
        except OSError as exc:
            return f"error: {exc.strerror or exc}"

    def tool_list_files(self, path: str = ".") -> str:
        root = self.workdir.resolve()
        files = [str(p.relative_to(root)) for p in _walk(root, inside(self.workdir, path))]
        more = f"\n... {len(files) - MAX_LIST} more" if len(files) > MAX_LIST else ""
        return "\n".join(files[:MAX_LIST]) + more if files else "(no files)"

    def tool_read_file(self, path: str) -> str:
        target = self._checked("read", path)
        if not target.is_file():
            raise ToolError(f"no such file: {path}")
        data = target.read_text(errors="replace")
        return data if len(data) <= MAX_READ else data[:MAX_READ] + "\n... (truncated)"

    def tool_write_file(self, path: str, content: str) -> str:
        target = self._checked("write", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {len(content)} characters to {path}"

    def tool_edit_file(self, path: str, search: str, replace: str) -> str:
        target = self._checked("write", path)
        if not target.is_file():
            raise ToolError(f"no such file: {path}")
        text = target.read_text()
        count = text.count(search) if search else 0
        if count != 1:
            raise ToolError(f"`search` must occur exactly once in {path} (found {count})")
        target.write_text(text.replace(search, replace, 1))
        return f"edited {path}"

    def tool_grep(self, pattern: str, path: str = ".") -> str:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"bad pattern: {exc}") from exc
        root = self.workdir.resolve()
        hits: list[str] = []
        for file in _walk(root, inside(self.workdir, path)):
            try:
                lines = file.read_text(errors="strict").splitlines()
            except (UnicodeDecodeError, OSError):
                continue
            for n, line in enumerate(lines, 1):
                if regex.search(line):
                    hits.append(f"{file.relative_to(root)}:{n}: {line[:300]}")
                    if len(hits) >= 200:
                        return "\n".join(hits) + "\n... (more)"
        return "\n".join(hits) or "(no matches)"

    def tool_run_command(self, command: str) -> str:
        return self._run_command(command)


def shell_argv(command: str) -> list[str]:
    return ["bash", "-c", command]


def exec_target(command: str) -> str:
    """The policy's target for an exec: the shell-joined argv."""
    return shlex.join(shell_argv(command))


def clip(text: str, limit: int = MAX_OUT) -> str:
    return text if len(text) <= limit else "... (cut)\n" + text[-limit:]
