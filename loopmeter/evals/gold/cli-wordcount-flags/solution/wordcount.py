"""Count words (or lines) in files: wordcount.py [-l] FILE..."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="wordcount")
    parser.add_argument("-l", "--lines", action="store_true", help="count lines instead of words")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    status, total = 0, 0
    for path in args.files:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            print(f"wordcount: {path}: no such file", file=sys.stderr)
            status = 1
            continue
        count = len(text.splitlines()) if args.lines else len(text.split())
        total += count
        print(f"{count} {path}")
    if len(args.files) > 1:
        print(f"{total} total")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
