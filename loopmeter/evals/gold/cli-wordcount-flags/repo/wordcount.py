"""Count words in files: wordcount.py FILE..."""

import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="wordcount")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    for path in args.files:
        with open(path) as f:
            print(f"{len(f.read().split())} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
