"""infra/docker, statically (no Docker engine here): digest-pinned base, hash-locked
dependencies that cover pyproject's, non-root user, `mlseal` entrypoint."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import cast

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "infra" / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
#: the image's platform: CPython 3.11 on linux x86_64 (packaging types the environment as a
#: TypedDict whose values are all str; Marker.evaluate takes a plain str mapping)
TARGET: dict[str, str] = {
    **cast("dict[str, str]", default_environment()), "python_version": "3.11", "python_full_version": "3.11.0",
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
    "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def parse_lock(path: Path) -> dict[str, tuple[Version, list[str], list[str]]]:
    """name -> (version, hashes, via) from a pip-compile/uv --generate-hashes file."""
    out: dict[str, tuple[Version, list[str], list[str]]] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", "\n" + text):
        block = block.strip("\n")
        if not block or block.startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s\\;]+)", block)
        assert m, f"{path.name}: not a pinned requirement: {block.splitlines()[0]!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        # "# via a, b" on one line, or "# via" followed by "#   a" lines
        via = re.findall(r"#\s+via[ \t]+(\S.*)", block) + re.findall(r"^\s*#[ \t]{3,}(\S.*)$", block, re.M)
        via_names = [v.strip() for line in via for v in line.split(",")]
        out[canonicalize_name(m.group(1))] = (Version(m.group(2)), hashes, via_names)
    return out


def test_lockfile_pins_every_package_with_hashes() -> None:
    lock = parse_lock(DOCKER / "requirements.lock")
    assert len(lock) > 20
    for name, (_, hashes, _) in lock.items():
        assert hashes, f"{name} has no --hash"
    text = (DOCKER / "requirements.lock").read_text()
    assert "--index-url" not in text and "-e " not in text and "git+" not in text


def test_lockfile_covers_every_pyproject_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = parse_lock(DOCKER / "requirements.lock")
    for spec in project["project"]["dependencies"]:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject) is not in requirements.lock: regenerate it"
        assert req.specifier.contains(lock[name][0], prereleases=True), f"{name} {lock[name][0]} vs {req.specifier}"
        for extra in req.extras:  # e.g. psycopg[binary]
            dist_reqs = [Requirement(r) for r in _requires(name, lock[name][0])]
            for dr in dist_reqs:
                if dr.marker is not None and dr.marker.evaluate({**TARGET, "extra": extra}) and \
                        not dr.marker.evaluate({**TARGET, "extra": ""}):
                    assert canonicalize_name(dr.name) in lock, f"{name}[{extra}] needs {dr.name}"


def _requires(name: str, version: Version) -> list[str]:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return []
    return list(dist.requires or []) if Version(dist.version) == version else []


def test_lockfile_is_closed_under_dependencies() -> None:
    """Every package the lock says pulled another in is locked too, and for every locked
    package installed here at the locked version, its own requirements are locked."""
    lock = parse_lock(DOCKER / "requirements.lock")
    for name, (_, _, via) in lock.items():
        for parent in via:
            parent = re.sub(r"\s*\(.*\)$", "", parent)
            assert parent == "mlseal" or canonicalize_name(parent) in lock, f"{name} via unlocked {parent}"
    checked = 0
    for name, (version, _, _) in lock.items():
        for spec in _requires(name, version):
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({**TARGET, "extra": ""}):
                continue
            checked += 1
            assert canonicalize_name(req.name) in lock, f"{name} {version} requires {req.name}, not locked"
    assert checked > 0


def test_build_backend_is_hash_locked() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = parse_lock(DOCKER / "build-requirements.lock")
    for spec in project["build-system"]["requires"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock and req.specifier.contains(lock[name][0]) and lock[name][1]


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m.group(0).lstrip().startswith("#")]


def test_base_image_is_pinned_by_digest() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))
    froms = [arg for op, arg in _instructions() if op == "FROM"]
    assert froms
    for f in froms:
        image = f.split()[0]
        image = args.get(image.strip("${}"), image) if image.startswith("${") else image
        assert DIGEST.search(image), f"FROM {f}: not pinned by digest"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim@sha256:")


def test_every_pip_install_is_hash_checked_or_offline() -> None:
    runs = [arg for op, arg in _instructions() if op == "RUN"]
    pip = [r for r in runs if "pip install" in r or "pip wheel" in r]
    assert pip
    for cmd in pip:
        for part in re.split(r"&&", cmd):
            if "pip install" in part or "pip wheel" in part:
                assert "--require-hashes" in part or "--no-index" in part, part
                if "--require-hashes" not in part:
                    assert "--no-deps" in part, part
    for lock in ("requirements.lock", "build-requirements.lock"):
        assert f"infra/docker/{lock}" in DOCKERFILE


def test_runs_as_non_root_with_the_mlseal_entrypoint() -> None:
    ins = _instructions()
    final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM"):]
    users = [arg for op, arg in final if op == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert [arg for op, arg in final if op == "ENTRYPOINT"] == ['["mlseal"]']


@pytest.mark.parametrize("needle", ["python:3.11-slim", "public"])
def test_digest_source_is_documented(needle: str) -> None:
    comment = "\n".join(line for line in DOCKERFILE.splitlines() if line.startswith("#"))
    assert needle in comment and "digest" in comment.lower()
