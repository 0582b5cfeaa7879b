"""``DATA_CARD.md``: a human-readable summary of one ``data prepare`` run, rendered from its stats.

Counts per source, specialty, difficulty stage and split, and what each stage removed (with the
largest near-duplicate clusters and the decontamination matches); the exact numbers are those of
``stats.json`` and every removed record is listed in ``removals.jsonl``.

Test: ``pytest tests/data/test_pipeline.py``.
"""

from __future__ import annotations

from typing import Any

from distillm_edge.data.records import DIFFICULTY_STAGES

STAGE_TEXT = {
    "malformed": "malformed input items (file:line listed in stats.json)",
    "empty_or_short": "empty or trivially short after cleaning",
    "exact_duplicate": "exact duplicates (same normalized text)",
    "decontaminated": "overlap with benchmark test items",
    "near_duplicate": "near duplicates (MinHash LSH)",
    "too_long": "question alone over the token limit",
}


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(stats: dict[str, Any]) -> str:
    final, read, cfg = stats["final"], stats["read"], stats["config"]
    removed = stats["removed"]
    parts = [
        "# Data card: distillm-edge prepared medical instruction data",
        "",
        f"Produced by `distillm-edge data prepare` in {stats['seconds']:.1f} s "
        f"({read['total']:,} records read, {final['total']:,} kept: "
        f"{final['splits'].get('train', 0):,} train / {final['splits'].get('valid', 0):,} valid, "
        f"valid fraction {cfg['valid_fraction']}, seed {cfg['seed']}).",
        "",
        "Columns: `id`, `instruction`, `input` (context, may be empty), `response`, `source`, `specialty`, "
        "`difficulty` (1-4). Load with `distillm_edge.data.load_prepared(path)`.",
        "",
        "Each input keeps its own licence (see the source's licence file); this card does not change it.",
        "",
        "## Sources",
        "",
        _table(
            ("source", "read", "kept"),
            [(s, f"{n:,}", f"{final['per_source'].get(s, 0):,}") for s, n in sorted(read["per_source"].items())],
        ),
        "",
        "Inputs: " + ", ".join(f"`{p}`" for p in stats["inputs"]),
        "",
        "## Removed, per stage (in pipeline order)",
        "",
        _table(
            ("stage", "removed", "what"),
            [(stage, f"{n:,}", STAGE_TEXT.get(stage, "")) for stage, n in removed.items()],
        ),
        "",
    ]
    per_source = stats.get("removed_per_source", {})
    rows = [(stage, ", ".join(f"{s}: {n:,}" for s, n in sorted(c.items()))) for stage, c in per_source.items() if c]
    if rows:
        parts += [_table(("stage", "removed per source"), rows), ""]
    parts += [
        "## Specialties",
        "",
        _table(("specialty", "records"), [(s, f"{n:,}") for s, n in final["per_specialty"].items()]),
        "",
        "## Difficulty (curriculum stage)",
        "",
        _table(
            ("stage", "name", "records"),
            [(k, DIFFICULTY_STAGES.get(int(k), "?"), f"{n:,}") for k, n in sorted(final["per_difficulty"].items())],
        ),
        "",
        "## Processing",
        "",
    ]
    dedup = stats["dedup"]
    clusters = stats["near_duplicate_clusters"]
    parts.append(
        f"- Near-duplicate detection: word {dedup['shingle_size']}-shingles of instruction + response, "
        f"MinHash with {dedup['num_perm']} permutations, LSH threshold {dedup['near_threshold']}; "
        f"{clusters['records_removed']:,} records removed from {clusters['clusters']:,} clusters."
    )
    if clusters["largest"]:
        largest = ", ".join(f"`{c['kept']}` (+{c['removed']})" for c in clusters["largest"][:5])
        parts.append(f"  Largest clusters (kept record, removed count): {largest}.")
    decon = stats["decontamination"]
    if decon.get("benchmarks"):
        parts.append(
            f"- Decontamination against {decon['items']:,} benchmark items "
            f"({', '.join(f'`{p}`' for p in decon['benchmarks'])}): {decon['ngram']}-word n-grams of the whole record "
            f"against each item's stem + every choice, long choices with their stem or another choice, short stems "
            f"matched whole: {removed.get('decontaminated', 0):,} training records removed."
        )
        for item in stats["decontaminated"]["items"][:5]:
            parts.append(f"  - `{item['id']}` matched `{item['matched']}`")
    else:
        parts.append("- Decontamination: not requested (no `--decontaminate`).")
    trunc = stats["truncation"]
    if trunc.get("max_tokens"):
        parts.append(
            f"- Token limit {trunc['max_tokens']} with `{trunc['tokenizer']}`: {trunc['context_truncated']:,} contexts "
            f"and {trunc['response_truncated']:,} responses truncated, {trunc['dropped']:,} records dropped."
        )
    else:
        parts.append("- Token limit: off (`--max-tokens 0`).")
    abbrev = stats["abbreviations"]
    if abbrev.get("enabled"):
        top = ", ".join(f"{k} ({v})" for k, v in list(abbrev["expanded_by_abbreviation"].items())[:10])
        parts.append(
            f"- Abbreviations: {abbrev['expanded']:,} expanded ({top}); {abbrev['ambiguous_left']:,} ambiguous left as written."
        )
    else:
        parts.append("- Abbreviation expansion: off.")
    if stats.get("ids_renamed"):
        parts.append(f"- {stats['ids_renamed']:,} records had an id already used and got a `#n` suffix.")
    return "\n".join(parts) + "\n"
