import unittest

import inventory
from inventory import Inventory


class RemoveTest(unittest.TestCase):
    def setUp(self):
        self.inv = Inventory()
        self.inv.add("apple", 5)

    def test_remove_lowers_stock(self):
        self.assertEqual(self.inv.remove("apple", 2), 3)
        self.assertEqual(self.inv.count("apple"), 3)

    def test_removing_last_unit_forgets_sku(self):
        self.assertEqual(self.inv.remove("apple", 5), 0)
        self.assertEqual(self.inv.skus(), [])

    def test_out_of_stock(self):
        self.assertTrue(issubclass(inventory.OutOfStock, Exception))
        with self.assertRaises(inventory.OutOfStock):
            self.inv.remove("apple", 6)
        with self.assertRaises(inventory.OutOfStock):
            self.inv.remove("pear", 1)
        self.assertEqual(self.inv.count("apple"), 5)

    def test_bad_qty(self):
        for qty in (0, -1, 1.5, "2"):
            with self.assertRaises(ValueError):
                self.inv.remove("apple", qty)


if __name__ == "__main__":
    unittest.main()
