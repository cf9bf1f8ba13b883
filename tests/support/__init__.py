"""Helpers shared by the test suite (kept out of conftest.py so they can be imported and tested)."""
