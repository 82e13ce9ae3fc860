"""Helpers shared by the test suites (importable as `support` from any test: tests/conftest.py puts `tests/` on
sys.path), so that a fake server or a tiny-model recipe is written once."""
