"""Red-flag rules: NegEx-style negation / history / other-person context, and rules-file validation.

Run: ``pytest tests/safety/test_redflags.py -q``.
"""

from __future__ import annotations

import pytest

from distillm_edge.safety.redflags import DEFAULT_RULES, RulesError, active, load_rules


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def _state(rules, text):
    """{rule_id: suppressed reason or None} (active wins when a rule hits twice)."""
    out = {}
    for h in rules.check(text):
        if out.get(h.rule_id, "x") is not None:
            out[h.rule_id] = h.suppressed
    return out


@pytest.mark.parametrize("text, rule", [
    ("Chest pain, no fever, and it radiates to my left arm.", "cardiac.chest_pain_radiation"),
    ("Crushing chest pain spreading to the jaw and I'm sweating", "cardiac.chest_pain_radiation"),
    ("No fever but chest pain going down my left arm", "cardiac.chest_pain_radiation"),
    ("I think I'm having a stroke", "neuro.stroke_signs"),
    ("Her face is drooping and her speech is slurred", "neuro.stroke_signs"),
    ("Sudden weakness in his right arm", "neuro.stroke_signs"),
    ("Worst headache of my life, came on suddenly", "neuro.thunderclap_headache"),
    ("My throat is closing up after a bee sting", "allergy.anaphylaxis"),
    ("I want to kill myself", "mental_health.suicidal_ideation"),
    ("The bleeding won't stop", "bleeding.severe_haemorrhage"),
    ("I'm 9 weeks pregnant and started bleeding", "obstetric.bleeding_in_pregnancy"),
    ("My 6 week old has a fever of 38.2", "pediatric.febrile_young_infant"),
    ("My baby has a fever and is floppy and not feeding", "pediatric.fever_lethargy"),
    ("He has a fever and is confused and breathing fast", "infection.sepsis_signs"),
])
def test_positive_fires(rules, text, rule):
    assert _state(rules, text).get(rule, "absent") is None, rules.check(text)


@pytest.mark.parametrize("text, rule, reason", [
    ("Denies chest pain radiating to the arm.", "cardiac.chest_pain_radiation", "negated"),
    ("No history of stroke.", "neuro.stroke_signs", "negated"),
    ("Patient is not suicidal.", "mental_health.suicidal_ideation", "negated"),
    ("Denies fever, chest pain, or sweating.", "cardiac.chest_pain_radiation", "negated"),
    ("History of stroke in 2015.", "neuro.stroke_signs", "history"),
    ("He had a heart attack 5 years ago.", "cardiac.heart_attack_suspected", "history"),
    ("My mother had a stroke.", "neuro.stroke_signs", "other_person"),
    ("Family history of MI.", "cardiac.heart_attack_suspected", "other_person"),
    ("Stroke runs in my family.", "neuro.stroke_signs", "absent"),
])
def test_context_suppresses(rules, text, rule, reason):
    state = _state(rules, text)
    assert state.get(rule, "absent") == reason, rules.check(text)
    assert rule not in {h.rule_id for h in active(rules.check(text))}


def test_negation_scope_ends_at_comma_and_but(rules):
    # "no fever" does not reach back to the chest pain; "denies X but Y" keeps Y.
    assert _state(rules, "Chest pain radiating to the arm, no fever")["cardiac.chest_pain_radiation"] is None
    assert _state(rules, "Denies fever, chest pain radiating to jaw")["cardiac.chest_pain_radiation"] is None
    assert _state(rules, "Denies headache but has slurred speech")["neuro.stroke_signs"] is None


def test_suppressed_and_active_hits_both_reported(rules):
    hits = rules.check("No history of stroke. Now his face is drooping.")
    reasons = sorted((h.suppressed or "") for h in hits if h.rule_id == "neuro.stroke_signs")
    assert reasons == ["", "negated"]
    h = next(h for h in hits if h.suppressed is None)
    assert "No history of stroke. Now his face is drooping."[h.start:h.end] == h.matched == "face is drooping"
    assert set(h.to_dict()) >= {"rule_id", "title", "severity", "advice", "start", "end", "matched", "source",
                                "suppressed"}


def test_requires_needs_the_companion_finding(rules):
    assert "cardiac.chest_pain_radiation" not in _state(rules, "Mild chest pain after coughing")
    assert _state(rules, "Chest pain, no sweating, no radiation")["cardiac.chest_pain_radiation"] == "negated"
    assert "pediatric.febrile_young_infant" not in _state(rules, "My 6 year old has a fever")


def test_default_rules_metadata(rules):
    assert rules.path == str(DEFAULT_RULES) and len(rules.sha256) == 64 and rules.version
    ids = [r.id for r in rules.rules]
    assert len(ids) == len(set(ids)) >= 15


# --- validation --------------------------------------------------------------------------------
GOOD = """
- id: local.test
  title: Test
  severity: urgent
  advice: Call someone.
  patterns: ['purple elephant']
"""


def _write(tmp_path, body, name="rules.yaml"):
    p = tmp_path / name
    p.write_text(body)
    return p


@pytest.mark.parametrize("rule_body, expect", [
    ("patterns: ['chest (pain']", ["rules[0] (id 'local.bad')", "'patterns'[0]", "not a valid regular expression",
                                   "escape"]),
    ("severity: critical", ["rules[0] (id 'local.bad')", "'severity'", "'critical'", "emergency, urgent"]),
    ("advice: null", ["rules[0] (id 'local.bad')", "missing field 'advice'"]),
    ("pattern: ['x']", ["unknown field 'pattern'", "Did you mean 'patterns'"]),
    ("patterns: ['a|']", ["matches the empty string"]),
    ("within: paragraph", ["'within'", "'sentence' or 'text'"]),
])
def test_validation_errors_name_file_rule_field_and_fix(tmp_path, rule_body, expect):
    base = {"id": "local.bad", "title": "T", "severity": "urgent", "advice": "A", "patterns": "['x y']"}
    key = rule_body.split(":")[0]
    base.pop(key, None)
    lines = [f"  {k}: {v}" for k, v in base.items()] + [f"  {rule_body}"]
    p = _write(tmp_path, "rules:\n- " + "\n".join(lines).lstrip())
    with pytest.raises(RulesError) as exc:
        load_rules(p)
    msg = str(exc.value)
    assert str(p) in msg
    for part in expect:
        assert part in msg, msg


def test_duplicate_id_and_yaml_syntax(tmp_path):
    p = _write(tmp_path, "rules:" + GOOD + GOOD)
    with pytest.raises(RulesError, match=r"rules\[1\] \(id 'local.test'\): duplicate id, already used by rules\[0\]"):
        load_rules(p)
    p = _write(tmp_path, "rules:\n  - id: [unclosed\n")
    with pytest.raises(RulesError, match=r"line \d+: not valid YAML"):
        load_rules(p)
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "missing.yaml")


def test_replace_and_extend(tmp_path):
    replaced = load_rules(_write(tmp_path, "rules:" + GOOD))
    assert [r.id for r in replaced.rules] == ["local.test"]
    assert replaced.check("a purple elephant")[0].rule_id == "local.test"
    assert replaced.check("crushing chest pain radiating to the arm") == []  # defaults gone

    ext = load_rules(_write(tmp_path, "extends: default\ndisable: [neuro.seizure]\n"
                                      "context: {negation: {before: ['nope']}}\nrules:" + GOOD, "ext.yaml"))
    ids = [r.id for r in ext.rules]
    assert "local.test" in ids and "cardiac.chest_pain_radiation" in ids and "neuro.seizure" not in ids
    assert ext.check("nope purple elephant")[0].suppressed == "negated"
    assert ext.sha256 != load_rules().sha256

    override = GOOD.replace("local.test", "neuro.stroke_signs")
    ext2 = load_rules(_write(tmp_path, "extends: default\nrules:" + override, "ext2.yaml"))
    assert [r.title for r in ext2.rules if r.id == "neuro.stroke_signs"] == ["Test"]

    with pytest.raises(RulesError, match="disable: no rule has id 'neuro.seizures'. Did you mean 'neuro.seizure'"):
        load_rules(_write(tmp_path, "extends: default\ndisable: [neuro.seizures]\n", "ext3.yaml"))
    with pytest.raises(RulesError, match="only supported value is 'default'"):
        load_rules(_write(tmp_path, "extends: other.yaml\nrules:" + GOOD, "ext4.yaml"))


@pytest.mark.parametrize("text, rule, expected", [
    # Pseudo-negations are not cues.
    ("I am not able to move my left side.", "neuro.stroke_signs", None),
    ("I can't stop the bleeding.", "bleeding.severe_haemorrhage", None),
    ("Without warning her face drooped.", "neuro.stroke_signs", None),
    # A sentence end, "but" and ";" end a cue's scope; so does the word window.
    ("No fever. Chest pain radiating to my arm.", "cardiac.chest_pain_radiation", None),
    ("No cough; now crushing chest pain down the left arm.", "cardiac.chest_pain_radiation", None),
    ("Never had anything like this in all my years of life, sudden weakness on one side.", "neuro.stroke_signs", None),
    # A negated list needs or/nor to stretch over commas; "and" does not.
    ("Denies fever, headache, nausea, or slurred speech.", "neuro.stroke_signs", "negated"),
    ("No fever, slurred speech and a droopy face.", "neuro.stroke_signs", None),
    # Post-cues reach backwards.
    ("Stroke symptoms were ruled out: no slurred speech.", "neuro.stroke_signs", "negated"),
    ("Suicide attempt at age 19, no current thoughts.", "mental_health.suicidal_ideation", "history"),
    # An acute event in the past hour is not history; a dated one is.
    ("She had a stroke an hour ago.", "neuro.stroke_signs", None),
    ("She had a stroke in 2019.", "neuro.stroke_signs", "history"),
    # A relative who is the patient now is not "other person"; their past history is.
    ("My mother is having a stroke right now.", "neuro.stroke_signs", None),
    ("My mother had a stroke when I was little.", "neuro.stroke_signs", "other_person"),
])
def test_context_edge_cases(rules, text, rule, expected):
    assert _state(rules, text).get(rule, "absent") == expected, rules.check(text)


def test_whole_word_matching(rules):
    assert _state(rules, "A routine check; she is confused.") == {}  # "uti" inside "routine" is no infection
    assert "infection.sepsis_signs" in _state(rules, "UTI with fever and confusion")


@pytest.mark.parametrize("text", [
    "A collapsed lung (pneumothorax) is treated with a chest drain.",
    "Collapsed arches cause flat feet.",
])
def test_anatomical_collapse_is_not_a_collapsed_person(rules, text):
    assert "neuro.unresponsive" not in _state(rules, text), rules.check(text)
