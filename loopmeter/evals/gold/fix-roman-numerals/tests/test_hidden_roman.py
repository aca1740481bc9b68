import unittest

from roman import from_roman, to_roman


class RomanTest(unittest.TestCase):
    def test_known_values(self):
        cases = {1: "I", 4: "IV", 9: "IX", 14: "XIV", 40: "XL", 90: "XC", 400: "CD",
                 944: "CMXLIV", 1994: "MCMXCIV", 2024: "MMXXIV", 3999: "MMMCMXCIX"}
        for n, s in cases.items():
            self.assertEqual(to_roman(n), s)
            self.assertEqual(from_roman(s), n)

    def test_round_trip(self):
        for n in range(1, 4000):
            self.assertEqual(from_roman(to_roman(n)), n)

    def test_rejects(self):
        for n in (0, 4000, -3):
            with self.assertRaises(ValueError):
                to_roman(n)
        for s in ("IIII", "IC", "", "iv", "VX", "MMMM", "ABC"):
            with self.assertRaises(ValueError, msg=s):
                from_roman(s)


if __name__ == "__main__":
    unittest.main()
