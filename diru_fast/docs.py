"""Regenerate the result tables quoted in README.md and docs/*.md from the committed result files.

    python -m diru_fast.docs            # rewrite every generated block in place
    python -m diru_fast.docs --check    # exit 1 (naming the blocks) if a block differs from its source

A generated block is the text between two marker lines; the BEGIN line names what fills it:

    <!-- BEGIN generated:KIND ARG ... -->
    ...                                       (rewritten by this module: never edit by hand)
    <!-- END generated:KIND -->

KIND is one of ``BLOCKS`` below; its arguments are paths relative to the repository root and
``key=value`` options (shell quoting). Every block ends with a line naming its source files, so a
reader can find where each number comes from. ``tests/test_docs.py`` runs ``--check`` against the
committed files, so a hand-edited or stale number in a block fails the tests; the same test finds
result numbers typed outside the blocks. This module is not imported by ``import diru_fast``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = ("README.md", "USAGE_GUIDE.md", "docs/*.md")

BEGIN = re.compile(r"^<!-- BEGIN generated:(?P<kind>[\w-]+)(?P<args>[^>]*?)\s*-->\s*$")
END = re.compile(r"^<!-- END generated:(?P<kind>[\w-]+)\s*-->\s*$")


class DocsError(ValueError):
    """A block that cannot be generated: a missing source file, section, table or column."""


# ---------------------------------------------------------------------------------------------
# Markdown tables in the result reports

Table = Tuple[List[str], List[List[str]]]  # header cells, body rows


def split_row(line: str) -> List[str]:
    """The cells of one markdown table row (``\\|`` inside a cell is kept)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def tables(text: str) -> List[Table]:
    """Every markdown table in ``text``, in order."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if (lines[i].lstrip().startswith("|") and i + 1 < len(lines)
                and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1])):
            header, rows = split_row(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            found.append((header, rows))
        else:
            i += 1
    return found


def section(text: str, heading: str) -> str:
    """The text under the first heading that starts with ``heading`` (case-insensitive), up to the
    next heading of the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#+)\s+(.*)$", line)
        if m and m.group(2).strip().lower().startswith(heading.lower()):
            level, out = len(m.group(1)), []
            for nxt in lines[i + 1:]:
                m2 = re.match(r"^(#+)\s", nxt)
                if m2 and len(m2.group(1)) <= level:
                    break
                out.append(nxt)
            return "\n".join(out)
    raise DocsError(f"no heading starting with {heading!r}")


def column(header: Sequence[str], *names: str) -> int:
    """The index of the header cell equal to one of ``names``, else of the first that contains one
    (case-insensitive)."""
    for name in names:
        for i, cell in enumerate(header):
            if name.lower() == cell.lower():
                return i
    for name in names:
        for i, cell in enumerate(header):
            if name.lower() in cell.lower():
                return i
    raise DocsError(f"no column {' / '.join(map(repr, names))} in {list(header)}")


def report_tables(path: str, heading: str, root: Path) -> List[Table]:
    """Every table in the section ``heading`` of the report at ``path`` (at least one)."""
    file = root / path
    if not file.exists():
        raise DocsError(f"{path} does not exist")
    try:
        found = tables(section(file.read_text(), heading))
    except DocsError as exc:
        raise DocsError(f"{path}: {exc}") from None
    if not found:
        raise DocsError(f"{path}: no table under the heading {heading!r}")
    return found


def report_table(path: str, heading: str, root: Path) -> Table:
    """The first table in the section ``heading`` of the report at ``path``."""
    return report_tables(path, heading, root)[0]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(r) + " |" for r in rows]


def _commit(root: Path, path: str) -> Optional[str]:
    """The commit a result file records: ``meta.commit`` / ``environment.commit`` of a JSON next to
    it (or the JSON itself), else ``(commit abc1234)`` in the report's text."""
    file = root / path
    candidates = [file] if file.suffix == ".json" else [file.with_name("results.json"), file.with_suffix(".json")]
    for c in candidates:
        if c.exists():
            try:
                data = json.loads(c.read_text())
            except ValueError:
                continue
            for key in ("meta", "environment"):
                if isinstance(data.get(key), dict) and data[key].get("commit"):
                    return str(data[key]["commit"])
    if file.exists() and file.suffix == ".md":
        m = re.search(r"commit ([0-9a-f]{7,40})", file.read_text())
        if m:
            return m.group(1)
    return None


def _source_line(paths: Sequence[str], root: Path) -> str:
    parts = []
    for p in paths:
        c = _commit(root, p)
        parts.append(f"`{p}`" + (f" (commit {c})" if c else ""))
    return "Generated from " + ", ".join(parts) + " by `python -m diru_fast.docs`."


# ---------------------------------------------------------------------------------------------
# Blocks

def block_table(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``table PATH "HEADING" [cols="a|b|c"] [where="COLUMN~REGEX"]``: the first table under HEADING
    in the report PATH (with ``cols``: the first that has every one of those columns), optionally only
    the columns whose header is (else contains) a/b/c, in that order, and the rows whose COLUMN
    matches REGEX."""
    if len(args) != 2:
        raise DocsError("table takes PATH and HEADING")
    found = report_tables(args[0], args[1], root)
    if "cols" in opts:
        def has_all(table: Table) -> bool:
            try:
                [column(table[0], c) for c in opts["cols"].split("|")]
            except DocsError:
                return False
            return True
        found = [t for t in found if has_all(t)] or found[:1]
    header, rows = found[0]
    if "where" in opts:
        col, _, pattern = opts["where"].partition("~")
        i = column(header, col)
        rows = [r for r in rows if i < len(r) and re.search(pattern, r[i])]
    if "cols" in opts:
        idx = [column(header, c) for c in opts["cols"].split("|")]
        header = [header[i] for i in idx]
        rows = [[r[i] if i < len(r) else "" for i in idx] for r in rows]
    return render_table(header, rows) + ["", _source_line([args[0]], root)]


MODE_LABEL = {"train": "training step", "infer": "no-grad forward", "step": "streaming step",
              "epoch": "epoch with Adam"}


def _bench(path: str, root: Path) -> dict:
    file = root / path
    if not file.exists():
        raise DocsError(f"{path} does not exist")
    data = json.loads(file.read_text())
    if "records" not in data:
        raise DocsError(f"{path}: not a bench/report.py result (no 'records')")
    return data


def case_label(r: dict) -> str:
    """A benchmark case in words: ``training step, B=32 T=50 d=64`` (the dtype named unless float32)."""
    mode = r["mode"]
    dtype = "" if r.get("dtype", "float32") == "float32" else f", {r['dtype']}"
    if mode == "step":
        return f"{MODE_LABEL[mode]}, B={r['B']} n={r['n']} d={r['d']}{dtype}"
    if mode == "infer" and r.get("B") == 1:
        return f"one long sequence, B=1 T={r['T']} n={r['n']} d={r['d']}{dtype}"
    return f"{MODE_LABEL.get(mode, mode)}, B={r['B']} T={r['T']} d={r['d']}{dtype}"


def paired_ratios(data: dict) -> Dict[Tuple[str, str, str], Dict[str, dict]]:
    """(shape, mode, dtype) -> {impl: record} of a bench result's backend-vs-torch.nn cases, in file
    order."""
    cases: Dict[Tuple[str, str, str], Dict[str, dict]] = {}
    for r in data["records"]:
        if r.get("variant") is None:
            cases.setdefault((r["shape"], r["mode"], r.get("dtype", "float32")), {})[r["impl"]] = r
    return cases


def _ratio(record: dict, baseline: Optional[dict]) -> Optional[float]:
    from .benchmarking import ratio_vs_baseline  # one definition of the paired ratio

    if baseline is None:
        return None
    return ratio_vs_baseline(record, float(baseline["median_s"]))


def block_speed(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``speed PATH:IMPL[,IMPL]:LABEL ...``: one column per (bench result, backend), the paired ratio
    of DIRU's time over torch.nn's for every case the first file has."""
    from .benchmarking import BASELINE

    columns = []
    for spec in args:
        path, impls, label = (spec.split(":", 2) + ["", ""])[:3]
        data = _bench(path, root)
        for impl in impls.split(","):
            columns.append((path, impl, label.replace("{impl}", impl) if label else f"`{impl}`", paired_ratios(data)))
    first = columns[0][3]
    rows = []
    for case, row in first.items():
        label = case_label(next(iter(row.values())))
        cells = []
        for _, impl, _, cases in columns:
            r = cases.get(case, {})
            ratio = _ratio(r[impl], r.get(BASELINE)) if impl in r else None
            cells.append(f"{ratio:.2f}×" if ratio is not None else "–")
        rows.append([label] + cells)
    header = ["DIRU's time / torch.nn's"] + [c[2] for c in columns]
    return render_table(header, rows) + ["", _source_line(list(dict.fromkeys(c[0] for c in columns)), root)]


def _time(seconds: float) -> str:
    return f"{1e6 * seconds:.1f} µs" if seconds < 1e-3 else f"{1e3 * seconds:.2f} ms"


def block_times(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``times PATH [impl=cpu]``: per case the torch.nn median, DIRU's median, the paired ratio and
    the activation memory of one bench result."""
    from .benchmarking import BASELINE

    impl = opts.get("impl", "cpu")
    data = _bench(args[0], root)
    rows = []
    for case, row in paired_ratios(data).items():
        if impl not in row or BASELINE not in row:
            continue
        r, base = row[impl], row[BASELINE]
        mem = (f"{r['saved_bytes'] / 2**20:.2f} / {base['saved_bytes'] / 2**20:.2f} MiB"
               if r.get("saved_bytes") and base.get("saved_bytes") else "–")
        rows.append([case_label(r), _time(base["median_s"]), _time(r["median_s"]),
                     f"{_ratio(r, base):.2f}×", mem])
    header = ["case", "torch.nn, median", f"`{impl}`, median", "paired ratio", "activation memory, DIRU / torch.nn"]
    note = ("The paired ratio is the median of per-round ratios (each DIRU round timed right after a "
            "torch.nn round); the medians are over all rounds of each, so on a machine whose speed drifts "
            "their quotient can differ from it. The ratio is the measurement.")
    return render_table(header, rows) + ["", note, "", _source_line([args[0]], root)]


def block_gflops(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``gflops PATH``: the achieved GFLOP/s table of one bench result (``benchmarking.gflops_table``)."""
    from .benchmarking import gflops_table

    data = _bench(args[0], root)
    return gflops_table([r for r in data["records"] if r.get("variant") is None]).splitlines() + \
        ["", _source_line([args[0]], root)]


def block_options(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``options PATH``: each cell option's time over the plain cell's (paired rounds), one column
    per benchmarked (shape, mode)."""
    from .benchmarking import PLAIN, ratio_vs_plain

    data = _bench(args[0], root)
    opt = [r for r in data["records"] if r.get("variant") is not None]
    if not opt:
        raise DocsError(f"{args[0]}: no option records")
    cases = list(dict.fromkeys((r["shape"], r["mode"]) for r in opt))
    variants = [v for v in dict.fromkeys(r["variant"] for r in opt) if v != PLAIN]
    rows = []
    for v in variants:
        cells = []
        for shape, mode in cases:
            pick = lambda name: next((r for r in opt if r["variant"] == name and r["shape"] == shape
                                      and r["mode"] == mode), None)
            plain, r = pick(PLAIN), pick(v)
            ratio = ratio_vs_plain(r, plain["median_s"]) if r and plain else None
            cells.append(f"{ratio:.2f}×" if ratio is not None else "–")
        options = next(r for r in opt if r["variant"] == v).get("options") or {}
        rows.append([f"`{v}`" + (f" ({', '.join(f'{k}={val}' for k, val in options.items())})" if options else "")] + cells)
    header = ["option / plain cell"]
    for shape, mode in cases:
        r = next(r for r in opt if r["shape"] == shape and r["mode"] == mode)
        header.append(f"{MODE_LABEL.get(mode, mode)}, B={r['B']} T={r['T']} d={r['d']}")
    return render_table(header, rows) + ["", _source_line([args[0]], root)]


def _title(file: Path) -> str:
    """A report's title up to its first colon: ``Word-level language model``."""
    for line in file.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].split(":")[0].strip()
    return file.parent.name


def _old_protocol(file: Path) -> str:
    """`` (old protocol)`` where a report says it ran under a superseded protocol."""
    head = file.read_text()[:3000].lower()
    return " (old protocol)" if "old protocol" in head or "superseded" in head else ""


def _verdict(cell: str) -> str:
    m = re.search(r"\*\*(.+?)\*\*", cell)
    return m.group(1) if m else cell


def block_verdicts(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``verdicts study=PATH [study=PATH ...] analyses=PATH irregular=PATH [report=PATH#HEADING ...]``:
    one row per comparison of the study reports (DIRU vs each baseline), per claim of the analyses'
    summary, per time-decay comparison of the irregular study, and per row of any other report's
    verdict table (``report=``: columns set/task, comparison, an estimate, Holm p, verdict)."""
    rows, sources = [], []
    link = opts.get("link_prefix", "")
    for key, value in [kv.split("=", 1) for kv in args]:
        sources.append(value)
        file = root / value.partition("#")[0]
        ref = (f"[{Path(value).parent.name if key != 'analyses' else Path(value).stem}]({link}{value})"
               + (_old_protocol(file) if file.exists() else ""))
        if key == "study":
            header, body = report_table(value, "DIRU's relative improvement", root)
            task, vs = column(header, "task"), column(header, "DIRU vs")
            imp, holm = column(header, "improvement"), column(header, "Holm")
            seeds = column(header, "seeds")
            verdict = column(header, "beats", "verdict")
            for r in body:
                rows.append([f"DIRU vs {r[vs]}, {r[task]}", f"{ref}, {r[seeds]} seeds",
                             r[imp].replace("95% CI ", ""), r[holm], r[verdict]])
        elif key == "analyses":
            header, body = report_table(value, "Summary", root)
            claim, verdict = column(header, "claim"), column(header, "verdict")
            for r in body:
                rows.append([r[claim], ref, "see the report", "–", f"**{_verdict(r[verdict])}**"])
        elif key == "irregular":
            header, body = report_table(value, "Comparisons", root)
            task, a, b = column(header, "task"), header.index("A"), header.index("B")
            imp, holm, verdict = column(header, "lower than", "improvement"), column(header, "Holm"), column(header, "verdict")
            for r in body:
                if "DIRU" in r[a] or "DIRU" in r[b]:
                    rows.append([f"{r[a]} vs {r[b]}, irregular {r[task]}", ref, r[imp], r[holm], f"**{_verdict(r[verdict])}**"])
        elif key == "report":  # PATH#HEADING: any verdict table (set/task, comparison, estimate, Holm p, verdict)
            path, _, heading = value.partition("#")
            sources[-1] = path
            ref = f"[{Path(path).parent.name}]({link}{path})" + _old_protocol(root / path)
            header, body = report_table(path, heading or "Verdicts", root)
            try:
                where: Optional[int] = column(header, "set", "task")
            except DocsError:  # one task: the report's folder names it
                where = None
            what = column(header, "comparison", "vs")
            imp = column(header, "difference", "improvement", "lower", "ratio")
            holm, verdict = column(header, "Holm"), column(header, "verdict")
            for r in body:
                label = f"{r[what]}, {r[where] if where is not None else _title(root / path)}"
                rows.append([label, ref, r[imp].replace("95% CI ", ""), r[holm], r[verdict]])
        else:
            raise DocsError(f"verdicts: unknown source kind {key!r}")
    header = ["comparison or claim", "where", "effect [95% CI], as its report defines it", "Holm p", "verdict"]
    return render_table(header, rows) + ["", _source_line(sources, root)]


def block_section(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``section PATH "HEADING"``: the text under HEADING in the report PATH, verbatim (its own
    subheadings dropped a level below the including page's are the reader's business: keep to
    sections without them)."""
    if len(args) != 2:
        raise DocsError("section takes PATH and HEADING")
    file = root / args[0]
    if not file.exists():
        raise DocsError(f"{args[0]} does not exist")
    try:
        body = section(file.read_text(), args[1]).strip("\n")
    except DocsError as exc:
        raise DocsError(f"{args[0]}: {exc}") from None
    return body.splitlines() + ["", _source_line([args[0]], root)]


def block_line(args: List[str], opts: Dict[str, str], root: Path) -> List[str]:
    """``line PATH "REGEX"``: the first line of the file PATH that matches REGEX (a report's
    ``Command:`` line, say), verbatim."""
    if len(args) != 2:
        raise DocsError("line takes PATH and REGEX")
    file = root / args[0]
    if not file.exists():
        raise DocsError(f"{args[0]} does not exist")
    for text in file.read_text().splitlines():
        if re.search(args[1], text):
            return [text]
    raise DocsError(f"{args[0]}: no line matches {args[1]!r}")


BLOCKS: Dict[str, Callable[[List[str], Dict[str, str], Path], List[str]]] = {
    "table": block_table,
    "section": block_section,
    "line": block_line,
    "speed": block_speed,
    "times": block_times,
    "gflops": block_gflops,
    "options": block_options,
    "verdicts": block_verdicts,
}


# ---------------------------------------------------------------------------------------------
# Files

def _parse_args(text: str) -> Tuple[List[str], Dict[str, str]]:
    args, opts = [], {}
    for tok in shlex.split(text):
        key, eq, value = tok.partition("=")
        if eq and re.fullmatch(r"[a-z_]+", key) and key not in ("study", "analyses", "irregular", "report"):
            opts[key] = value
        else:
            args.append(tok)
    return args, opts


def generate(kind: str, arg_text: str, root: Path = ROOT) -> List[str]:
    """The lines of one block (without its markers)."""
    if kind not in BLOCKS:
        raise DocsError(f"unknown block kind {kind!r} (known: {', '.join(BLOCKS)})")
    args, opts = _parse_args(arg_text)
    return BLOCKS[kind](args, opts, root)


def blocks(text: str) -> List[Tuple[str, str, int, int]]:
    """(kind, args, begin line, end line) of every generated block in ``text``."""
    found, open_ = [], None
    for i, line in enumerate(text.splitlines()):
        m = BEGIN.match(line)
        if m:
            if open_ is not None:
                raise DocsError(f"line {i + 1}: a block starts inside the block of line {open_[2] + 1}")
            open_ = (m.group("kind"), m.group("args").strip(), i)
            continue
        m = END.match(line)
        if m:
            if open_ is None or m.group("kind") != open_[0]:
                raise DocsError(f"line {i + 1}: END generated:{m.group('kind')} without its BEGIN")
            found.append((*open_, i))
            open_ = None
    if open_ is not None:
        raise DocsError(f"line {open_[2] + 1}: BEGIN generated:{open_[0]} is never closed")
    return found


def render(text: str, root: Path = ROOT) -> str:
    """``text`` with every generated block refilled from the committed files."""
    lines = text.splitlines()
    for kind, args, begin, end in reversed(blocks(text)):
        lines[begin + 1:end] = generate(kind, args, root)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def doc_files(root: Path = ROOT) -> List[Path]:
    out: List[Path] = []
    for pattern in DOC_FILES:
        out += sorted(root.glob(pattern))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diru_fast.docs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: this checkout)")
    args = parser.parse_args(argv)
    stale = []
    for path in doc_files(args.root):
        text = path.read_text()
        try:
            new = render(text, args.root)
        except DocsError as exc:
            print(f"{path.relative_to(args.root)}: {exc}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(str(path.relative_to(args.root)))
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "every generated block is up to date")
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
