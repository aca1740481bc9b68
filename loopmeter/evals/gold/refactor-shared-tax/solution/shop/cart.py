"""A shopping cart."""

from shop.tax import apply_tax


class Cart:
    def __init__(self):
        self.lines = []

    def add(self, name, price_cents, category="default", qty=1):
        self.lines.append((name, price_cents, category, qty))

    def total_cents(self):
        return sum(apply_tax(price * qty, category) for _name, price, category, qty in self.lines)
