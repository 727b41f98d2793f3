"""Compile components and pipelines to KFP IR YAML, refusing secret literals.

KFP treats parameters as public: they are stored in the compiled spec, in the run's
metadata and in the UI. So mlseal passes secrets only by reference, and this module
fails compilation when a secret-like parameter carries a literal value:

- a parameter whose name says "secret" (password, token, credential, api key, private,
  HMAC or data key, DSN, ...) must end in ``_path`` (a Vault KV path such as
  ``mlseal/anonymize/hmac``), ``_name`` (a Transit key name such as ``mlseal-data``) or
  ``_ref`` (either), and its value must look like that reference;
- any other secret-like parameter may have no literal value at all.

    >>> check_no_secret_literals({"root": {"inputDefinitions": {"parameters": {
    ...     "hmac_key_path": {"defaultValue": "mlseal/anonymize/hmac"}}}}})
    >>> check_no_secret_literals({"root": {"inputDefinitions": {"parameters": {
    ...     "db_password": {"defaultValue": "hunter2"}}}}})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    SecretLiteralError: root.inputDefinitions.parameters.db_password: ...

Regenerate the shipped component YAML with ``python -m mlseal.components.compile``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from mlseal.secrets.refs import SecretLiteralError, check_parameter, is_secret_like

__all__ = ["SecretLiteralError", "check_no_secret_literals", "check_parameter", "compile_checked", "is_secret_like"]

#: where the shipped component YAML lives
YAML_DIR = Path(__file__).resolve().parent / "yaml"


def _literals(node: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    """(where, parameter name, literal value) for every parameter default and constant."""
    if isinstance(node, Mapping):
        params = node.get("parameters")
        if isinstance(params, Mapping):
            for name, spec in params.items():
                if not isinstance(spec, Mapping):
                    continue
                if "defaultValue" in spec:
                    yield f"{where}.parameters.{name}", str(name), spec["defaultValue"]
                runtime = spec.get("runtimeValue")
                if isinstance(runtime, Mapping) and "constant" in runtime:
                    yield f"{where}.parameters.{name}", str(name), runtime["constant"]
        for key, child in node.items():
            if key != "parameters":
                yield from _literals(child, f"{where}.{key}" if where else str(key))


def check_no_secret_literals(spec: Mapping[str, Any]) -> None:
    """Check a compiled KFP IR document (as loaded from YAML)."""
    for where, name, value in _literals(spec, ""):
        check_parameter(name, value, where)


def compile_checked(obj: Any, path: str | Path | None = None, **compile_kwargs: Any) -> str:
    """Compile a component or pipeline to IR YAML text; refuse secret literals; write `path`."""
    from kfp import compiler

    with tempfile.TemporaryDirectory(prefix="mlseal-compile-") as tmp:
        out = Path(tmp) / "spec.yaml"
        compiler.Compiler().compile(obj, str(out), **compile_kwargs)
        text = out.read_text()
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, Mapping):
            check_no_secret_literals(doc)
    if path is not None:
        Path(path).write_text(text)
    return text


def component_yaml(name: str) -> str:
    from mlseal.components import COMPONENTS

    return compile_checked(COMPONENTS[name])


def write_component_yaml(directory: Path = YAML_DIR) -> list[Path]:
    from mlseal.components import COMPONENTS

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in COMPONENTS:
        p = directory / f"{name}.yaml"
        p.write_text(component_yaml(name))
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else YAML_DIR
    for p in write_component_yaml(directory):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
