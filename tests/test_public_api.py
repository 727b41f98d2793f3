"""Every public module says what it exports: `__all__`, each name in it defined there.

Private modules (a leading underscore in the module or package name) are internal; a
public module's `__all__` is its contract with other packages and with users (mypy
strict, `implicit_reexport = false`, holds importers to it).
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import mlseal


def public_modules() -> list[str]:
    names = ["mlseal"]
    for info in pkgutil.walk_packages(mlseal.__path__, "mlseal."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def test_the_walk_finds_the_packages() -> None:
    found = public_modules()
    expected = {"mlseal.ledger.verified", "mlseal.admission.workload", "mlseal.export.pack", "mlseal.sensitive"}
    assert expected <= set(found)
    assert not [m for m in found if "._" in m]


@pytest.mark.parametrize("name", public_modules())
def test_public_module_declares_all_and_defines_it(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__: list what other modules may import"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_pure_ledger_modules_load_without_storage_or_signing() -> None:
    """`import mlseal.ledger.merkle` (RFC 9162 hashing) loads neither the storage backends
    nor the signing code and its cryptography modules: `Ledger` is named lazily."""
    import subprocess
    import sys

    code = ("import sys, mlseal.ledger.merkle; "
            "print(sorted(m for m in sys.modules if m.startswith(('mlseal', 'cryptography', 'psycopg'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['mlseal', 'mlseal.errors', 'mlseal.ledger', 'mlseal.ledger.merkle']"
