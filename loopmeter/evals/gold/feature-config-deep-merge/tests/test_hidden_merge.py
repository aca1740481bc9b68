import copy
import unittest

from config import DEFAULTS, merge, merge_all


class MergeTest(unittest.TestCase):
    def test_nested_keys_keep_siblings(self):
        got = merge(DEFAULTS, {"server": {"port": 9000}})
        self.assertEqual(got["server"], {"host": "127.0.0.1", "port": 9000})
        self.assertEqual(got["log"], {"level": "info"})

    def test_lists_replace_and_none_deletes(self):
        got = merge({"a": [1, 2], "b": {"c": 1, "d": 2}}, {"a": [3], "b": {"d": None}})
        self.assertEqual(got, {"a": [3], "b": {"c": 1}})

    def test_inputs_not_mutated(self):
        base = {"x": {"y": [1]}}
        over = {"x": {"z": {"w": 1}}}
        base_copy, over_copy = copy.deepcopy(base), copy.deepcopy(over)
        got = merge(base, over)
        got["x"]["y"].append(2)
        got["x"]["z"]["w"] = 5
        self.assertEqual(base, base_copy)
        self.assertEqual(over, over_copy)

    def test_merge_all(self):
        self.assertEqual(merge_all(), {})
        got = merge_all({"a": 1, "n": {"x": 1}}, {"n": {"y": 2}}, {"a": 3, "n": {"x": None}})
        self.assertEqual(got, {"a": 3, "n": {"y": 2}})


if __name__ == "__main__":
    unittest.main()
