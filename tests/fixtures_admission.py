"""Pytest fixtures for the admission area (loaded by conftest.py)."""
