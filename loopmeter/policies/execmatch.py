"""What an exec will run: every program a command line can start, for the policy's exec rules.

`exec_candidates(argv, path)` lists the command lines `argv` may run, as argv lists:

- argv0 as given, its basename, the program PATH finds (the PATH the sandboxed command sees,
  relative entries against `cwd`), that file's real path and its basename (`/usr/bin/g -> git`);
  `git-push` is also `git push`;
- through wrappers, parsed the way each tool parses its options: `env` (options, `NAME=value`,
  `-S`), `command`, `exec`, `nice`, `nohup`, `timeout`, `stdbuf`, `setsid`, `ionice`, `taskset`,
  `chroot`, `time`, `sudo`, `doas`, `busybox`, `xargs` and `find -exec` (their command gets more
  arguments at run time, so a rule that could match once more words follow does match). An
  option a wrapper parser does not know (or a word only known at run time) makes every later
  word a possible start of the command;
- through shells: `sh`/`bash`/`dash`/`zsh`/`ksh`... `-c SCRIPT` (and `eval`, here-strings and
  here-documents fed to a shell): every simple command of the script, in `;`, `&&`, `||`, `|`,
  `&`, newline lists, subshells, groups, `if`/`while`/`for`/`case` bodies and functions, and the
  scripts inside `$(...)`, backquotes, `<(...)` and `>(...)`; `$0`, `$1`... and `"$@"` from the
  `-c` arguments are substituted;
- git's global options (`-C`, `-c`, `--git-dir`, `--work-tree`, `--no-pager`, `-P`, ...) are
  skipped, and an alias given on the same command line (`-c alias.p=push`, `!shell` aliases) is
  expanded.

Where the text cannot be known statically, the most restrictive reading wins:

- a script the parser cannot read (an unterminated quote, unbalanced parentheses) is read as
  a list of words, and every run of words may be a command;
- a command name that is computed (`$(echo git) push`, `{git,push}`, `"$X" push`) is split into
  its literal pieces, and every run of pieces plus the rest of the line may be a command; a glob
  (`/usr/bin/g?t`) is expanded on the host;
- an argument that is computed (`git $(echo push)`) ends what is known: the rule matches if it
  could match once more words follow;
- a shell that reads its script from a pipe is read as the words the earlier commands of the
  pipeline contain.

What it cannot see (see docs/security.md): programs started by an interpreter (`python -c`,
`perl -e`, `node -e`, `make`, a script file), names computed from variables or command output
that contain none of the literal pieces, aliases and functions defined earlier in a shell
session, git aliases from configuration files or the environment, and copies or hard links of a
program under another name.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
import shlex
from dataclasses import dataclass
from fnmatch import fnmatchcase

MAX_INTERPRETATIONS = 2000
MAX_DEPTH = 24
MAX_SCRIPT_CHARS = 256 * 1024
MAX_FALLBACK_WORDS = 16  # a run of words read from unparseable text is cut here (and left open)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "oksh", "ash", "yash", "posh",
                    "rbash", "busybox-sh"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_RESERVED_SKIP = frozenset({"!", "{", "}", "then", "else", "elif", "do", "if", "while", "until", "fi", "done",
                            "esac", "in", "coproc"})
_RESERVED_DROP = frozenset({"for", "select", "case"})


class TooComplex(Exception):
    """The command line has too many readings to check; the caller refuses it."""


class Dynamic(str):
    """A shell word whose value is only known when the shell runs: an expansion, a glob, a brace list."""

    raw: str
    glob: bool

    def __new__(cls, raw: str, *, is_glob: bool = False) -> Dynamic:
        obj = super().__new__(cls, raw)
        obj.raw = raw
        obj.glob = is_glob
        return obj


@dataclass(frozen=True)
class Interpretation:
    """One command line that may run. `open_tail`: more arguments may follow at run time."""

    argv: tuple[str, ...]
    open_tail: bool = False
    via: str = ""

    @property
    def target(self) -> str:
        return shlex.join(self.argv)


# -- matching ---------------------------------------------------------------------------------
def rule_matches(target: str, pattern: str, open_tail: bool = False) -> bool:
    """fnmatch of an exec target; with `open_tail`, also when more words after `target` could match."""
    if fnmatchcase(target, pattern):
        return True
    if not open_tail:
        return False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        # the tail starts with a space: a cut before a space or a wildcard may be followed by it
        if c in " *?[" and fnmatchcase(target, pattern[:i]):
            return True
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            i = close + 1 if close >= 0 else i + 1
            continue
        i += 1
    return False


# -- the shell lexer --------------------------------------------------------------------------
class _Unparseable(Exception):
    pass


@dataclass
class _Word:
    value: str
    raw: str
    start: int
    end: int
    dynamic: bool = False
    glob: bool = False
    subs: tuple[str, ...] = ()
    heredoc: str | None = None  # for a here-document delimiter: the body
    heredoc_expands: bool = False


@dataclass
class _Op:
    op: str
    start: int
    end: int


_OPERATORS = sorted([";;&", ";;", ";&", "&&", "||", "|&", "&>>", "&>", ">>", "<<<", "<<-", "<<", "<>", ">|", ">&",
                     "<&", ";", "&", "|", "(", ")", "<", ">", "\n"], key=len, reverse=True)
_REDIRECTS = frozenset({"<", ">", ">>", "<>", ">|", ">&", "<&", "&>", "&>>", "<<", "<<-", "<<<"})
_WORD_END = frozenset(" \t\n;&|()<>")
_ANSI = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
         "\\": "\\", "'": "'", '"': '"', "?": "?"}


def _balanced(s: str, i: int) -> tuple[str, int]:
    """`s[i] == "("`: the text inside the matching parenthesis and the index after it."""
    depth, j, n = 0, i, len(s)
    while j < n:
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            k = s.find("'", j + 1)
            if k < 0:
                raise _Unparseable("unterminated '")
            j = k + 1
            continue
        if c == '"' or c == "`":
            k = j + 1
            while k < n and s[k] != c:
                k += 2 if s[k] == "\\" else 1
            if k >= n:
                raise _Unparseable(f"unterminated {c}")
            j = k + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
        j += 1
    raise _Unparseable("unbalanced (")


def _backtick(s: str, i: int) -> tuple[str, int]:
    """`s[i-1] == "`"`: the script inside the backquotes and the index after the closing one."""
    j, n, out = i, len(s), []
    while j < n:
        c = s[j]
        if c == "\\" and j + 1 < n:
            out.append(s[j + 1] if s[j + 1] in "`$\\" else s[j:j + 2])
            j += 2
            continue
        if c == "`":
            return "".join(out), j + 1
        out.append(c)
        j += 1
    raise _Unparseable("unterminated `")


def _find_subs(text: str) -> list[str]:
    """The command substitutions in text where quotes do not matter (here-documents, ${...})."""
    out: list[str] = []
    j = 0
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "$" and text.startswith("(", j + 1):
            try:
                body, end = _balanced(text, j + 1)
            except _Unparseable:
                out.append(text[j + 2:])
                break
            if body.startswith("(") and body.endswith(")"):  # $(( arithmetic )) may hold $(...)
                out.extend(_find_subs(body))
            else:
                out.append(body)
            j = end
            continue
        if c == "`":
            try:
                body, j = _backtick(text, j + 1)
            except _Unparseable:
                out.append(text[j + 1:])
                break
            out.append(body)
            continue
        j += 1
    return out


def _dollar(s: str, i: int) -> tuple[int, str, list[str], bool]:
    """`s[i] == "$"`: (end, text, substitution scripts, dynamic)."""
    nxt = s[i + 1:i + 2]
    if nxt == "(":
        body, end = _balanced(s, i + 1)
        if body.startswith("(") and body.endswith(")"):
            return end, s[i:end], _find_subs(body), True
        return end, s[i:end], [body], True
    if nxt == "{":
        depth, j = 0, i + 1
        while j < len(s):
            if s[j] == "\\":
                j += 2
                continue
            if s[j] == "{":
                depth += 1
            elif s[j] == "}":
                depth -= 1
                if depth == 0:
                    return j + 1, s[i:j + 1], _find_subs(s[i + 2:j]), True
            j += 1
        raise _Unparseable("unterminated ${")
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[@*#?$!0-9-]", s[i + 1:])
    if m:
        return i + 1 + m.end(), s[i:i + 1 + m.end()], [], True
    return i + 1, "$", [], False


def _ansi_c(s: str, i: int) -> tuple[int, str]:
    """`$'...'` starting after the quote: (end, decoded text)."""
    out: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "'":
            return i + 1, "".join(out)
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = s[i + 1]
        if e in _ANSI:
            out.append(_ANSI[e])
            i += 2
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", s[i + 1:])
            assert m is not None
            out.append(chr(int(m.group(), 8) & 0xFF))
            i += 1 + m.end()
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            m = re.match(f"[0-9a-fA-F]{{1,{width}}}", s[i + 2:])
            if m:
                try:
                    out.append(chr(int(m.group(), 16)))
                except (ValueError, OverflowError):
                    pass
                i += 2 + m.end()
            else:
                out.append("\\" + e)
                i += 2
        elif e == "c" and i + 2 < n:
            out.append(chr(ord(s[i + 2]) & 0x1F))
            i += 3
        else:
            out.append("\\" + e)
            i += 2
    raise _Unparseable("unterminated $'")


def _expansion(s: str, i: int) -> tuple[int, str, bool, list[str]]:
    """The `$...` or backquoted expansion at s[i]: (end, text, dynamic, substitution scripts)."""
    if s[i] == "`":
        body, end = _backtick(s, i + 1)
        return end, "`" + body + "`", True, [body]
    end, text, found, dyn = _dollar(s, i)
    return end, text, dyn, found


def _dquote(s: str, i: int) -> tuple[int, str, bool, list[str]]:
    """Inside "...", starting after the quote: (end, value, dynamic, substitution scripts)."""
    parts: list[str] = []
    subs: list[str] = []
    dynamic, n = False, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return i + 1, "".join(parts), dynamic, subs
        if c == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
            if s[i + 1] != "\n":
                parts.append(s[i + 1])
            i += 2
            continue
        if c in "$`":
            i, text, dyn, found = _expansion(s, i)
            parts.append(text)
            dynamic |= dyn
            subs += found
            continue
        parts.append(c)
        i += 1
    raise _Unparseable('unterminated "')


def _word(s: str, i: int) -> tuple[_Word, int]:
    start, n = i, len(s)
    value: list[str] = []
    bare: list[str] = []  # the unquoted characters, to spot brace expansion
    dynamic = is_glob = False
    subs: list[str] = []
    while i < n:
        c = s[i]
        if c in _WORD_END:
            break
        if c == "\\":
            if i + 1 < n and s[i + 1] != "\n":
                value.append(s[i + 1])
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise _Unparseable("unterminated '")
            value.append(s[i + 1:j])
            i = j + 1
            continue
        if s.startswith("$'", i):
            i, part = _ansi_c(s, i + 2)
            value.append(part)
            continue
        if c == '"' or s.startswith('$"', i):  # $"..." is a "..." to translate
            i, part, dyn, found = _dquote(s, i + 2 if c == "$" else i + 1)
            value.append(part)
            dynamic |= dyn
            subs += found
            continue
        if c in "$`":
            i, text, dyn, found = _expansion(s, i)
            value.append(text)
            dynamic |= dyn
            subs += found
            continue
        if c in "*?[":
            is_glob = True
        value.append(c)
        bare.append(c)
        i += 1
    if re.search(r"\{[^{}]*(,|\.\.)[^{}]*\}", "".join(bare)):
        dynamic = True  # brace expansion: one word becomes several
    return _Word("".join(value), s[start:i], start, i, dynamic, is_glob, tuple(subs)), i


def _lex(s: str) -> list[_Word | _Op]:
    toks: list[_Word | _Op] = []
    heredocs: list[tuple[_Word, bool]] = []
    want_delimiter: bool | None = None  # after << / <<-: whether tabs are stripped
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            i += 1
            continue
        if c == "\\" and s.startswith("\n", i + 1):
            i += 2
            continue
        if c == "#":
            j = s.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "\n":
            toks.append(_Op("\n", i, i + 1))
            i += 1
            for word, strip in heredocs:
                i = _read_heredoc(s, i, word, strip)
            heredocs = []
            continue
        if c in "<>" and s.startswith("(", i + 1):  # process substitution
            body, j = _balanced(s, i + 1)
            toks.append(_Word(s[i:j], s[i:j], i, j, dynamic=True, subs=(body,)))
            i = j
            continue
        op = next((o for o in _OPERATORS if s.startswith(o, i)), None)
        if op is not None:
            toks.append(_Op(op, i, i + len(op)))
            i += len(op)
            if op in ("<<", "<<-"):
                want_delimiter = op == "<<-"
            continue
        word, i = _word(s, i)
        toks.append(word)
        if want_delimiter is not None:
            word.heredoc_expands = not any(q in word.raw for q in "'\"\\")
            heredocs.append((word, want_delimiter))
            want_delimiter = None
    for word, _strip in heredocs:  # a here-document with no newline after it is empty
        word.heredoc = ""
    return toks


def _read_heredoc(s: str, i: int, word: _Word, strip: bool) -> int:
    lines: list[str] = []
    while i < len(s):
        j = s.find("\n", i)
        line = s[i:] if j < 0 else s[i:j]
        i = len(s) if j < 0 else j + 1
        if (line.lstrip("\t") if strip else line) == word.value:
            break
        lines.append(line)
    word.heredoc = "\n".join(lines)
    return i


@dataclass
class _Command:
    words: list[str]
    stdin: list[tuple[str, str]]  # ("script", text) fed to its stdin, or ("words", text) of earlier pipe stages
    path: str | None  # PATH=... given in front of it


def _parse(toks: list[_Word | _Op], params: list[str] | None) -> tuple[list[_Command], list[str]]:
    """Simple commands and the substitution scripts of a lexed script."""
    commands: list[_Command] = []
    subs: list[str] = []
    cur: list[_Word] = []
    stdin: list[tuple[str, str]] = []
    piped: list[str] = []  # words of earlier commands in this pipeline

    def finish() -> list[str]:
        words = _expand_params(cur, params)
        words_text = " ".join(w.raw if isinstance(w, Dynamic) else w for w in words)
        path = None
        while words and not isinstance(words[0], Dynamic) and words[0] in _RESERVED_SKIP:
            words.pop(0)
        if words and not isinstance(words[0], Dynamic) and words[0] == "function":
            words = words[2:]
            while words and not isinstance(words[0], Dynamic) and words[0] in _RESERVED_SKIP:
                words.pop(0)
        if words and not isinstance(words[0], Dynamic) and words[0] in _RESERVED_DROP:
            words = []
        while words and not isinstance(words[0], Dynamic) and _ASSIGNMENT.match(words[0]):
            if words[0].startswith("PATH="):
                path = words[0][5:]
            words.pop(0)
        if words:
            commands.append(_Command(words, [*stdin, *([("words", " ".join(piped))] if piped else [])], path))
        cur.clear()
        stdin.clear()
        return [words_text] if words_text else []

    i = 0
    while i < len(toks):
        t = toks[i]
        if isinstance(t, _Word):
            subs.extend(t.subs)
            cur.append(t)
            i += 1
            continue
        if t.op in _REDIRECTS:
            if cur and cur[-1].end == t.start and (cur[-1].value.isdigit() or re.fullmatch(r"\{\w+\}", cur[-1].raw)):
                cur.pop()  # 2>file, {fd}>file: the number is part of the redirection
            target = toks[i + 1] if i + 1 < len(toks) and isinstance(toks[i + 1], _Word) else None
            if isinstance(target, _Word):
                subs.extend(target.subs)
                if t.op == "<<<":
                    stdin.append(("script", target.value))
                elif t.op in ("<<", "<<-") and target.heredoc is not None:
                    stdin.append(("script", target.heredoc))
                    if target.heredoc_expands:
                        subs.extend(_find_subs(target.heredoc))
                i += 2
            else:
                i += 1
            continue
        texts = finish()
        if t.op in ("|", "|&"):
            piped.extend(texts)
        else:
            piped.clear()
        i += 1
    finish()
    return commands, subs


_WHOLE_PARAM = re.compile(r'"?\$(?:(\d)|\{(\d+)\}|([@*]))"?')


def _expand_params(words: list[_Word], params: list[str] | None) -> list[str]:
    out: list[str] = []
    for w in words:
        m = _WHOLE_PARAM.fullmatch(w.raw) if params is not None else None
        if m and params is not None:
            if m.group(3):  # inside a function "$@" is the function's arguments: more may follow
                out.extend([*params[1:], Dynamic(w.raw)])
            else:
                index = int(m.group(1) or m.group(2))
                if index < len(params):
                    out.append(params[index])
            continue
        if w.dynamic:
            out.append(Dynamic(w.raw))
        elif w.glob:
            out.append(Dynamic(w.value, is_glob=True))
        else:
            out.append(w.value)
    return out


def _rough_words(text: str) -> list[str]:
    """Text read as words, quotes and operators ignored: for text the parser cannot read."""
    return re.findall(r"[^\s;&|()<>`'\"$={},]+", text)


# -- wrappers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    flags: str = ""  # short options without an argument
    with_arg: str = ""  # short options that take one (attached or the next word)
    optional: str = ""  # short options whose argument can only be attached (xargs -i{})
    long_flags: frozenset[str] = frozenset()
    long_with_arg: frozenset[str] = frozenset()
    positional: int = 0  # operands before the command (timeout's duration, chroot's root)
    assignments: bool = False  # NAME=value words before the command
    numeric: bool = False  # `-10` is an option (nice)
    open_tail: bool = False  # the command gets more arguments at run time (xargs)
    split: str = ""  # short option whose argument is itself split into words (env -S)
    split_long: str = ""
    script: str = ""  # short option whose argument is a shell script (flock -c, su -c)
    script_long: str = ""
    replace: str = ""  # short options naming a string replaced by input at run time (xargs -I)
    replace_long: str = ""
    joined_script: bool = False  # the command words are joined and run by `sh -c` (watch)


def _fs(*names: str) -> frozenset[str]:
    return frozenset(names)


WRAPPERS: dict[str, _Spec] = {
    "env": _Spec(flags="i0v", with_arg="uCS", long_flags=_fs("--ignore-environment", "--null", "--debug",
                 "--list-signal-handling", "--block-signal", "--default-signal", "--ignore-signal"),
                 long_with_arg=_fs("--unset", "--chdir", "--split-string"), assignments=True, split="S",
                 split_long="--split-string"),
    "command": _Spec(flags="pvV"),
    "exec": _Spec(flags="cl", with_arg="a"),
    "nice": _Spec(with_arg="n", long_with_arg=_fs("--adjustment"), numeric=True),
    "nohup": _Spec(),
    "timeout": _Spec(flags="v", with_arg="ks", long_flags=_fs("--preserve-status", "--foreground", "--verbose"),
                     long_with_arg=_fs("--kill-after", "--signal"), positional=1),
    "stdbuf": _Spec(with_arg="ioe", long_with_arg=_fs("--input", "--output", "--error")),
    "setsid": _Spec(flags="cfw", long_flags=_fs("--ctty", "--fork", "--wait")),
    "ionice": _Spec(flags="t", with_arg="cnpPu", long_flags=_fs("--ignore"),
                    long_with_arg=_fs("--class", "--classdata", "--pid", "--pgid", "--uid")),
    "taskset": _Spec(flags="acp", long_flags=_fs("--all-tasks", "--cpu-list", "--pid"), positional=1),
    "chroot": _Spec(long_flags=_fs("--skip-chdir"), long_with_arg=_fs("--userspec", "--groups"), positional=1),
    "time": _Spec(flags="apvq", with_arg="fo", long_flags=_fs("--append", "--portability", "--verbose", "--quiet"),
                  long_with_arg=_fs("--format", "--output")),
    "sudo": _Spec(flags="AbEHiKklnPSsVv", with_arg="ugCDhprtUTR",
                  long_flags=_fs("--askpass", "--background", "--preserve-env", "--set-home", "--login",
                                 "--non-interactive", "--preserve-groups", "--remove-timestamp", "--reset-timestamp",
                                 "--shell", "--stdin", "--bell"),
                  long_with_arg=_fs("--user", "--group", "--close-from", "--chdir", "--host", "--prompt", "--role",
                                    "--type", "--other-user", "--command-timeout", "--chroot"), assignments=True),
    "doas": _Spec(flags="nsL", with_arg="uC"),
    "busybox": _Spec(),
    "xargs": _Spec(flags="0oprtx", with_arg="aEIdLnPs", optional="eil",
                   long_flags=_fs("--null", "--open-tty", "--interactive", "--no-run-if-empty", "--verbose",
                                  "--exit", "--show-limits", "--eof", "--replace", "--max-lines"),
                   long_with_arg=_fs("--arg-file", "--max-args", "--max-procs", "--max-chars", "--delimiter",
                                     "--process-slot-var"), open_tail=True, replace="Ii", replace_long="--replace"),
    "flock": _Spec(flags="sxunoF", with_arg="wEc", long_flags=_fs("--shared", "--exclusive", "--unlock", "--nonblock",
                   "--close", "--no-fork", "--verbose"), long_with_arg=_fs("--timeout", "--conflict-exit-code",
                   "--command"), positional=1, script="c", script_long="--command"),
    "watch": _Spec(flags="bcegptwx", with_arg="nqd", long_flags=_fs("--beep", "--color", "--no-color", "--errexit",
                   "--chgexit", "--precise", "--no-title", "--no-wrap", "--exec", "--differences"),
                   long_with_arg=_fs("--interval", "--equexit"), joined_script=True),
    "strace": _Spec(flags="cdfFhiqrtTvVxyzkwnACDGHQYZ", with_arg="abeEIoOpPsSuUX",
                    long_with_arg=_fs("--trace", "--output", "--attach", "--user", "--env", "--string-limit",
                                      "--signal", "--status", "--trace-path", "--columns")),
    "unshare": _Spec(flags="imnpuUCTfrcl", long_flags=_fs("--ipc", "--mount", "--net", "--pid", "--uts", "--user",
                     "--cgroup", "--time", "--fork", "--map-root-user", "--map-current-user", "--kill-child",
                     "--mount-proc", "--keep-caps"), long_with_arg=_fs("--propagation", "--setgroups", "--root",
                     "--wd", "--setuid", "--setgid", "--map-user", "--map-group")),
    "su": _Spec(flags="lmpfP", with_arg="cgGsw", long_flags=_fs("--login", "--preserve-environment", "--pty"),
                long_with_arg=_fs("--command", "--group", "--supp-group", "--shell", "--whitelist-environment"),
                script="c", script_long="--command"),
    "runuser": _Spec(flags="lmpfP", with_arg="cgGsuw", long_flags=_fs("--login", "--preserve-environment", "--pty"),
                     long_with_arg=_fs("--command", "--group", "--supp-group", "--shell", "--user"),
                     script="c", script_long="--command"),
    "script": _Spec(flags="aeEfqTtk", with_arg="cIOBmT", long_flags=_fs("--append", "--return", "--flush",
                    "--quiet", "--force", "--echo", "--logging-format"), long_with_arg=_fs("--command",
                    "--log-in", "--log-out", "--log-io", "--log-timing", "--output-limit"),
                    script="c", script_long="--command"),
    "setpriv": _Spec(flags="d", long_flags=_fs("--dump", "--nnp", "--no-new-privs", "--clear-groups",
                     "--keep-groups", "--init-groups", "--reset-env"), long_with_arg=_fs("--inh-caps",
                     "--ambient-caps", "--bounding-set", "--ruid", "--euid", "--rgid", "--egid", "--reuid",
                     "--regid", "--groups", "--securebits", "--pdeathsig", "--selinux-label", "--apparmor-profile",
                     "--landlock-access", "--landlock-rule")),
}
_GIT_WITH_ARG = _fs("-C", "-c", "--git-dir", "--work-tree", "--namespace", "--super-prefix", "--config-env",
                    "--attr-source", "--list-cmds")
_GIT_FLAGS = _fs("-p", "--paginate", "-P", "--no-pager", "--bare", "--no-replace-objects", "--literal-pathspecs",
                 "--glob-pathspecs", "--noglob-pathspecs", "--icase-pathspecs", "--no-optional-locks",
                 "--no-advice", "--no-lazy-fetch", "--exec-path", "--html-path", "--man-path", "--info-path",
                 "-v", "--version", "-h", "--help")


class _Resolver:
    def __init__(self, path: str | None, cwd: str | None):
        self.path = path if path is not None else DEFAULT_PATH
        self.cwd = cwd or os.getcwd()
        self.out: dict[Interpretation, None] = {}
        self.seen: set[tuple[object, ...]] = set()
        self._which: dict[tuple[str, str], str | None] = {}

    # -- results ----------------------------------------------------------------------------
    def emit(self, argv: list[str], via: str, open_tail: bool = False) -> None:
        cut = next((k for k, w in enumerate(argv) if isinstance(w, Dynamic)), None)
        if cut == 0:
            return
        if cut is not None:
            argv, open_tail = argv[:cut], True
        item = Interpretation(tuple(str(w) for w in argv), open_tail, via)
        if item not in self.out:
            if len(self.out) >= MAX_INTERPRETATIONS:
                raise TooComplex(f"more than {MAX_INTERPRETATIONS} readings of the command line")
            self.out[item] = None

    # -- programs ---------------------------------------------------------------------------
    def which(self, name: str, path: str) -> str | None:
        key = (name, path)
        if key not in self._which:
            found = None
            for d in path.split(":"):
                d = d or "."
                cand = posixpath.join(d if d.startswith("/") else posixpath.join(self.cwd, d), name)
                try:
                    if os.path.isfile(cand) and os.access(cand, os.X_OK):
                        found = cand
                        break
                except (OSError, ValueError):
                    continue
            self._which[key] = found
        return self._which[key]

    def names(self, w0: str, path: str) -> list[str]:
        """argv0 as given, its basename, the file PATH finds, its real path and that basename."""
        out = [w0, posixpath.basename(w0.rstrip("/")) or w0]
        found = w0 if "/" in w0 else self.which(w0, path)
        if found:
            absolute = found if found.startswith("/") else posixpath.normpath(posixpath.join(self.cwd, found))
            try:
                real = os.path.realpath(absolute)
            except (OSError, ValueError):
                real = absolute
            out += [absolute, real, posixpath.basename(real)]
        return list(dict.fromkeys(n for n in out if n))

    # -- walking ----------------------------------------------------------------------------
    def walk(self, words: list[str], path: str, depth: int, via: str, stdin: tuple[tuple[str, str], ...] = (),
             open_tail: bool = False) -> None:
        if not words:
            return
        if depth > MAX_DEPTH:
            raise TooComplex(f"commands nested more than {MAX_DEPTH} deep")
        key = (tuple((type(w).__name__, str(w)) for w in words), path, open_tail, stdin)
        if key in self.seen:
            return
        self.seen.add(key)
        w0 = words[0]
        if isinstance(w0, Dynamic):
            if w0.glob:
                try:
                    matches = glob.glob(str(w0), root_dir=self.cwd)[:32]
                except (OSError, ValueError):
                    matches = []
                for m in matches:
                    self.walk([m, *words[1:]], path, depth + 1, via + " glob", stdin, open_tail)
            pieces = _rough_words(w0.raw)
            for k in range(len(pieces)):
                self.walk([*pieces[k:], *words[1:]], path, depth + 1, via + " computed-name", stdin, open_tail)
            return
        names = self.names(w0, path)
        for name in names:
            self.emit([name, *words[1:]], via, open_tail)
        args = words[1:]
        for prog in dict.fromkeys(posixpath.basename(n) for n in names):
            if prog.startswith("git-") and len(prog) > 4:
                self.git([prog[4:], *args], path, depth + 1, via + " git-", open_tail, {})
            if prog == "git":
                self.git(args, path, depth + 1, via + " git", open_tail, {})
            elif prog in SHELLS:
                self.shell(args, path, depth + 1, via + f" {prog}", stdin)
            elif prog == "eval":
                text = " ".join(w.raw if isinstance(w, Dynamic) else w for w in args)  # eval re-reads its words
                self.script(text, None, path, depth + 1, via + " eval")
            elif prog == "find":
                self.find(args, path, depth + 1, via + " find")
            elif prog in WRAPPERS:
                self.wrapper(WRAPPERS[prog], args, path, depth + 1, via + f" {prog}", stdin, open_tail)

    def wrapper(self, spec: _Spec, args: list[str], path: str, depth: int, via: str,
                stdin: tuple[tuple[str, str], ...], open_tail: bool) -> None:
        i, uncertain = 0, None
        split: list[str] | None = None
        scripts: list[str] = []
        replace: list[str] = []
        open_tail = open_tail or spec.open_tail
        while i < len(args):
            w = args[i]
            if isinstance(w, Dynamic):
                uncertain = i
                break
            if w == "--":
                i += 1
                break
            if w.startswith("--") and len(w) > 2:
                name, eq, value = w.partition("=")
                if name in spec.long_with_arg:
                    if not eq:
                        value = args[i + 1] if i + 1 < len(args) else ""
                        i += 1
                    if name == spec.split_long:
                        split = _split_words(value)
                    elif name == spec.script_long:
                        scripts.append(value)
                    i += 1
                    continue
                if name in spec.long_flags or name == spec.replace_long:
                    if name == spec.replace_long:
                        replace.append(value if eq else "{}")
                    i += 1
                    continue
                uncertain = i
                break
            if w.startswith("-") and len(w) > 1:
                if spec.numeric and w[1:].lstrip("-").isdigit():
                    i += 1
                    continue
                j, ok, takes_next = 1, True, False
                while j < len(w):
                    ch = w[j]
                    if ch in spec.with_arg:
                        if j == len(w) - 1:
                            takes_next = True
                            value = args[i + 1] if i + 1 < len(args) else ""
                        else:
                            value = w[j + 1:]
                        if ch == spec.split and not isinstance(value, Dynamic):
                            split = _split_words(value)
                        elif ch == spec.split:
                            uncertain = i
                        elif ch == spec.script:
                            scripts.append(value)
                        elif ch in spec.replace:
                            replace.append(value)
                        break
                    if ch in spec.optional:
                        if ch in spec.replace:
                            replace.append(w[j + 1:] or "{}")
                        break
                    if ch not in spec.flags:
                        ok = False
                        break
                    j += 1
                if not ok or uncertain is not None:
                    uncertain = i
                    break
                i += 2 if takes_next else 1
                continue
            if w == "-" and spec.assignments:  # env -: same as -i
                i += 1
                continue
            break
        for text in scripts:
            if isinstance(text, Dynamic):
                self.fallback(text.raw, path, depth, via)
            else:
                self.script(text, None, path, depth, via + " script")
        if uncertain is not None:
            # an option this parser does not know: any later word may begin the command
            for k in range(uncertain, len(args)):
                self.walk(args[k:], path, depth, via + " (unknown option)", stdin, open_tail)
            return
        i += spec.positional
        while spec.assignments and i < len(args) and not isinstance(args[i], Dynamic) \
                and _ASSIGNMENT.match(args[i]):
            if args[i].startswith("PATH="):
                path = args[i][5:]
            i += 1
        rest = args[i:]
        if spec.script and rest and rest[0] in (f"-{spec.script}", spec.script_long) and len(rest) > 1:
            # flock FILE -c SCRIPT
            text = rest[1]
            if isinstance(text, Dynamic):
                self.fallback(text.raw, path, depth, via)
            else:
                self.script(text, None, path, depth, via + " script")
            return
        if split is not None:
            rest = [*split, *rest]
        if replace:  # xargs -I{}: the words holding the replace string are only known at run time
            rest = [Dynamic(w) if any(r and r in w for r in replace) else w for w in rest]
        if spec.joined_script and rest and "-x" not in args[:i] and "--exec" not in args[:i]:
            self.script(" ".join(w.raw if isinstance(w, Dynamic) else w for w in rest), None, path, depth, via)
        if i < len(args) and isinstance(args[i], Dynamic) and spec.assignments:
            for k in range(i, len(args)):  # `env $X git push`: $X may be an assignment or the command
                self.walk(args[k:], path, depth, via, stdin, open_tail)
            return
        self.walk(rest, path, depth, via, stdin, open_tail)

    def find(self, args: list[str], path: str, depth: int, via: str) -> None:
        i = 0
        while i < len(args):
            if args[i] in ("-exec", "-execdir", "-ok", "-okdir"):
                j = i + 1
                while j < len(args) and args[j] not in (";", "+"):
                    j += 1
                plus = j < len(args) and args[j] == "+"
                self.walk(args[i + 1:j], path, depth, via, (), plus)
                i = j
            i += 1

    def git(self, args: list[str], path: str, depth: int, via: str, open_tail: bool,
            aliases: dict[str, str | None]) -> None:
        aliases = dict(aliases)
        i, uncertain = 0, None
        while i < len(args):
            w = args[i]
            if isinstance(w, Dynamic):
                uncertain = i
                break
            name, eq, inline = w.partition("=")
            if w in _GIT_WITH_ARG or (eq and name in _GIT_WITH_ARG and name.startswith("--")):
                value = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
                key = value.partition("=")[0].lower() if not isinstance(value, Dynamic) else ""
                if name == "-c" and isinstance(value, Dynamic):
                    aliases["*"] = None  # an unknown -c may define any alias
                elif name in ("-c", "--config-env") and key.startswith("alias."):
                    aliases[key[6:]] = value.partition("=")[2] if name == "-c" else None
                i += 1 if eq else 2
                continue
            if w in _GIT_FLAGS:
                i += 1
                continue
            if w.startswith("-"):
                uncertain = i
                break
            break
        if uncertain is not None:
            for k in range(uncertain, len(args) + 1):
                self.emit(["git", *args[k:]], via + " (unknown option)", open_tail)
            return
        sub = args[i:]
        self.emit(["git", *sub], via, open_tail)
        if not sub or isinstance(sub[0], Dynamic):
            return
        name = sub[0].lower()
        if name in aliases and aliases[name] is not None:
            value = aliases.pop(name) or ""
            if value.startswith("!"):
                text = value[1:] + " " + " ".join(w.raw if isinstance(w, Dynamic) else shlex.quote(w)
                                                  for w in sub[1:])
                self.script(text, None, path, depth + 1, via + " alias")
            else:
                self.git([*_split_words(value), *sub[1:]], path, depth + 1, via + " alias", open_tail, aliases)
        elif name in aliases or "*" in aliases:
            self.emit(["git"], via + " (alias from the environment)", True)

    def shell(self, args: list[str], path: str, depth: int, via: str, stdin: tuple[tuple[str, str], ...]) -> None:
        i, command_mode, reads_stdin = 0, False, False
        while i < len(args):
            w = args[i]
            if isinstance(w, Dynamic):
                self.fallback(" ".join(a.raw if isinstance(a, Dynamic) else a for a in args[i:]), path, depth, via)
                return
            if w in ("-", "--"):
                i += 1
                break
            if w.startswith("--"):
                i += 2 if w in ("--rcfile", "--init-file") else 1
                continue
            if w[:1] in "-+" and len(w) > 1:
                letters = w[1:]
                command_mode |= w[0] == "-" and "c" in letters
                reads_stdin |= "s" in letters
                i += 1 + letters.count("o") + letters.count("O")
                continue
            break
        rest = args[i:]
        if command_mode:
            if not rest:
                return
            script = rest[0]
            if isinstance(script, Dynamic):
                self.fallback(" ".join(a.raw if isinstance(a, Dynamic) else a for a in rest), path, depth, via)
                return
            params = [str(a) for a in rest[1:]] if not any(isinstance(a, Dynamic) for a in rest[1:]) else None
            self.script(script, params if params is not None else None, path, depth, via + " -c")
        elif not rest or reads_stdin:
            for kind, text in stdin:
                if kind == "script":
                    self.script(text, None, path, depth, via + " stdin")
                else:
                    self.fallback(text, path, depth, via + " piped")
        # a script file is not read: see the module docstring

    def script(self, text: str, params: list[str] | None, path: str, depth: int, via: str) -> None:
        if depth > MAX_DEPTH:
            raise TooComplex(f"commands nested more than {MAX_DEPTH} deep")
        if len(text) > MAX_SCRIPT_CHARS:
            raise TooComplex(f"a script of more than {MAX_SCRIPT_CHARS} characters")
        try:
            commands, subs = _parse(_lex(text), params)
        except _Unparseable:
            self.fallback(text, path, depth, via + " (unparsed)")
            return
        for body in subs:
            self.script(body, params, path, depth + 1, via + " $()")
        for cmd in commands:
            self.walk(cmd.words, cmd.path if cmd.path is not None else path, depth + 1, via, tuple(cmd.stdin))

    def fallback(self, text: str, path: str, depth: int, via: str) -> None:
        """Text that cannot be read as shell: every run of its words may be a command."""
        words = _rough_words(text)
        for k in range(len(words)):
            run = words[k:k + MAX_FALLBACK_WORDS]
            self.emit(run, via, open_tail=k + MAX_FALLBACK_WORDS < len(words))
            for name in self.names(run[0], path)[1:]:
                self.emit([name, *run[1:]], via, open_tail=k + MAX_FALLBACK_WORDS < len(words))


def _split_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def exec_interpretations(argv: list[str] | tuple[str, ...], path: str | None = None,
                         cwd: str | os.PathLike[str] | None = None) -> list[Interpretation]:
    """Every command line `argv` may run (itself first). Raises TooComplex past the limits."""
    r = _Resolver(path, os.fspath(cwd) if cwd is not None else None)
    try:
        if argv:
            r.walk([str(a) for a in argv], r.path, 0, "")
    except RecursionError:
        raise TooComplex("a command line nested too deeply to read") from None
    return list(r.out)


def script_interpretations(text: str, path: str | None = None,
                           cwd: str | os.PathLike[str] | None = None) -> list[Interpretation]:
    """Every command line a shell command line (`git push && make`) may run."""
    r = _Resolver(path, os.fspath(cwd) if cwd is not None else None)
    try:
        r.script(text, None, r.path, 0, "")
    except RecursionError:
        raise TooComplex("a command line nested too deeply to read") from None
    return list(r.out)


def exec_candidates(argv: list[str] | tuple[str, ...], path: str | None = None,
                    cwd: str | os.PathLike[str] | None = None) -> list[list[str]]:
    """The argv lists `argv` may run (see the module docstring); open-ended ones are included as known."""
    return [list(i.argv) for i in exec_interpretations(argv, path, cwd)]
