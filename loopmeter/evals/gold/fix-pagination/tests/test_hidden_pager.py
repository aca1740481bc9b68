import unittest

from pager import page_count, paginate


class PaginateTest(unittest.TestCase):
    def test_first_page(self):
        self.assertEqual(paginate(list(range(10)), 1, 3), [0, 1, 2])

    def test_last_partial_page(self):
        self.assertEqual(paginate(list(range(10)), 4, 3), [9])

    def test_past_the_end(self):
        self.assertEqual(paginate(list(range(10)), 5, 3), [])

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            paginate([1], 0, 3)
        with self.assertRaises(ValueError):
            paginate([1], 1, 0)

    def test_page_count_unchanged(self):
        self.assertEqual(page_count(list(range(10)), 3), 4)


if __name__ == "__main__":
    unittest.main()
