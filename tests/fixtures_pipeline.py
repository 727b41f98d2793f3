"""Pytest fixtures for the pipeline area (loaded by conftest.py)."""
