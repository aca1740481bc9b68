import unittest

from stack import EmptyStack, Stack


class HiddenStackTest(unittest.TestCase):
    def test_lifo_and_peek(self):
        s = Stack([1, 2, 3])
        self.assertEqual(s.peek(), 3)
        self.assertEqual(s.pop(), 3)
        self.assertEqual(s.pop(), 2)
        self.assertEqual(len(s), 1)

    def test_empty(self):
        for op in (Stack().pop, Stack().peek):
            with self.assertRaises(EmptyStack):
                op()


if __name__ == "__main__":
    unittest.main()
