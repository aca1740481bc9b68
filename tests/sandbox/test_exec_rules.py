"""Exec rules match what will run, proven in real bubblewrap sandboxes.

Each variant is run twice on a fresh worktree: under a policy whose only rule denies `touch`
(or `git init`), where it must exit 126 and leave no marker, and under the same policy without
the rule, where it must create the marker. The control proves the variant really runs the
denied program; the first run proves the rule stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopmeter.policies import parse_policy

CHECK = {"role": "check", "actor": "check"}
BASE = "name: {name}\nnetwork:\n  allow: []\nlimits:\n  wall_s: 30\n"
DENY_TOUCH = "rules:\n  - id: no-touch\n    action: exec\n    match: 'touch*'\n    decision: deny\n"
DENY_GIT_INIT = "rules:\n  - id: no-git-init\n    action: exec\n    match: 'git init*'\n    decision: deny\n"

TOUCH_VARIANTS = {
    "plain": ["touch", "m"],
    "absolute path": ["/usr/bin/touch", "m"],
    "env": ["env", "touch", "m"],
    "env options and assignments": ["env", "-i", "-u", "HOME", "A=1", "PATH=/usr/bin", "touch", "m"],
    "env -S": ["env", "-S", "touch m"],
    "nice -n": ["nice", "-n", "5", "touch", "m"],
    "nice -N": ["nice", "-5", "touch", "m"],
    "timeout with options": ["timeout", "-k", "1", "-s", "KILL", "5", "touch", "m"],
    "timeout unknown option": ["timeout", "--foreground", "--verbose", "5s", "touch", "m"],
    "nohup": ["nohup", "touch", "m"],
    "stdbuf": ["stdbuf", "-oL", "touch", "m"],
    "setsid": ["setsid", "-w", "touch", "m"],
    "nested wrappers": ["env", "nice", "timeout", "5", "nohup", "stdbuf", "-eL", "touch", "m"],
    "sh -c": ["sh", "-c", "touch m"],
    "bash -c list": ["bash", "-c", "cd . && true; false || touch m"],
    "bash -lc pipe": ["bash", "-lc", "echo x | touch m"],
    "dash -c": ["dash", "-c", "true\ntouch m"],
    "bash -o pipefail -c": ["bash", "-o", "pipefail", "-c", "touch m"],
    "command": ["bash", "-c", "command touch m"],
    "exec": ["sh", "-c", "exec touch m"],
    "assignment prefix": ["bash", "-c", "A=1 touch m"],
    "redirect before name": ["bash", "-c", "2>/dev/null touch m"],
    "if body": ["bash", "-c", "if true; then touch m; fi"],
    "function": ["bash", "-c", "f() { touch m; }; f"],
    "subshell": ["bash", "-c", "(touch m)"],
    "command substitution": ["bash", "-c", "echo $(touch m)"],
    "backquotes": ["sh", "-c", "echo `touch m`"],
    "quoted pieces": ["bash", "-c", "t'ou'\"ch\" m"],
    "ansi-c quoting": ["bash", "-c", "$'\\x74ouch' m"],
    "computed name": ["bash", "-c", "$(echo touch) m"],
    "brace expansion": ["bash", "-c", "{touch,m}"],
    "glob name": ["bash", "-c", "/usr/bin/t?uch m"],
    "positional $0": ["sh", "-c", '"$0" m', "touch"],
    "positional $@": ["bash", "-c", '"$@"', "_", "touch", "m"],
    "eval": ["bash", "-c", "eval 'touch m'"],
    "here-string to a shell": ["bash", "-c", "sh <<< 'touch m'"],
    "here-document to a shell": ["bash", "-c", "sh <<EOF\ntouch m\nEOF\n"],
    "piped into a shell": ["bash", "-c", "echo 'touch m' | sh"],
    "xargs": ["bash", "-c", "echo m | xargs touch"],
    "xargs -I": ["bash", "-c", "echo m | xargs -I{} touch {}"],
    "find -exec": ["find", ".", "-maxdepth", "0", "-exec", "touch", "m", ";"],
    "unparseable script": ["bash", "-c", "touch m; echo 'unterminated"],
}


def _policy(tmp_path: Path, rules: str):
    path = tmp_path / ("deny.yaml" if rules else "allow.yaml")
    path.write_text(BASE.format(name=path.stem) + rules)
    return parse_policy(path.read_text(), path)


def _fresh(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


@pytest.mark.parametrize("argv", list(TOUCH_VARIANTS.values()), ids=list(TOUCH_VARIANTS))
def test_a_denied_program_does_not_run_through_any_wrapper(runner, tmp_path: Path, argv: list[str]) -> None:
    denied = _fresh(tmp_path, "denied")
    res = runner.run(argv, workdir=denied, policy=_policy(tmp_path, DENY_TOUCH), **CHECK)
    assert res.exit_code == 126, (res.exit_code, res.stderr)
    assert res.denials[0]["rule_id"] == "rules.no-touch"
    assert not (denied / "m").exists()

    control = _fresh(tmp_path, "control")
    ok = runner.run(argv, workdir=control, policy=_policy(tmp_path, ""), **CHECK)
    # the same command without the rule really runs touch (the script with an unterminated quote
    # is refused by bash itself, so its control shows only that nothing else stopped it)
    if "unterminated" in argv[-1]:
        assert ok.exit_code == 2 and "unexpected EOF" in ok.stderr
    else:
        assert ok.exit_code == 0, (ok.exit_code, ok.stderr)
        assert (control / "m").exists()


def test_a_link_to_the_program_in_the_worktree_or_on_path_is_resolved(runner, tmp_path: Path) -> None:
    for how in ("relative", "path"):
        for policy, rules in (("deny", DENY_TOUCH), ("allow", "")):
            work = _fresh(tmp_path, f"{how}-{policy}")
            os.symlink("/usr/bin/touch", work / "t")
            argv = ["./t", "m"] if how == "relative" else ["t", "m"]
            env = {"PATH": f"{work}:/usr/bin:/bin"} if how == "path" else None
            res = runner.run(argv, workdir=work, policy=_policy(tmp_path, rules), env=env, **CHECK)
            if policy == "deny":
                assert res.exit_code == 126 and not (work / "m").exists(), (how, res.stderr)
            else:
                assert res.exit_code == 0 and (work / "m").exists(), (how, res.stderr)


GIT_VARIANTS = {
    "plain": ["git", "init", "-q", "r"],
    "absolute path": ["/usr/bin/git", "init", "-q", "r"],
    "-C": ["git", "-C", ".", "init", "-q", "r"],
    "-c and --no-pager": ["git", "-c", "core.abbrev=12", "--no-pager", "init", "-q", "r"],
    "-P and --git-dir=": ["git", "-P", "--git-dir=r", "init", "-q", "--bare"],
    "--git-dir and --work-tree": ["git", "--git-dir", "r", "--work-tree", ".", "init", "-q"],
    "alias on the command line": ["git", "-c", "alias.i=init", "i", "-q", "r"],
    "shell alias": ["git", "-c", "alias.i=!git init", "i", "-q", "r"],
    "git- program": ["/usr/lib/git-core/git-init", "-q", "r"],
    "env": ["env", "GIT_TRACE=0", "git", "init", "-q", "r"],
    "bash -c": ["bash", "-c", "cd . && git -C . init -q r"],
    "computed subcommand": ["bash", "-c", "git $(echo init) -q r"],
}


@pytest.mark.parametrize("argv", list(GIT_VARIANTS.values()), ids=list(GIT_VARIANTS))
def test_git_global_options_do_not_hide_the_subcommand(runner, tmp_path: Path, argv: list[str]) -> None:
    if argv[0].startswith("/usr/lib/git-core/") and not Path(argv[0]).exists():
        pytest.skip("no git-core programs here")
    denied = _fresh(tmp_path, "denied")
    res = runner.run(argv, workdir=denied, policy=_policy(tmp_path, DENY_GIT_INIT), **CHECK)
    assert res.exit_code == 126 and res.denials[0]["rule_id"] == "rules.no-git-init", res.stderr
    assert not (denied / "r").exists()
    control = _fresh(tmp_path, "control")
    ok = runner.run(argv, workdir=control, policy=_policy(tmp_path, ""), **CHECK)
    assert ok.exit_code == 0, ok.stderr
    assert (control / "r" / ".git").is_dir() or (control / "r" / "HEAD").is_file()


def test_ordinary_checks_still_run_under_a_deny_rule(runner, tmp_path: Path) -> None:
    """The loop's check is `bash -c "<check>"`: a rule on `touch` or `git push` must not catch
    checks that only mention the words."""
    policy = _policy(tmp_path, DENY_TOUCH + "  - id: no-push\n    action: exec\n    match: 'git push*'\n"
                               "    decision: deny\n")
    for i, check in enumerate(["echo touch m > note.txt", "grep -c 'git push' note.txt || true",
                               "printf '%s\\n' git push > words.txt", "test -f note.txt && git --version",
                               'for f in *.txt; do echo "$f"; done | sort', "cat <<EOF > doc.txt\ntouch m\nEOF"]):
        work = tmp_path / "ok"
        work.mkdir(exist_ok=True)
        res = runner.run(["bash", "-c", check], workdir=work, policy=policy, **CHECK)
        assert res.exit_code == 0, (i, check, res.stderr)
    assert (work / "note.txt").read_text() == "touch m\n" and not (work / "m").exists()
    assert (work / "doc.txt").read_text() == "touch m\n"


def test_a_refusal_prints_the_command_with_its_control_bytes_escaped(runner, tmp_path: Path) -> None:
    """A refused argv is shown on the caller's terminal: ESC, CR and bidi overrides cannot spoof lines."""
    work = _fresh(tmp_path, "escaped")
    res = runner.run(["touch", "m\x1b[2J\rloopmeter: all good\u202e"], workdir=work,
                     policy=_policy(tmp_path, DENY_TOUCH), **CHECK)
    assert res.exit_code == 126 and not (work / "m").exists()
    assert "\\x1b[2J\\x0d" in res.stderr or "\\x1b[2J\\r" in res.stderr
    assert not any(c in res.stderr for c in ("\x1b", "\r", "\u202e"))
