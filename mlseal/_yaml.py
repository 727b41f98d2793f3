"""YAML as mlseal reads it: safe, and a mapping that names a key twice is refused.

PyYAML keeps the last of two equal keys; Kubernetes' decoder refuses such a document and
other clients may keep the first, so a manifest, policy or trust file that names
``image:`` or ``signers:`` twice means different things to different readers. Merge keys
(``<<: *anchor``) still work: the keys a mapping writes itself override the merged ones,
as YAML specifies.

    >>> load_all("a: 1\\nb: 2\\n")
    [{'a': 1, 'b': 2}]
    >>> load_all("a: 1\\na: 2\\n")
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: while constructing a mapping
    ...
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["StrictLoader", "load", "load_all"]

_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(_BASE):  # type: ignore[valid-type, misc]
    """A safe loader (in C when available) that refuses a mapping with a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base class refuses it with its own message
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found the key {key!r} twice (first {first.start_mark.line + 1}:{first.start_mark.column + 1}); "
                    "a repeated key means different things to different readers, so name it once",
                    key_node.start_mark,
                )
        out: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return out


def load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a safe loader)


def load_all(text: str | bytes) -> list[Any]:
    return list(yaml.load_all(text, Loader=StrictLoader))
