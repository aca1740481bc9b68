"""A tiny stock keeper."""


class Inventory:
    def __init__(self):
        self._stock = {}

    def add(self, sku, qty):
        if not isinstance(qty, int) or qty <= 0:
            raise ValueError("qty must be a positive int")
        self._stock[sku] = self._stock.get(sku, 0) + qty
        return self._stock[sku]

    def count(self, sku):
        return self._stock.get(sku, 0)

    def skus(self):
        return sorted(self._stock)
