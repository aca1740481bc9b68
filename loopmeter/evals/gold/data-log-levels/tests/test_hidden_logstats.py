import unittest

from logstats import count_levels

LOG = """2024-05-01T13:04:05Z INFO started
2024-05-01T13:59:59Z ERROR disk full

2024-05-01T14:00:00Z INFO tick
2024-05-01T14:00:01Z WARN slow request id=7
garbage line
2024-05-01T14:00:02Z TRACE not a level
2024-13-01 INFO bad timestamp
2024-05-01T14:30:00Z INFO
2024-05-01T14:31:00Z
"""


class LogStatsTest(unittest.TestCase):
    def test_counts(self):
        got = count_levels(LOG.splitlines(keepends=True))
        self.assertEqual(got["by_hour"], {
            "2024-05-01T13": {"INFO": 1, "ERROR": 1},
            "2024-05-01T14": {"INFO": 2, "WARN": 1},
        })
        self.assertEqual(got["malformed"], 4)

    def test_empty(self):
        self.assertEqual(count_levels([]), {"by_hour": {}, "malformed": 0})


if __name__ == "__main__":
    unittest.main()
