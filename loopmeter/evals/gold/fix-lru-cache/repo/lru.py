"""A least-recently-used cache."""


class LRUCache:
    def __init__(self, capacity):
        self.capacity = capacity
        self._data = {}
        self._order = []

    def get(self, key, default=None):
        return self._data.get(key, default)

    def put(self, key, value):
        if len(self._order) >= self.capacity:
            oldest = self._order.pop(0)
            del self._data[oldest]
        self._data[key] = value
        if key not in self._order:
            self._order.append(key)

    def __len__(self):
        return len(self._data)

    def keys(self):
        return list(self._order)
