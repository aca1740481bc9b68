#!/bin/sh
# Hidden check for rotate.sh; exits non-zero on the first failure.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
here=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mk() { mkdir -p "$tmp/$1"; shift_dir=$1; shift; for f in "$@"; do : > "$tmp/$shift_dir/$f"; done; }

mk a backup-20240101-0100.tar backup-20240102-0100.tar backup-20240103-0100.tar backup-20240104-0100.tar notes.txt
out=$(sh "$here/rotate.sh" "$tmp/a" 2) || fail "exit status $?"
[ -e "$tmp/a/backup-20240104-0100.tar" ] || fail "newest removed"
[ -e "$tmp/a/backup-20240103-0100.tar" ] || fail "second newest removed"
[ ! -e "$tmp/a/backup-20240101-0100.tar" ] || fail "oldest kept"
[ ! -e "$tmp/a/backup-20240102-0100.tar" ] || fail "second oldest kept"
[ -e "$tmp/a/notes.txt" ] || fail "non-backup file removed"
[ "$out" = "removed backup-20240101-0100.tar
removed backup-20240102-0100.tar" ] || fail "output was: $out"

mk b backup-20240101-0100.tar backup-20240102-0100.tar
sh "$here/rotate.sh" "$tmp/b" 0 >/dev/null || fail "KEEP=0 failed"
[ -z "$(ls "$tmp/b")" ] || fail "KEEP=0 left files"

mk c backup-20240101-0100.tar
out=$(sh "$here/rotate.sh" "$tmp/c" 5) || fail "KEEP larger than count failed"
[ -e "$tmp/c/backup-20240101-0100.tar" ] || fail "removed with KEEP > count"
[ -z "$out" ] || fail "printed output with nothing to remove"

sh "$here/rotate.sh" "$tmp/c" x 2>/dev/null; [ $? -eq 2 ] || fail "bad KEEP not exit 2"
sh "$here/rotate.sh" "$tmp/missing" 1 2>/dev/null; [ $? -eq 2 ] || fail "missing DIR not exit 2"
err=$(sh "$here/rotate.sh" "$tmp/c" -1 2>&1 >/dev/null); [ -n "$err" ] || fail "no usage message"
echo "ok"
