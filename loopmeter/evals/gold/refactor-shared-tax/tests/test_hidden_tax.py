import pathlib
import re
import unittest

from shop.cart import Cart
from shop.invoice import invoice_line


class TaxRefactorTest(unittest.TestCase):
    def test_tax_module(self):
        from shop import tax

        self.assertEqual(tax.RATES, {"food": 7, "books": 7, "default": 19})
        self.assertEqual(tax.apply_tax(1000, "food"), 1070)
        self.assertEqual(tax.apply_tax(999, "default"), 1189)
        self.assertEqual(tax.apply_tax(100, "unknown"), 119)

    def test_behaviour_unchanged(self):
        cart = Cart()
        cart.add("bread", 250, "food", qty=2)
        cart.add("pen", 199)
        self.assertEqual(cart.total_cents(), 535 + 237)
        line = invoice_line("book", 1500, "books")
        self.assertEqual(line, {"description": "book", "net": 1500, "gross": 1605, "rate": 7})

    def test_no_duplicated_rate_tables(self):
        for name in ("cart.py", "invoice.py"):
            text = pathlib.Path("shop", name).read_text()
            self.assertIsNone(re.search(r"\b19\b", text), f"{name} still has its own rate table")
            self.assertIn("tax", text)


if __name__ == "__main__":
    unittest.main()
