"""A LIFO stack."""


class EmptyStack(Exception):
    pass


class Stack:
    def __init__(self, items=()):
        self._items = list(items)

    def push(self, item):
        self._items.append(item)

    def pop(self):
        if not self._items:
            raise EmptyStack("pop from an empty stack")
        return self._items.pop()

    def peek(self):
        if not self._items:
            raise EmptyStack("peek at an empty stack")
        return self._items[-1]

    def __len__(self):
        return len(self._items)
