import unittest

from durations import parse_duration


class DurationTest(unittest.TestCase):
    def test_combinations(self):
        cases = {"1h30m": 5400, "45s": 45, "2h": 7200, "1h5s": 3605, "90m": 5400,
                 "1h2m3s": 3723, "10m10s": 610, " 3m ": 180}
        for text, seconds in cases.items():
            self.assertEqual(parse_duration(text), seconds, text)

    def test_rejects_garbage(self):
        for text in ["", "abc", "5x", "3s2m", "h", "1h30", "  "]:
            with self.assertRaises(ValueError, msg=text):
                parse_duration(text)


if __name__ == "__main__":
    unittest.main()
