"""Test-only helpers for pyqmem: history checking, message framing, child workers.

Importable as ``helpers`` because tests/conftest.py puts tests/ first on sys.path
and on PYTHONPATH (so spawn/forkserver children and subprocesses find it too).
"""
