"""Exec decisions read what will run: wrappers, shells, git options, PATH. (Sandboxed proof:
tests/sandbox/test_exec_rules.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from loopmeter.policies import load_policy, parse_policy
from loopmeter.policies.execmatch import exec_candidates, rule_matches

PATH = "/usr/local/bin:/usr/bin:/bin"

DENIED_PUSHES = {
    "literal": ["git", "push", "origin", "main"],
    "absolute": ["/usr/bin/git", "push"],
    "env": ["env", "git", "push"],
    "env -S": ["env", "-S", "git push --force"],
    "env --split-string=": ["env", "--split-string=git push"],
    "env -iu cluster": ["env", "-iu", "HOME", "git", "push"],
    "env computed word": ["bash", "-c", "env $X git push"],
    "command": ["command", "git", "push"],
    "nice": ["nice", "-n", "19", "git", "push"],
    "timeout": ["timeout", "--kill-after=1", "5", "git", "push"],
    "timeout unknown option": ["timeout", "--frobnicate", "5", "git", "push"],
    "nohup": ["nohup", "git", "push"],
    "stdbuf": ["stdbuf", "--output=L", "git", "push"],
    "sudo": ["sudo", "-u", "me", "-E", "git", "push"],
    "strace": ["strace", "-f", "-o", "/dev/null", "git", "push"],
    "flock -c": ["flock", "/tmp/lock", "-c", "git push"],
    "su -c": ["su", "-c", "git push", "me"],
    "watch": ["watch", "-n", "5", "git", "push"],
    "xargs": ["xargs", "-r", "git"],
    "xargs -I": ["xargs", "-I", "%", "git", "%"],
    "find -exec +": ["find", ".", "-exec", "git", "push", "{}", "+"],
    "sh -c": ["sh", "-c", "git push"],
    "bash -ec": ["bash", "-ec", "make && git push"],
    "zsh -c": ["zsh", "-c", "git push"],
    "busybox sh": ["busybox", "sh", "-c", "git push"],
    "nested shells": ["bash", "-c", "sh -c 'dash -c \"git push\"'"],
    "printf substitution": ["bash", "-c", "$(printf 'git push')"],
    "function with $@": ["bash", "-c", 'p() { git "$@"; }; p push'],
    "case body": ["bash", "-c", "case x in x) git push;; esac"],
    "while body": ["bash", "-c", "while false; do :; done; until true; do :; done; git push"],
    "background": ["bash", "-c", "git push & wait"],
    "process substitution": ["bash", "-c", "cat <(git push)"],
    "heredoc substitution": ["bash", "-c", "cat <<EOF\n$(git push)\nEOF"],
    "parameter default": ["bash", "-c", "echo ${X:-$(git push)}"],
    "line continuation": ["bash", "-c", "git \\\n push"],
    "git -C": ["git", "-C", "/tmp", "push"],
    "git -c": ["git", "-c", "push.default=current", "push"],
    "git --git-dir": ["git", "--git-dir", ".git", "--work-tree=.", "push"],
    "git --no-pager -P": ["git", "--no-pager", "-P", "push"],
    "git alias": ["git", "-c", "alias.p=push", "p"],
    "git alias chain": ["git", "-c", "alias.q=p", "-c", "alias.p=push", "q"],
    "git shell alias": ["git", "-c", "alias.p=!git push", "p"],
    "git alias from env": ["git", "--config-env=alias.p=ALIAS", "p"],
    "git unknown option": ["git", "--frob", "push"],
    "git-push program": ["/usr/lib/git-core/git-push", "origin"],
}

ALLOWED = {
    "the check": ["bash", "-c", "python -m pytest -q"],
    "words only": ["bash", "-c", "echo git push; grep -rn 'git push' ."],
    "git status": ["bash", "-c", "git status && git diff --stat"],
    "git commit with a variable": ["bash", "-c", 'git commit -qm "$MSG"'],
    "computed interpreter": ["bash", "-c", "$PYTHON -m pytest -q"],
    "heredoc as data": ["bash", "-c", "cat > notes.md <<'EOF'\ngit push\nsudo rm\nEOF"],
    "xargs grep for sudo": ["bash", "-c", "ls | xargs grep -l sudo"],
    "pipe to grep": ["bash", "-c", "git log --oneline | grep push"],
}


@pytest.fixture(scope="module")
def default():
    return load_policy("default")


@pytest.mark.parametrize("argv", list(DENIED_PUSHES.values()), ids=list(DENIED_PUSHES))
def test_git_push_is_denied_however_it_is_spelled(default, argv: list[str]) -> None:
    if argv[0].startswith("/usr/lib/git-core/") and not Path(argv[0]).exists():
        pytest.skip("no git-core programs here")
    d = default.decide_exec(argv, "agent:codex", path=PATH, cwd="/tmp")
    assert (d.decision, d.rule_id) == ("deny", "rules.no-git-push"), d


@pytest.mark.parametrize("argv", list(ALLOWED.values()), ids=list(ALLOWED))
def test_ordinary_commands_stay_allowed(default, argv: list[str]) -> None:
    d = default.decide_exec(argv, "check", path=PATH, cwd="/tmp")
    assert (d.decision, d.rule_id) == ("allow", "exec.default"), d


def test_the_reason_says_what_it_runs(default) -> None:
    d = default.decide_exec(["env", "A=1", "nice", "git", "-C", "x", "push", "origin"], "check", path=PATH)
    assert d.reason == "pushing from a sandbox is never allowed (it runs `git push origin`)"
    d = default.decide_exec(["bash", "-c", "git $(echo push)"], "check", path=PATH)
    assert d.reason.endswith("(it runs `git ...`)")


def test_ask_is_found_through_wrappers_and_deny_beats_ask(default) -> None:
    assert default.decide_exec(["env", "sudo", "id"], "agent:x", path=PATH).decision == "ask"
    assert default.decide_exec(["bash", "-c", "cd / && sudo id"], "agent:x", path=PATH).decision == "ask"
    both = default.decide_exec(["bash", "-c", "sudo id; git push"], "agent:x", path=PATH)
    assert (both.decision, both.rule_id) == ("deny", "rules.no-git-push")


def test_an_allow_rule_first_does_not_hide_a_denied_reading(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nrules:\n  - {id: shells, action: exec, match: 'bash -c *', decision: allow}\n"
                    "  - {id: push, action: exec, match: 'git push*', decision: deny}\n")
    policy = parse_policy(path.read_text(), path)
    assert policy.decide_exec(["bash", "-c", "ls"], "check", path=PATH).rule_id == "rules.shells"
    assert policy.decide_exec(["bash", "-c", "git push"], "check", path=PATH).rule_id == "rules.push"


def test_argv0_is_resolved_through_the_path_the_command_sees(tmp_path: Path, default) -> None:
    (tmp_path / "bin").mkdir()
    os.symlink("/usr/bin/git", tmp_path / "bin" / "g")
    argv = ["g", "push"]
    assert default.decide_exec(argv, "check", path=f"{tmp_path / 'bin'}:{PATH}").decision == "deny"
    assert default.decide_exec(argv, "check", path=PATH).decision == "allow"  # no `g` on this PATH
    assert default.decide_exec(["bin/g", "push"], "check", path=PATH, cwd=tmp_path).decision == "deny"
    assert default.decide_exec(["g", "push"], "check", path="bin", cwd=tmp_path).decision == "deny"  # relative entry
    # PATH set on the command line counts too
    assert default.decide_exec(["env", f"PATH={tmp_path / 'bin'}", "g", "push"], "check", path=PATH).decision == "deny"


def test_decide_reads_a_shell_command_line_too(default) -> None:
    """The builtin agent asks with the command string it will run through `bash -c`."""
    assert default.decide("exec", "cd src && git push origin", "agent:builtin").decision == "deny"
    assert default.decide("exec", "timeout 60 sudo make install", "agent:builtin").decision == "ask"
    assert default.decide("exec", "echo 'git push'", "agent:builtin").decision == "allow"


def test_too_many_readings_are_refused_not_guessed(default) -> None:
    d = default.decide_exec(["env"] * 40 + ["git", "status"], "check", path=PATH)
    assert (d.decision, d.rule_id) == ("deny", "exec.too-complex")
    d = default.decide_exec(["bash", "-c", "true;" * 60_000], "check", path=PATH)
    assert (d.decision, d.rule_id) == ("deny", "exec.too-complex")
    d = default.decide_exec(["bash", "-c", "echo $((" * 1500 + "1" + "))" * 1500], "check", path=PATH)
    assert (d.decision, d.rule_id) == ("deny", "exec.too-complex")


def test_pathological_input_is_bounded_in_time(default) -> None:
    start = time.perf_counter()
    for argv in (["bash", "-c", "echo 'x " + "w " * 20_000], ["bash", "-c", "$(" * 3000 + ")" * 3000],
                 ["timeout", "--x", *["w"] * 3000], ["bash", "-c", "a | " * 5000 + "b"]):
        assert default.decide_exec(argv, "check", path=PATH).decision in ("allow", "deny")
    assert time.perf_counter() - start < 10


def test_without_restrictive_exec_rules_nothing_is_parsed(tmp_path: Path) -> None:
    strict_no_rules = tmp_path / "p.yaml"
    strict_no_rules.write_text("name: p\nrules:\n  - {id: ok, action: exec, match: 'make*', decision: allow}\n")
    policy = parse_policy(strict_no_rules.read_text(), strict_no_rules)
    assert policy.decide_exec(["env"] * 40 + ["true"], "check").rule_id == "exec.default"
    assert policy.decide_exec(["make", "test"], "check").rule_id == "rules.ok"


def test_rules_for_other_actors_do_not_apply(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nrules:\n  - {id: a, action: exec, match: 'rm *', decision: deny, actors: ['agent:*']}\n")
    policy = parse_policy(path.read_text(), path)
    assert policy.decide_exec(["env", "rm", "-rf", "x"], "agent:codex").decision == "deny"
    assert policy.decide_exec(["env", "rm", "-rf", "x"], "check").decision == "allow"


def test_open_tail_matching() -> None:
    assert rule_matches("git", "git push*", open_tail=True)
    assert rule_matches("git -C x", "git -C x push*", open_tail=True)
    assert not rule_matches("git", "git push*")
    assert not rule_matches("gi", "git push*", open_tail=True)
    assert not rule_matches("git pull", "git push*", open_tail=True)
    assert rule_matches("rm", "rm [-]rf*", open_tail=True)
    assert not rule_matches("rmdir", "rm *", open_tail=True)


def test_exec_candidates_lists_argv_lists() -> None:
    found = exec_candidates(["env", "-i", "nice", "git", "-C", ".", "push"], PATH)
    assert ["env", "-i", "nice", "git", "-C", ".", "push"] == found[0]
    assert ["git", "-C", ".", "push"] in found and ["git", "push"] in found
    assert ["/usr/bin/git", "push"] not in found  # only argv0 spellings, not invented ones
    assert ["/usr/bin/git", "-C", ".", "push"] in found
