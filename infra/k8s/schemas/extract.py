"""Write the strict JSON Schemas in this directory from upstream CRDs (a maintainer tool).

    python infra/k8s/schemas/extract.py CRD.yaml VERSION SOURCE [MANIFEST.yaml ...]

Takes the CRD's openAPIV3Schema for VERSION and keeps only the fields that the given
built manifests use (all of them, if no manifest is given), with
``additionalProperties: false`` on every object that has named properties, so a field
the upstream CRD does not define, or one we did not review, fails validation. SOURCE
(upstream repository, file, version) is recorded in ``$comment``. The result goes to
<group>_<kind>_<version>.json here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KEEP = ("type", "enum", "pattern", "format", "required", "minimum", "maximum", "minLength", "maxLength",
        "minItems", "maxItems", "x-kubernetes-int-or-string", "nullable", "description")


def _used(objs: list[Any]) -> Any:
    """Union of the shapes of the given values: dicts of keys, lists of items."""
    shape: dict[str, Any] = {}
    for o in objs:
        if isinstance(o, dict):
            for k, v in o.items():
                shape.setdefault(k, []).append(v)
        elif isinstance(o, list):
            shape.setdefault("[]", []).extend(o)
    return {k: _used(v) for k, v in shape.items()}


def _prune(schema: dict[str, Any], used: dict[str, Any] | None, path: str) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k in KEEP}
    if "description" in out:
        out["description"] = out["description"].split("\n")[0][:200]
    if "anyOf" in schema:
        out["anyOf"] = [{k: v for k, v in s.items() if k in KEEP} for s in schema["anyOf"]]
    props = schema.get("properties")
    if props is not None:
        names = sorted(props) if used is None else sorted(k for k in used if k != "[]")
        unknown = [n for n in names if n not in props]
        if unknown:
            raise SystemExit(f"{path}: {unknown} not defined by the upstream CRD")
        out["properties"] = {n: _prune(props[n], None if used is None else used[n], f"{path}.{n}") for n in names}
        out["additionalProperties"] = False
        if "required" in schema:
            out["required"] = schema["required"]
    elif isinstance(schema.get("additionalProperties"), dict):
        # a map: keep the value schema as upstream defines it
        out["additionalProperties"] = _prune(schema["additionalProperties"], None, f"{path}.*")
    if "items" in schema:
        out["items"] = _prune(schema["items"], None if used is None else used.get("[]", {}), f"{path}[]")
    return out


def main(argv: list[str]) -> None:
    crd_file, version, source, *manifests = argv
    crd = yaml.safe_load(Path(crd_file).read_text())
    kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
    (ver,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    docs = [d for m in manifests for d in yaml.safe_load_all(Path(m).read_text())
            if d and d.get("kind") == kind and d.get("apiVersion") == f"{group}/{version}"]
    spec_schema = ver["schema"]["openAPIV3Schema"]["properties"]["spec"]
    used = _used([d["spec"] for d in docs]) if manifests else None
    spec = _prune(spec_schema, used, "spec")
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"{kind} {group}/{version}, restricted to the fields mlseal uses, from the "
                    f"openAPIV3Schema of {source}. Regenerate with infra/k8s/schemas/extract.py.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": f"{group}/{version}"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": spec,
        },
    }
    target = HERE / f"{group}_{kind}_{version}.json"
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(target)


if __name__ == "__main__":
    main(sys.argv[1:])
