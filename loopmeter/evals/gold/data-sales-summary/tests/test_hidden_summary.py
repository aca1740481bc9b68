import json
import os
import subprocess
import sys
import tempfile
import unittest

CSV = """date,region,product,units,unit_price
2024-02-01,west,bolt,10,0.15
2024-02-01,west,nut,10,0.05
2024-02-02,east,nut,3,0.05
2024-02-02,east,,2,1.00
2024-02-03,,bolt,1,0.15
2024-02-03,east,bolt,two,0.15
2024-02-04,east,washer,1,abc
"""


class SummaryTest(unittest.TestCase):
    def run_on(self, text):
        d = tempfile.mkdtemp()
        src, dst = os.path.join(d, "s.csv"), os.path.join(d, "out.json")
        with open(src, "w") as f:
            f.write(text)
        out = subprocess.run([sys.executable, os.path.abspath("summarize.py"), src, dst],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(dst) as f:
            return json.load(f)

    def test_sample_file(self):
        got = self.run_on(open("sales.csv").read())
        self.assertEqual(got["regions"], {"north": {"units": 5, "revenue": 27.5},
                                          "south": {"units": 5, "revenue": 20.0}})
        self.assertEqual(got["top_product"], "widget")
        self.assertEqual(got["skipped_rows"], 2)

    def test_ties_and_skips(self):
        got = self.run_on(CSV)
        self.assertEqual(got["regions"]["west"], {"units": 20, "revenue": 2.0})
        self.assertEqual(got["regions"]["east"], {"units": 5, "revenue": 2.15})
        self.assertEqual(got["top_product"], "nut")
        self.assertEqual(got["skipped_rows"], 3)


if __name__ == "__main__":
    unittest.main()
