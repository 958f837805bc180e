import unittest
from textkit.core import shout


class TestShout(unittest.TestCase):
    def test_shout(self):
        self.assertEqual(shout('hi'), 'HI')
