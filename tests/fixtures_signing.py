"""Pytest fixtures for the signing area (loaded by conftest.py)."""
