import unittest

from stack import EmptyStack, Stack


class StackTest(unittest.TestCase):
    def test_push_and_len(self):
        s = Stack()
        s.push(1)
        s.push(2)
        self.assertEqual(len(s), 2)

    def test_pop_is_lifo(self):
        s = Stack([1, 2, 3])
        self.assertEqual(s.pop(), 3)
        self.assertEqual(s.pop(), 2)

    def test_empty_raises_empty_stack(self):
        s = Stack()
        with self.assertRaises(EmptyStack):
            s.pop()
        with self.assertRaises(EmptyStack):
            s.peek()


if __name__ == "__main__":
    unittest.main()
