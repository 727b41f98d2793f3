"""Pytest fixtures for the ledger area (loaded by conftest.py)."""
