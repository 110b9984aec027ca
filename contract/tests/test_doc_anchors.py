"""docs/DATA_CONTRACT.md: every section the code cites exists, and its example runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fleetcast.contract import validate as validate_module

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "DATA_CONTRACT.md"
COMPONENTS = ("contract", "trainer", "exporter", "appliance", "dashboard")

_CITED = re.compile(r"DATA_CONTRACT\.md#([\w-]+)")
_SEE_CALL = re.compile(r"""_see\(\s*["']([\w-]+)["']\s*\)""")
_ISSUE_RULE = re.compile(r"""Issue\(\s*["']([\w-]+)["']""")
_RULE_LITERAL = re.compile(r"""["']((?:model|valid)-[a-z-]+)["']""")


def github_slugs(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of ``markdown`` (duplicates get -1, -2…)."""
    slugs: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            continue
        text = re.sub(r"[`*_]{2,}|`", "", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def cited_anchors() -> dict[str, set[str]]:
    """Anchor -> files citing it, over every component's source."""
    cited: dict[str, set[str]] = {}
    for component in COMPONENTS:
        for path in (ROOT / component / "src").rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            anchors = set(_CITED.findall(text))
            if path.parent.name == "contract":
                anchors |= set(_SEE_CALL.findall(text)) | set(_ISSUE_RULE.findall(text))
                anchors |= set(_RULE_LITERAL.findall(text))
            for anchor in anchors:
                cited.setdefault(anchor, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_slugs_follow_github():
    assert github_slugs("## States\n### server_name\n## UTC timestamps\n## States\n") == {
        "states",
        "server_name",
        "utc-timestamps",
        "states-1",
    }


def test_doc_anchors():
    slugs = github_slugs(DOC.read_text(encoding="utf-8"))
    cited = cited_anchors()
    assert {"value-ranges", "server-ids", "model-states", "valid-profiles"} <= set(cited)
    missing = {a: sorted(files) for a, files in cited.items() if a not in slugs}
    assert missing == {}, f"cited sections missing from {DOC.name}: {missing}"


def test_every_validator_rule_has_a_section():
    slugs = github_slugs(DOC.read_text(encoding="utf-8"))
    assert set(validate_module._RULE_ORDER) <= slugs


def test_doc_states_version():
    text = DOC.read_text(encoding="utf-8")
    from fleetcast.contract import CONTRACT_VERSION

    assert f"**Contract version: {CONTRACT_VERSION}**" in text
    assert f"| {CONTRACT_VERSION} |" in text  # a changelog entry for this version


@pytest.mark.parametrize("block", [0])
def test_doc_example_runs(block):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[block]
    exec(compile(code, str(DOC), "exec"), {})


_SKIP_DIRS = {".git", ".venv", ".venv-appliance", "training", "models", "node_modules", "results"}
_TEXT_SUFFIXES = {".md", ".py", ".sh", ".env", ".service", ".toml", ".cfg", ".txt", ""}
_DOC_REF = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md)#([\w-]+)")


def _project_texts() -> list[Path]:
    """The checkout's own text files (no virtualenvs, generated data or caches)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "__"))]
        found += [Path(folder, f) for f in files if Path(f).suffix in _TEXT_SUFFIXES]
    return found


def _resolve(source: Path, ref: str) -> Path | None:
    """The Markdown file ``ref`` names, relative to the citing file, the root or docs/."""
    for base in (source.parent, ROOT, ROOT / "docs"):
        candidate = (base / ref).resolve()
        if candidate.is_file():
            return candidate
    return None


def test_every_cited_section_of_every_doc_exists():
    """``<file>.md#<anchor>`` anywhere in the project (docs, error messages, comments, unit
    files) names a heading that exists: the "see" part of an error must lead somewhere."""
    slugs: dict[Path, set[str]] = {}
    broken = []
    checked = 0
    for source in _project_texts():
        for lineno, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            for m in _DOC_REF.finditer(line):
                ref, anchor = m.groups()
                if re.search(r"https?://\S*$", line[: m.start()]):
                    continue  # a web address, not a file of this project
                target = _resolve(source, ref)
                where = f"{source.relative_to(ROOT)}:{lineno}"
                if target is None:
                    broken.append(f"{where}: {ref} does not exist")
                    continue
                if target not in slugs:
                    slugs[target] = github_slugs(target.read_text(encoding="utf-8"))
                checked += 1
                if anchor not in slugs[target]:
                    broken.append(f"{where}: {ref}#{anchor} has no such heading")
    assert checked > 200  # the scan found the project's references
    assert broken == []
