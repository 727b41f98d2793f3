"""docs/design.md names what the code defines, and nothing the code does not.

The design document is the interface contract; its tables are written from the code
(`python tests/test_docs_contract.py cli` prints the CLI table from the real argparse
parser). These tests compare them both ways, so a new flag, error class, reason code,
policy key, record field or ``MLSEAL_*`` variable fails here until the contract names it,
and a name the code dropped fails until the contract drops it too:

- every subcommand and option of ``mlseal`` (the parser `mlseal.cli.build_parser` builds)
  is a row of the "CLI" table, and every row is one of them;
- every subclass of `mlseal.errors.Error` is a row of the "Exit codes" table, with the
  exit code the class carries;
- every `mlseal.admission.decision.Reason` code, every policy key
  (`mlseal.admission.policy`) and every field a v1 record writes
  (`mlseal.ledger.record.Record.to_obj`) is named in its table;
- every ``MLSEAL_*`` environment variable the package reads is in the environment table.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DESIGN = REPO / "docs" / "design.md"


# --- reading the design document -------------------------------------------------------------

def section(title: str) -> str:
    """The text under the heading that is exactly ``title`` (any level), up to the next heading."""
    text = DESIGN.read_text()
    m = re.search(rf"^#+ {re.escape(title)}\n", text, re.M)
    assert m is not None, f"docs/design.md has no section {title!r}"
    end = re.compile(r"^#+ ", re.M).search(text, m.end())
    return text[m.end(): end.start() if end else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (header and rule rows dropped)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        if re.fullmatch(r"\|[\s:|-]+\|", line):
            if rows:
                rows.pop()  # the header above the rule
            continue
        cells = re.split(r"(?<!\\)\|", line[1:-1])
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --- the CLI -----------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def commands(parser: argparse.ArgumentParser | None = None,
             prefix: str = "mlseal") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) of every leaf command of ``mlseal``."""
    if parser is None:
        from mlseal.cli import build_parser

        parser = build_parser()
    sub = _subparsers(parser)
    if sub is None:
        yield prefix, parser
        return
    for name, child in sub.choices.items():
        yield from commands(child, f"{prefix} {name}")


def option_name(action: argparse.Action) -> str:
    """How the contract names an argument: its long flag, or a positional's metavar."""
    if action.option_strings:
        return max(action.option_strings, key=len)
    metavar = action.metavar if isinstance(action.metavar, str) else None
    return metavar or str(action.dest).upper()


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction | argparse._VersionAction)]


def code_cli() -> dict[str, set[str]]:
    return {cmd: {option_name(a) for a in arguments(p)} for cmd, p in commands()}


def documented_cli() -> dict[str, set[str]]:
    """Rows ``| `mlseal …` | `--flag …` | … |``; an empty first cell continues the command above."""
    out: dict[str, set[str]] = {}
    command = ""
    for cells in table_rows(section("CLI reference")):
        if len(cells) < 2:
            continue
        first = code_spans(cells[0])
        if first:
            command = first[0]
            out.setdefault(command, set())
        spans = code_spans(cells[1])
        if command and spans:
            out[command].add(spans[0].split(" ")[0].split("=")[0])
    return out


def cli_rows() -> list[tuple[str, str, str, str]]:
    """(command, contract name, shown argument, meaning) of every argument, from the parser."""
    rows = []
    for cmd, p in commands():
        for a in arguments(p):
            name = shown = option_name(a)
            if a.option_strings and a.nargs != 0:
                metavar = a.metavar if isinstance(a.metavar, str) else str(a.dest).upper()
                shown = f"{name} {metavar}"
            notes = []
            if a.required and a.option_strings:
                notes.append("required")
            if isinstance(a, argparse._AppendAction) and "repeatable" not in (a.help or ""):
                notes.append("repeatable")
            helptext = (a.help or "").replace("|", "\\|").replace("%%", "%")
            if notes:
                helptext = f"({', '.join(notes)}) {helptext}".strip()
            rows.append((cmd, name, shown.replace("|", "\\|"), helptext))
    return rows


def markdown_cli() -> str:
    """The CLI table, written from the parser (paste it into the "CLI reference" section)."""
    lines = ["| command | argument | meaning |", "|---|---|---|"]
    last = ""
    for cmd, _name, shown, helptext in cli_rows():
        lines.append(f"| {'`' + cmd + '`' if cmd != last else ''} | `{shown}` | {helptext} |")
        last = cmd
    return "\n".join(lines)


def test_every_cli_command_and_option_is_in_the_contract() -> None:
    code, docs = code_cli(), documented_cli()
    missing = [(cmd, name) for cmd, opts in code.items() for name in sorted(opts - docs.get(cmd, set()))]
    rows = [f"| `{cmd}` | `{shown}` | {helptext} |" for cmd, name, shown, helptext in cli_rows()
            if (cmd, name) in missing]
    assert not missing, (
        "docs/design.md, \"CLI reference\", lacks what the CLI has; add these rows (under their command):\n"
        + "\n".join(rows) + "\n(python tests/test_docs_contract.py cli prints the whole table from the parser)"
    )
    extra = sorted(f"{c} {o}" for c, opts in docs.items() for o in opts - code.get(c, set()))
    extra += sorted(c for c in docs if c not in code)
    assert not extra, "docs/design.md, \"CLI reference\", names what the CLI does not have: " + ", ".join(extra)


# --- exit codes --------------------------------------------------------------------------------

def error_classes() -> dict[str, int]:
    """Qualified name -> exit code of every subclass of `mlseal.errors.Error` in the package."""
    import mlseal
    from mlseal.errors import Error

    for m in pkgutil.walk_packages(mlseal.__path__, "mlseal."):
        importlib.import_module(m.name)
    out: dict[str, int] = {}
    stack = [Error]
    while stack:
        c = stack.pop()
        out[f"{c.__module__}.{c.__qualname__}"] = c.exit_code
        stack.extend(c.__subclasses__())
    return out


def test_every_error_class_is_in_the_exit_code_table_with_its_code() -> None:
    docs: dict[str, str] = {}
    for cells in table_rows(section("Exit codes")):
        spans = code_spans(cells[0]) if cells else []
        if spans and len(cells) >= 2:
            docs[spans[0]] = cells[1].strip()
    code = error_classes()
    short = {name.rsplit(".", 1)[1]: exit_code for name, exit_code in code.items()}
    assert len(short) == len(code), "two error classes share a name; the table names classes by name"
    missing = sorted(set(short) - set(docs))
    assert not missing, f"docs/design.md, \"Exit codes\", lacks the error classes {missing}"
    extra = sorted(set(docs) - set(short))
    assert not extra, f"docs/design.md, \"Exit codes\", names classes the code does not define: {extra}"
    wrong = sorted(f"{n}: code {short[n]}, table {docs[n]}" for n in short if docs[n] != str(short[n]))
    assert not wrong, f"docs/design.md, \"Exit codes\", gives wrong exit codes: {wrong}"


# --- admission reason codes, policy keys --------------------------------------------------------

def test_every_admission_reason_code_is_named() -> None:
    from mlseal.admission.decision import Reason

    named = {s for cells in table_rows(section("Reason codes")) for s in code_spans(cells[0]) if cells}
    assert {r.value for r in Reason} == named


def test_every_policy_key_is_in_the_policy_schema() -> None:
    from mlseal.admission import policy

    named = set()
    for cells in table_rows(section("Admission policy file")):
        for s in code_spans(cells[0]) if cells else []:
            named.add(s.split(":")[0].split(".")[-1])
    keys = set(policy._TOP_KEYS) | set(policy._LOADER_KEYS) | set(policy._EVALUATION_KEYS) | {"url_file"}
    assert keys - named == set(), f"docs/design.md lacks policy keys {sorted(keys - named)}"
    assert named - keys == set(), f"docs/design.md names policy keys the code does not read {sorted(named - keys)}"


# --- record fields -----------------------------------------------------------------------------

def _paths(obj: object, prefix: str = "") -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else k
            if k in ("params", "metrics"):  # free-form maps
                yield path
                continue
            yield path
            yield from _paths(v, path)
    elif isinstance(obj, list):
        for v in obj:
            yield from _paths(v, prefix + "[]")


def record_fields() -> set[str]:
    from mlseal.ledger.record import (
        Component,
        InputRef,
        OutputRef,
        RecordDraft,
        SecretRef,
        Sha256Hex,
        SignerRef,
        Status,
    )

    h = Sha256Hex("ab" * 32)
    rec = RecordDraft(
        stage="train", component=Component(name="c", source_sha256=h, image="i", secret_store="dev"),
        inputs=(InputRef(name="i", uri="u", sha256=h, producer_seq=0),),
        secrets=(SecretRef(path="p", version=1),), status=Status.FAILED, error="e",
    ).complete(seq=1, prev="0" * 64, time="t", signer=SignerRef("s", "k"))
    ok = RecordDraft(stage="train", outputs=(OutputRef(name="o", uri="u", sha256=h, bundle_sha256=h),)).complete(
        seq=1, prev="0" * 64, time="t", signer=SignerRef("s", "k"))
    return set(_paths(rec.to_obj())) | set(_paths(ok.to_obj()))


def test_every_record_field_is_in_the_record_table() -> None:
    named = {s for cells in table_rows(section("Record fields (v1)")) for s in code_spans(cells[0])[:1] if cells}
    code = record_fields()
    assert code - named == set(), f"docs/design.md, \"Record fields (v1)\", lacks {sorted(code - named)}"
    assert named - code == set(), f"docs/design.md, \"Record fields (v1)\", names fields a record never writes: " \
                                  f"{sorted(named - code)}"


# --- environment -------------------------------------------------------------------------------

def read_env_vars() -> set[str]:
    """``MLSEAL_*`` names in the package's source (each one is read from the environment somewhere)."""
    names: set[str] = set()
    for path in (REPO / "mlseal").rglob("*.py"):
        names |= set(re.findall(r"\bMLSEAL_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def test_every_mlseal_environment_variable_is_in_the_contract() -> None:
    named = {s for cells in table_rows(section("Environment")) for s in code_spans(cells[0]) if cells}
    missing = sorted(read_env_vars() - named)
    assert not missing, f"docs/design.md, \"Environment\", lacks {missing}"


@pytest.mark.parametrize("title", ["CLI reference", "Exit codes", "Reason codes", "Admission policy file",
                                   "Record fields (v1)", "Environment"])
def test_the_checked_sections_have_tables(title: str) -> None:
    assert table_rows(section(title)), f"docs/design.md, {title!r}: no table found"


if __name__ == "__main__":  # pragma: no cover - a helper for writing the document
    what = sys.argv[1] if len(sys.argv) > 1 else "cli"
    if what == "cli":
        print(markdown_cli())
    elif what == "errors":
        for name, exit_code in sorted(error_classes().items(), key=lambda kv: (kv[1], kv[0])):
            print(exit_code, name)
    elif what == "record":
        print("\n".join(sorted(record_fields())))
    elif what == "env":
        print("\n".join(sorted(read_env_vars())))
