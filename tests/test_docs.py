"""The documentation quotes what the committed files say, and its references resolve.

- Every generated block in README.md, USAGE_GUIDE.md and docs/*.md is what ``python -m
  diru_fast.docs`` produces from the committed result files (a hand-edited or stale number fails).
- No result number is typed by hand outside those blocks in README.md and docs/*.md: ratios
  (``1.29×``), percentages, durations in ms/µs and p-values count; fenced and inline code, numbers
  after ``≤ ≥ < > ~`` (targets, rules, approximations) and the derived constants of ``DERIVED`` do
  not.
- Every relative link and heading anchor in those files resolves, and every ``docs/THEORY.md §N``
  cited in code, tests and docs names a section of docs/THEORY.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from diru_fast import docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = [p.relative_to(ROOT).as_posix() for p in docs.doc_files(ROOT)]
CHECKED_FOR_NUMBERS = [p for p in DOCS if p != "USAGE_GUIDE.md"]  # the guide's numbers: its owners'

# Constants that follow from the equations, not from a measurement: (file, text, why).
DERIVED: List[Tuple[str, str, str]] = [
    ("README.md", "1.25×", "5d² vs 4d² multiply-adds per step (THEORY §3.1)"),
    ("docs/PERFORMANCE.md", "1.25×", "5d² vs 4d² multiply-adds per step (THEORY §3.1)"),
    ("docs/PERFORMANCE.md", "2×", "the shared VM's drift, why rounds are paired (a caveat, not a result)"),
    ("docs/THEORY.md", "1.25×", "15d² vs 12d² and 5d² vs 4d² (§3.1)"),
    ("docs/THEORY.md", "1.67×", "15d² vs 9d² (§3.1)"),
    ("docs/THEORY.md", "1.2×", "18d² vs 15d² with time decay (§3.1)"),
    ("docs/THEORY.md", "1.3%", "3kd vs 15d² at d=64, k=4 (§3.1)"),
]
CONVENTIONS = {"95%", "80%"}  # the confidence level and the power the rules use

RESULT_NUMBER = re.compile(r"""
      (?<![\w.])[+−-]?\d+(?:\.\d+)?×                # a ratio: 1.29×
    | ×\d+(?:\.\d+)?(?!\w)                         # a factor: ×4.6
    | (?<![\w.])[+−-]?\d+(?:\.\d+)?\s?%            # a percentage
    | (?<![\w.])\d+(?:\.\d+)?\s?(?:ms|µs)\b        # a duration
    | \bp\s?(?:=\s?)?0\.\d+                        # a p-value: p 0.012, p = 0.37
""", re.X)


def _without_blocks_and_code(text: str) -> List[Tuple[int, str]]:
    """(line number, line) of the prose: generated blocks, fenced and indented code and inline code
    removed."""
    spans = {i for _, _, b, e in docs.blocks(text) for i in range(b, e + 1)}
    out, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or i in spans or line.startswith("    "):
            continue
        out.append((i + 1, re.sub(r"`[^`]*`", "", line)))
    return out


def hand_typed_numbers(path: str, text: str) -> List[str]:
    allowed = {t for f, t, _ in DERIVED if f == path} | CONVENTIONS
    found = []
    for no, line in _without_blocks_and_code(text):
        for m in RESULT_NUMBER.finditer(line):
            before = line[:m.start()].rstrip()
            token = m.group(0).replace(" ", "")
            if (before and before[-1] in "≤≥<>~") or token.lstrip("+−-") in allowed:
                continue
            found.append(f"{path}:{no}: {m.group(0)!r} in: {line.strip()[:100]}")
    return found


@pytest.mark.parametrize("path", DOCS)
def test_generated_blocks_match_the_committed_results(path):
    text = (ROOT / path).read_text()
    regenerated = docs.render(text, ROOT)
    stale = [kind for (kind, _, b, e), (_, _, b2, e2) in zip(docs.blocks(text), docs.blocks(regenerated))
             if text.splitlines()[b:e] != regenerated.splitlines()[b2:e2]]
    assert not stale, f"{path}: blocks {stale} differ from their sources: run `python -m diru_fast.docs`"


def test_no_result_number_is_typed_by_hand():
    found = [f for p in CHECKED_FOR_NUMBERS for f in hand_typed_numbers(p, (ROOT / p).read_text())]
    assert not found, "result numbers outside generated blocks:\n" + "\n".join(found)


def test_the_number_check_and_the_generator_catch_what_they_should(tmp_path):
    # a hand-typed ratio, percentage, duration and p-value are found; rules, code and derived are not
    text = "DIRU is 1.29× LSTM, +11.7% better, 3.50 ms, p 0.012.\nHolds if p < 0.05; `1.5×`; ~0.6 ms.\n"
    assert len(hand_typed_numbers("x.md", text)) == 4
    assert hand_typed_numbers("README.md", "a ratio of 1.25× by arithmetic") == []
    # a number edited inside a block is restored by render, and so detected by the first test
    readme = (ROOT / "README.md").read_text()
    kind, _, b, e = docs.blocks(readme)[0]
    lines = readme.splitlines()
    edited = next(i for i in range(b + 1, e) if "×" in lines[i])
    lines[edited] = lines[edited].replace("×", "0×", 1)
    assert docs.render("\n".join(lines) + "\n", ROOT) == readme
    # a source that is gone is an error naming it, never an empty table
    with pytest.raises(docs.DocsError, match="does not exist"):
        docs.render("<!-- BEGIN generated:times bench/results/nothing.json -->\n<!-- END generated:times -->\n", ROOT)
    with pytest.raises(docs.DocsError, match="never closed"):
        docs.blocks("<!-- BEGIN generated:times x -->\n")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> Set[str]:
    seen: Dict[str, int] = {}
    out, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = re.match(r"^#+\s+(.*?)\s*$", line)
        if m and not fenced:
            s = _slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def test_links_and_anchors_resolve():
    broken = []
    for rel in DOCS:
        path = ROOT / rel
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{rel}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{rel}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


SOURCES = ("diru_fast", "kernels", "csrc", "tests", "bench", "examples", "scripts", "docs")
SUFFIXES = {".py", ".cpp", ".h", ".cu", ".cuh", ".md", ".sh"}
THEORY_REF = re.compile(r"THEORY\.md`?(?:\]\([^)]*\))?[ ,:]*(?P<refs>§[\d.–-]+(?:\s*(?:,|;|and)\s*§[\d.–-]+)*)")


def _sections(path: Path) -> Set[str]:
    return set(re.findall(r"^#{2,4}\s+(\d+(?:\.\d+)?)\.?\s", path.read_text(), flags=re.M))


def _cited(refs: str) -> List[str]:
    out = []
    for a, b in re.findall(r"§(\d+(?:\.\d+)?)(?:[–-](\d+(?:\.\d+)?))?", refs):
        out += [a] + ([b] if b else [])
    return out


def test_cited_sections_and_documents_exist():
    theory = ROOT / "docs" / "THEORY.md"
    sections = _sections(theory)
    files = [p for d in SOURCES for p in (ROOT / d).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    files += [ROOT / "README.md", ROOT / "USAGE_GUIDE.md"]
    missing = []
    for f in files:
        text = f.read_text(errors="replace")
        for doc in set(re.findall(r"docs/([A-Za-z_]+\.md)", text)):
            if not (ROOT / "docs" / doc).exists():
                missing.append(f"{f.relative_to(ROOT)}: docs/{doc} does not exist")
        for m in THEORY_REF.finditer(text):
            missing += [f"{f.relative_to(ROOT)}: docs/THEORY.md §{s}" for s in _cited(m.group("refs"))
                        if s not in sections]
    # THEORY.md's own bare references (not those into ANALYSES.md)
    for m in re.finditer(r"(?<!ANALYSES )(?P<refs>§[\d.–-]+(?:\s*(?:,|and)\s*§[\d.–-]+)*)", theory.read_text()):
        missing += [f"docs/THEORY.md: §{s}" for s in _cited(m.group("refs")) if s not in sections]
    assert not missing, ("the former docs MATH.md was merged into docs/THEORY.md: cite docs/THEORY.md §1.2–1.6 for the "
                         "options, §2.6 for forward mode\n" + "\n".join(sorted(set(missing))))


def test_the_generator_is_not_imported_by_the_package():
    tree = ast.parse((ROOT / "diru_fast" / "__init__.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "docs" not in names and "docs" not in modules and "diru_fast.docs" not in names


def test_a_table_block_picks_the_table_and_columns_it_names(tmp_path):
    """``cols`` picks the first table under the heading that has every named column, and a column
    named exactly wins over one that merely contains the name ("d" is not "model")."""
    from diru_fast.docs import block_table

    (tmp_path / "r.md").write_text("## 2. Flow\n\n| model | lr |\n|---|---|\n| A | 1 |\n\n"
                                   "| model | d | decay |\n|---|---|---|\n| A | 64 | +0.1 |\n")
    lines = block_table(["r.md", "2. Flow"], {"cols": "model|d|decay"}, tmp_path)
    assert lines[:3] == ["| model | d | decay |", "|---|---|---|", "| A | 64 | +0.1 |"]
    assert block_table(["r.md", "2. Flow"], {}, tmp_path)[0] == "| model | lr |"
