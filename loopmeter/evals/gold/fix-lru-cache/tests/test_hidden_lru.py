import unittest

from lru import LRUCache


class LRUTest(unittest.TestCase):
    def test_get_refreshes(self):
        c = LRUCache(2)
        c.put("a", 1)
        c.put("b", 2)
        self.assertEqual(c.get("a"), 1)
        c.put("c", 3)
        self.assertEqual(c.keys(), ["a", "c"])
        self.assertIsNone(c.get("b"))

    def test_put_existing_refreshes_without_evicting(self):
        c = LRUCache(2)
        c.put("a", 1)
        c.put("b", 2)
        c.put("a", 10)
        self.assertEqual(len(c), 2)
        self.assertEqual(c.keys(), ["b", "a"])
        c.put("c", 3)
        self.assertEqual(c.keys(), ["a", "c"])
        self.assertEqual(c.get("a"), 10)

    def test_missing_default_and_capacity(self):
        c = LRUCache(1)
        self.assertEqual(c.get("x", 7), 7)
        with self.assertRaises(ValueError):
            LRUCache(0)

    def test_many_operations(self):
        c = LRUCache(3)
        for i in range(10):
            c.put(i, i * i)
            c.get(0)
        self.assertEqual(c.keys(), [8, 9, 0])


if __name__ == "__main__":
    unittest.main()
