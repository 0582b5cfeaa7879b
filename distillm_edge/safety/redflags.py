"""Red-flag rules: load and validate the rules file, then check text with NegEx-style context.

A rule (see ``default_rules.yaml`` for the format, documented at its top) matches *findings* with
regular expressions. Each match is then put in context, in the spirit of NegEx (Chapman et al.,
2001): a cue before the finding ("denies", "no", "history of", "mother had") or after it ("ruled
out", "years ago", "in her father") suppresses it when the words between them contain no scope
terminator ("but", "however", ";", a sentence end, and a comma — except inside a negated list closed
by "or"/"nor": "denies fever, chest pain, or vomiting") and are at most ``context.window`` words.
Pseudo-cues ("no longer", "not able to", "can't stop") are masked first so they never count as cues.
A rule may also ``require`` other findings (each group: any of its patterns) in the same sentence or
text: chest pain *with* radiation, fever *in* a young infant. A rule whose companion is mentioned only
in suppressed form ("chest pain, no radiation") is reported suppressed with that reason.

Every match is reported: ``suppressed`` is None for an active red flag, else "negated", "history" or
"other_person" (someone else's history, e.g. "family history of MI"). :func:`active` keeps the
active ones. All functions here are pure; :func:`load_rules` is the only one that reads a file.

User rules extend or replace the default: a file with ``extends: default`` starts from the packaged
rules (its rules with an existing id replace that rule, new ids are added, ``disable: [ids]`` drops
rules, and its ``context`` lists are appended); a file without ``extends`` replaces them entirely.

Run: ``distillm-edge redflags check --rules my_rules.yaml notes.txt``.
Test: ``pytest tests/safety/test_redflags.py tests/safety/test_corpus.py``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from distillm_edge.config import ConfigError

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
SEVERITIES = ("emergency", "urgent")
REASONS = ("negated", "other_person", "history")  # checked in this order; the first that applies wins
RULE_FIELDS = {"id": True, "title": True, "severity": True, "advice": True, "patterns": True,
               "requires": False, "within": False}
TOP_FIELDS = ("version", "extends", "disable", "context", "rules")
CONTEXT_LISTS = ("pseudo", "terminators")
_ID = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_WORD = re.compile(r"[\w'’]+")
_SENTENCE_END = re.compile(r"(?<!\d)[.!?]+(?!\d)|\n")
_LIST_CLOSER = re.compile(r"\b(?:or|nor)\b", re.IGNORECASE)


class RulesError(ConfigError):
    """The rules file is invalid; the message names the file, the rule and the field, and the fix."""


@dataclass(frozen=True)
class Hit:
    rule_id: str
    title: str
    severity: str
    advice: str
    start: int
    end: int
    matched: str
    source: str
    suppressed: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    advice: str
    patterns: tuple[re.Pattern, ...]
    requires: tuple[tuple[re.Pattern, ...], ...] = ()
    within: str = "sentence"  # "sentence" | "text": where the required findings must appear


@dataclass(frozen=True)
class Context:
    window: int
    pseudo: re.Pattern | None
    terminators: re.Pattern | None
    before: dict[str, re.Pattern | None]  # reason -> cues that precede the finding
    after: dict[str, re.Pattern | None]  # reason -> cues that follow it


class RuleSet:
    """Loaded, validated rules: ``check(text)`` returns every hit, suppressed ones included."""

    def __init__(self, rules: tuple[Rule, ...], context: Context, path: str, version: str, sha256: str):
        self.rules = rules
        self.context = context
        self.path = path
        self.version = version
        self.sha256 = sha256

    def check(self, text: str, source: str = "text") -> list[Hit]:
        return check(self, text, source)

    def __repr__(self) -> str:
        return f"RuleSet({self.path!r}, version={self.version!r}, rules={len(self.rules)})"


def active(hits: Iterable[Hit]) -> list[Hit]:
    """The hits no negation, history or other person suppressed."""
    return [h for h in hits if h.suppressed is None]


# --- Checking (pure) ---------------------------------------------------------------------------


def _sentence_bounds(text: str) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        bounds.append((start, m.end()))
        start = m.end()
    bounds.append((start, len(text)))
    return bounds


def _enclosing(bounds: list[tuple[int, int]], pos: int) -> tuple[int, int]:
    for s, e in bounds:
        if s <= pos < e:
            return s, e
    return bounds[-1]


def _mask(text: str, pseudo: re.Pattern | None) -> str:
    """``text`` with pseudo-cues blanked out (same length, so offsets stay valid)."""
    if pseudo is None:
        return text
    return pseudo.sub(lambda m: " " * len(m.group(0)), text)


def _words(span: str) -> int:
    return len(_WORD.findall(span))


def _forward_in_scope(ctx: Context, masked: str, cue_end: int, start: int, end: int, sent_end: int,
                      reason: str) -> bool:
    """Does a cue ending at ``cue_end`` reach the finding at ``start``?"""
    between = masked[cue_end:start]
    if ctx.terminators is not None and ctx.terminators.search(between):
        return False
    if "," in between:
        if reason != "negated":
            return False
        # A negated list: "denies fever, chest pain, or vomiting" — only when closed by or/nor.
        clause_end = sent_end
        if ctx.terminators is not None:
            m = ctx.terminators.search(masked, end, sent_end)
            clause_end = m.start() if m else sent_end
        return bool(_LIST_CLOSER.search(masked, cue_end, clause_end))
    return _words(between) <= ctx.window


def _backward_in_scope(ctx: Context, masked: str, end: int, cue_start: int) -> bool:
    between = masked[end:cue_start]
    if "," in between or (ctx.terminators is not None and ctx.terminators.search(between)):
        return False
    return _words(between) <= ctx.window


def context_of(ctx: Context, text: str, start: int, end: int, masked: str | None = None,
               bounds: list[tuple[int, int]] | None = None) -> str | None:
    """Why the finding ``text[start:end]`` is suppressed ("negated", "other_person", "history"), or None."""
    masked = _mask(text, ctx.pseudo) if masked is None else masked
    bounds = _sentence_bounds(text) if bounds is None else bounds
    s0, s1 = _enclosing(bounds, start)
    for reason in REASONS:
        before = ctx.before.get(reason)
        if before is not None:
            for m in before.finditer(masked, s0, start):
                if m.end() <= start and _forward_in_scope(ctx, masked, m.end(), start, end, s1, reason):
                    return reason
        after = ctx.after.get(reason)
        if after is not None:
            for m in after.finditer(masked, end, s1):
                if _backward_in_scope(ctx, masked, end, m.start()):
                    return reason
    return None


def _spans(patterns: Iterable[re.Pattern], text: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """Non-overlapping finding spans (the ``finding`` group when a pattern names one), longest first."""
    hi = len(text) if hi is None else hi
    found = []
    for pat in patterns:
        group = "finding" if "finding" in pat.groupindex else 0
        for m in pat.finditer(text, lo, hi):
            s, e = m.span(group)
            if e > s:
                found.append((s, e))
    found.sort(key=lambda se: (se[0], -(se[1] - se[0])))
    kept: list[tuple[int, int]] = []
    for s, e in found:
        if not kept or s >= kept[-1][1]:
            kept.append((s, e))
    return kept


def _required(rule: Rule, ctx: Context, text: str, masked: str, bounds: list[tuple[int, int]], lo: int,
              hi: int) -> str | None | bool:
    """None when every ``requires`` group has an active match; False when some group has no match at
    all; else the suppression reason of the first group matched only in suppressed form."""
    reason: str | None = None
    for group in rule.requires:
        states = [context_of(ctx, text, s, e, masked, bounds) for s, e in _spans(group, text, lo, hi)]
        if not states:
            return False
        if None not in states and reason is None:
            reason = states[0]
    return reason


def check(rules: RuleSet, text: str, source: str = "text") -> list[Hit]:
    """Every red-flag match in ``text``, in order, with why it is suppressed (None when active)."""
    if not text:
        return []
    ctx = rules.context
    masked = _mask(text, ctx.pseudo)
    bounds = _sentence_bounds(text)
    hits: list[Hit] = []
    for rule in rules.rules:
        for s, e in _spans(rule.patterns, text):
            reason = context_of(ctx, text, s, e, masked, bounds)
            if rule.requires:
                lo, hi = (0, len(text)) if rule.within == "text" else _enclosing(bounds, s)
                required = _required(rule, ctx, text, masked, bounds, lo, hi)
                if required is False:
                    continue  # a companion finding is not mentioned at all: no hit
                reason = reason or required  # a negated companion ("no radiation") suppresses the hit
            hits.append(Hit(rule.id, rule.title, rule.severity, rule.advice, s, e, text[s:e], source, reason))
    hits.sort(key=lambda h: (h.start, h.end, h.rule_id))
    return hits


# --- Loading and validation --------------------------------------------------------------------


def _compile(pattern: Any, where: str, path: str, words: bool = True) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern.strip():
        raise RulesError(f"{path}: {where}: expected a non-empty regular expression string, got {pattern!r}.")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
        if words:  # whole words: a match cannot start or end inside a word
            compiled = re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)
    except re.error as exc:
        raise RulesError(
            f"{path}: {where}: {pattern!r} is not a valid regular expression ({exc.msg} at position {exc.pos}). "
            "Fix the pattern; escape literal characters such as ( ) [ ] . ? + * with a backslash."
        ) from None
    if compiled.search(""):
        raise RulesError(f"{path}: {where}: {pattern!r} matches the empty string, so it would match everywhere; "
                         "make at least one part of it mandatory.")
    extra = set(compiled.groupindex) - {"finding"}
    if extra:
        raise RulesError(f"{path}: {where}: named group(s) {sorted(extra)} are not supported; the only named group "
                         "is (?P<finding>...), which marks the span to report. Use (?:...) for other groups.")
    return compiled


def _alternation(patterns: list[re.Pattern], word: bool = True) -> re.Pattern | None:
    if not patterns:
        return None
    body = "|".join(f"(?:{p.pattern})" for p in patterns)
    return re.compile(rf"(?<![\w'’])(?:{body})(?![\w'’])" if word else body, re.IGNORECASE)


def _string_list(value: Any, where: str, path: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list):
        raise RulesError(f"{path}: {where}: expected a list of patterns (- 'pattern' lines), got {value!r}.")
    return value


def _parse_rule(raw: Any, index: int, path: str) -> dict:
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise RulesError(f"{path}: {where}: expected a mapping with keys {', '.join(RULE_FIELDS)}, got {raw!r}.")
    rid = raw.get("id")
    if isinstance(rid, str):
        where = f"rules[{index}] (id '{rid}')"
    for key in raw:
        if key not in RULE_FIELDS:
            close = difflib.get_close_matches(str(key), list(RULE_FIELDS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid fields: {', '.join(RULE_FIELDS)}."
            raise RulesError(f"{path}: {where}: unknown field '{key}'.{hint}")
    for key, required in RULE_FIELDS.items():
        if required and raw.get(key) in (None, "", []):
            raise RulesError(f"{path}: {where}: missing field '{key}'. Every rule needs "
                             f"{', '.join(k for k, r in RULE_FIELDS.items() if r)}.")
    for key in ("id", "title", "advice"):
        if not isinstance(raw[key], str):
            raise RulesError(f"{path}: {where}: field '{key}' must be a string, got {raw[key]!r}.")
    if not _ID.match(rid):
        raise RulesError(f"{path}: {where}: field 'id' must be lower-case words joined by dots or underscores "
                         "(for example 'cardiac.chest_pain_radiation').")
    if raw["severity"] not in SEVERITIES:
        raise RulesError(f"{path}: {where}: field 'severity' is {raw['severity']!r}; use one of: "
                         f"{', '.join(SEVERITIES)}.")
    patterns = [_compile(p, f"{where}: field 'patterns'[{i}]", path)
                for i, p in enumerate(_string_list(raw["patterns"], f"{where}: field 'patterns'", path))]
    requires_raw = raw.get("requires") or []
    if not isinstance(requires_raw, list):
        raise RulesError(f"{path}: {where}: field 'requires' must be a list of pattern lists "
                         "(each inner list: any of these must also match).")
    requires = []
    for g, group in enumerate(requires_raw):
        group = [group] if isinstance(group, str) else group
        gw = f"{where}: field 'requires'[{g}]"
        requires.append(tuple(_compile(p, f"{gw}[{i}]", path) for i, p in enumerate(_string_list(group, gw, path))))
        if not requires[-1]:
            raise RulesError(f"{path}: {gw}: empty group; give at least one pattern or remove it.")
    within = raw.get("within", "sentence")
    if within not in ("sentence", "text"):
        raise RulesError(f"{path}: {where}: field 'within' is {within!r}; use 'sentence' or 'text'.")
    return {"id": rid, "title": raw["title"].strip(), "severity": raw["severity"], "advice": raw["advice"].strip(),
            "patterns": tuple(patterns), "requires": tuple(requires), "within": within}


def _read(path: Path) -> tuple[dict, bytes]:
    if not path.is_file():
        raise RulesError(f"{path}: rules file not found; pass an existing YAML file to --rules.")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise RulesError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax there.") from None
    if not isinstance(data, Mapping):
        raise RulesError(f"{path}: expected a mapping with keys {', '.join(TOP_FIELDS)} at the top level.")
    for key in data:
        if key not in TOP_FIELDS:
            close = difflib.get_close_matches(str(key), list(TOP_FIELDS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(TOP_FIELDS)}."
            raise RulesError(f"{path}: unknown top-level key '{key}'.{hint}")
    return dict(data), raw


def _parse_context(data: Mapping, path: str, base: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """Context lists as {"negation.before": [...], ..., "pseudo": [...], "window": [n]}."""
    out = {k: list(v) for k, v in (base or {}).items()}
    raw = data.get("context") or {}
    if not isinstance(raw, Mapping):
        raise RulesError(f"{path}: 'context' must be a mapping with keys window, pseudo, terminators, "
                         f"{', '.join(r if r != 'negated' else 'negation' for r in REASONS)}.")
    valid = ("window", *CONTEXT_LISTS, "negation", "history", "other_person")
    for key, value in raw.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            raise RulesError(f"{path}: context: unknown key '{key}'."
                             + (f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(valid)}."))
        if key == "window":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 50:
                raise RulesError(f"{path}: context: field 'window' must be a whole number of words from 1 to 50, "
                                 f"got {value!r}.")
            out["window"] = [value]
        elif key in CONTEXT_LISTS:
            out.setdefault(key, []).extend(_string_list(value, f"context: field '{key}'", path))
        else:
            if not isinstance(value, Mapping) or set(value) - {"before", "after"}:
                raise RulesError(f"{path}: context: field '{key}' must be a mapping with 'before' and/or 'after' "
                                 "lists of cue patterns.")
            for side in ("before", "after"):
                out.setdefault(f"{key}.{side}", []).extend(
                    _string_list(value.get(side), f"context: field '{key}.{side}'", path))
    return out


def _build_context(lists: dict[str, list[str]], path: str) -> Context:
    def comp(key: str) -> list[re.Pattern]:
        return [_compile(p, f"context: field '{key}'[{i}]", path, words=False) for i, p in enumerate(lists.get(key, []))]

    before, after = {}, {}
    for reason in REASONS:
        key = "negation" if reason == "negated" else reason
        before[reason] = _alternation(comp(f"{key}.before"))
        after[reason] = _alternation(comp(f"{key}.after"))
    return Context(window=(lists.get("window") or [6])[0], pseudo=_alternation(comp("pseudo")),
                   terminators=_alternation(comp("terminators"), word=False), before=before, after=after)


def _parse_file(path: Path, seen: tuple[Path, ...] = ()) -> tuple[list[dict], dict[str, list[str]], str, list[bytes]]:
    data, raw = _read(path)
    version = str(data.get("version", "1"))
    extends = data.get("extends")
    rules: list[dict] = []
    context: dict[str, list[str]] | None = None
    blobs: list[bytes] = []
    if extends is not None:
        if extends != "default":
            raise RulesError(f"{path}: 'extends' is {extends!r}; the only supported value is 'default' "
                             "(merge with the packaged rules). Remove the key to replace them instead.")
        if path.resolve() == DEFAULT_RULES.resolve() or DEFAULT_RULES.resolve() in seen:
            raise RulesError(f"{path}: 'extends: default' cannot be used in the default rules file itself.")
        rules, context, _, blobs = _parse_file(DEFAULT_RULES, (*seen, path.resolve()))
    context = _parse_context(data, str(path), context)
    raw_rules = data.get("rules")
    if raw_rules is None and extends is None:
        raise RulesError(f"{path}: missing 'rules' (a list of rules); or add 'extends: default' to only add to "
                         "or adjust the packaged rules.")
    if raw_rules is not None and not isinstance(raw_rules, list):
        raise RulesError(f"{path}: 'rules' must be a list of rules (each starting with '- id: ...').")
    own: dict[str, int] = {}
    for i, item in enumerate(raw_rules or []):
        rule = _parse_rule(item, i, str(path))
        if rule["id"] in own:
            raise RulesError(f"{path}: rules[{i}] (id '{rule['id']}'): duplicate id, already used by "
                             f"rules[{own[rule['id']]}]; give each rule a unique id.")
        own[rule["id"]] = i
        existing = next((j for j, r in enumerate(rules) if r["id"] == rule["id"]), None)
        if existing is None:
            rules.append(rule)
        else:
            rules[existing] = rule  # an extending file overrides the default rule with this id
    disable = data.get("disable") or []
    if not isinstance(disable, list):
        raise RulesError(f"{path}: 'disable' must be a list of rule ids.")
    known = {r["id"] for r in rules}
    for rid in disable:
        if rid not in known:
            close = difflib.get_close_matches(str(rid), sorted(known), n=1)
            raise RulesError(f"{path}: disable: no rule has id '{rid}'."
                             + (f" Did you mean '{close[0]}'?" if close else ""))
    rules = [r for r in rules if r["id"] not in set(disable)]
    if not rules:
        raise RulesError(f"{path}: no rules left; add at least one rule.")
    return rules, context, version, [*blobs, raw]


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load and validate a rules file (None: the packaged default). Errors name file, rule, field and fix."""
    path = Path(path) if path is not None else DEFAULT_RULES
    rules, context, version, blobs = _parse_file(path)
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(hashlib.sha256(blob).digest())
    return RuleSet(tuple(Rule(**r) for r in rules), _build_context(context, str(path)), str(path), version,
                   digest.hexdigest())
