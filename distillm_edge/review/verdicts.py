"""``review import``: read graded sheets back and report per-model verdict rates with 95% intervals.

Each sheet row is one answer (question ``item``, blinded ``label``) with four verdict cells —
more_comprehensive, accurate, critical_error, omissions — holding yes/no (also y/n, 1/0, true/false,
x for yes). A blank cell is "not graded" and leaves that answer out of that verdict's denominator, so
a partly graded sheet reports what was graded. The key (``<sheet>.key.json``) un-blinds the labels;
every answer's text is checked against the hash in the key, so a key from another export, or an
answer edited in the sheet, is refused with the row named. Rows may be re-sorted by the graders.

Rates get Wilson score intervals (95%), which stay inside [0, 1] and behave at 0/n and n/n, unlike
the normal approximation.

Run: ``distillm-edge review import sheet.csv [--key sheet.csv.key.json] [--out report.json]``.
Test: ``pytest tests/review/test_review.py``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.io import atomic_write_json
from distillm_edge.review.config import VERDICTS, ReviewImportConfig, key_path_for
from distillm_edge.review.export import text_sha

Z95 = 1.959963984540054
YES = {"yes", "y", "1", "true", "x", "✓", "✔"}
NO = {"no", "n", "0", "false"}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (n = 0 gives the uninformative (0, 1))."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be within 0..n={n}")
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def parse_verdict(value, where: str) -> bool | None:
    text = "" if value is None else str(value).strip().lower()
    if text == "":
        return None
    if text in YES:
        return True
    if text in NO:
        return False
    raise UserError(f"{where}: {value!r} is not a verdict; write yes or no (or leave it blank if not graded).")


def read_sheet(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for every row of a .csv or .jsonl sheet."""
    if not path.is_file():
        raise UserError(f"{path}: review sheet not found.")
    rows = []
    if path.suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"item", "label", "answer", *VERDICTS} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}; grade the sheet written by "
                                "'review export' without renaming its columns.")
            for n, row in enumerate(reader, 2):
                rows.append((f"{path}:{n}", row))
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
    return rows


def tally(rows: list[tuple[str, dict]], key: dict, key_path: Path) -> dict:
    """Per model and verdict: yes count and graded count."""
    items = {int(it["item"]): it for it in key["items"]}
    counts = [{v: [0, 0] for v in VERDICTS} for _ in key["models"]]
    answered = [0] * len(key["models"])
    seen: set[tuple[int, str]] = set()
    for where, row in rows:
        try:
            item = int(str(row.get("item", "")).strip())
        except ValueError:
            raise UserError(f"{where}: 'item' must be the question number written by review export.") from None
        label = str(row.get("label", "")).strip()
        entry = items.get(item, {}).get("labels", {}).get(label)
        if entry is None:
            raise UserError(f"{where}: item {item} label {label!r} is not in the key {key_path}; "
                            "is this the key of this sheet (pass --key)?")
        if text_sha(str(row.get("answer", "")).strip()) != entry["answer_sha256"]:
            raise UserError(f"{where}: the answer of item {item} label {label} differs from the exported one "
                            f"(edited in the sheet, or {key_path} belongs to another export).")
        if (item, label) in seen:
            raise UserError(f"{where}: item {item} label {label} appears twice; keep one row per answer.")
        seen.add((item, label))
        m = entry["model"]
        graded = False
        for v in VERDICTS:
            verdict = parse_verdict(row.get(v), f"{where}: column {v}")
            if verdict is not None:
                counts[m][v][1] += 1
                counts[m][v][0] += int(verdict)
                graded = True
        answered[m] += graded
    expected = sum(len(it["labels"]) for it in key["items"])
    report = {"rows": len(rows), "expected_rows": expected, "models": []}
    for m, model in enumerate(key["models"]):
        per = {}
        for v in VERDICTS:
            k, n = counts[m][v]
            lo, hi = wilson(k, n)
            per[v] = {"yes": k, "graded": n, "rate": k / n if n else None, "ci95": [lo, hi]}
        report["models"].append({"spec": model["spec"], "model_id": model.get("model_id", ""),
                                 "sha256": model.get("sha256", ""), "graded_answers": answered[m], "verdicts": per})
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['rows']} of {report['expected_rows']} answers on the sheet; rates with Wilson 95% intervals",
             f"{'model':<34} {'verdict':<20} {'yes/graded':>10} {'rate':>7}  95% CI"]
    for model in report["models"]:
        name = model["spec"] if len(model["spec"]) <= 34 else "..." + model["spec"][-31:]
        for v in VERDICTS:
            d = model["verdicts"][v]
            if d["graded"]:
                lo, hi = d["ci95"]
                lines.append(f"{name:<34} {v:<20} {d['yes']:>4}/{d['graded']:<5} {d['rate']:>7.1%}  "
                             f"[{lo:.1%}, {hi:.1%}]")
            else:
                lines.append(f"{name:<34} {v:<20} {'-':>10} {'':>7}  not graded")
    return "\n".join(lines)


def run(cfg: ReviewImportConfig) -> dict:
    sheet = Path(cfg.sheet)
    key_path = Path(cfg.key) if cfg.key else key_path_for(sheet)
    if not key_path.is_file():
        raise UserError(f"{key_path}: key file not found; pass --key (review export wrote it as <sheet>.key.json).")
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        key = None
    if not isinstance(key, dict) or not isinstance(key.get("items"), list) or not isinstance(key.get("models"), list):
        raise UserError(f"{key_path}: not a review key written by 'review export'.")
    report = tally(read_sheet(sheet), key, key_path)
    report["sheet"], report["key"] = str(sheet), str(key_path)
    print(format_report(report))
    if cfg.out:
        atomic_write_json(Path(cfg.out), report)
    return report
