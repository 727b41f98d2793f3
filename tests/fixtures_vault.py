"""Pytest fixtures for the vault area (loaded by conftest.py)."""
