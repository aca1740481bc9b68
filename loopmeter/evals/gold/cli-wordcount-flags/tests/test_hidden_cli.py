import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.abspath("wordcount.py")


def run(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True)


class CliTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        with open(os.path.join(self.dir, "a.txt"), "w") as f:
            f.write("one two three\nfour\n")
        with open(os.path.join(self.dir, "b.txt"), "w") as f:
            f.write("x\ny\nz\n")

    def test_words(self):
        out = run("a.txt", cwd=self.dir)
        self.assertEqual(out.returncode, 0)
        self.assertEqual(out.stdout, "4 a.txt\n")

    def test_lines_and_total(self):
        for flag in ("-l", "--lines"):
            out = run(flag, "a.txt", "b.txt", cwd=self.dir)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, "2 a.txt\n3 b.txt\n5 total\n")

    def test_missing_file(self):
        out = run("a.txt", "nope.txt", "b.txt", cwd=self.dir)
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stderr.strip(), "wordcount: nope.txt: no such file")
        self.assertEqual(out.stdout, "4 a.txt\n3 b.txt\n7 total\n")


if __name__ == "__main__":
    unittest.main()
