"""A tiny stock keeper."""


class OutOfStock(Exception):
    """Asked to remove more than is in stock."""


class Inventory:
    def __init__(self):
        self._stock = {}

    def add(self, sku, qty):
        if not isinstance(qty, int) or qty <= 0:
            raise ValueError("qty must be a positive int")
        self._stock[sku] = self._stock.get(sku, 0) + qty
        return self._stock[sku]

    def remove(self, sku, qty):
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            raise ValueError("qty must be a positive int")
        have = self._stock.get(sku, 0)
        if qty > have:
            raise OutOfStock(f"{sku}: have {have}, asked for {qty}")
        left = have - qty
        if left:
            self._stock[sku] = left
        else:
            del self._stock[sku]
        return left

    def count(self, sku):
        return self._stock.get(sku, 0)

    def skus(self):
        return sorted(self._stock)
