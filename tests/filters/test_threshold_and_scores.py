"""Threshold rules (accepted and refused) and the scorers' values on hand-made records."""

import pytest
from datatrove.data import Document

from frontload.filters.decontam import EvalIndex, normalize_tokens
from frontload.filters.scores import QualityScorer, VerifyScorer, nonprintable_count, repetition_measures
from frontload.filters.synthetic import rollout
from frontload.filters.threshold import Rule, RuleError, ThresholdFilter

META = {
    "verify_v1": "correct",
    "length_v1": 120,
    "format_v1": "ok",
    "truncated_v1": False,
    "pass_rate_v1": 0.5,
    "family": "fractions",
    "repetition_v1": {"dup_line_frac": 0.05},
}


@pytest.mark.parametrize(
    ("rule", "keep"),
    [
        ('verify_v1 == "correct" and length_v1 < 4096', True),
        ('verify_v1 == "correct" and length_v1 < 100', False),
        ("0.2 <= pass_rate_v1 <= 0.8", True),
        ("not truncated_v1", True),
        ('family in ["fractions", "arithmetic"]', True),
        ('family not in ("fractions",)', False),
        ("repetition_v1.dup_line_frac < 0.1 or length_v1 > 10000", True),
        ("length_v1 > -1 and verify_v1 != 'wrong'", True),
        ("verify_v1 > 3", False),  # a string compared with a number fails the clause instead of raising
    ],
)
def test_rules_evaluate(rule, keep):
    assert Rule(rule).evaluate(META)[0] is keep


def test_drop_reason_names_the_failing_clause_or_missing_field():
    rule = Rule('verify_v1 == "correct" and length_v1 < 100')
    assert rule.evaluate(META) == (False, "threshold:length_v1 < 100")
    assert Rule("score_v9 > 1").evaluate(META) == (False, "threshold:missing:score_v9")
    assert Rule("repetition_v1.top_2gram_char_frac < 1").evaluate(META) == (
        False,
        "threshold:missing:repetition_v1.top_2gram_char_frac",
    )
    keep = ThresholdFilter("length_v1 < 100", prefix="band").filter(Document(text="", id="x", metadata=META))
    assert keep == (False, "band:length_v1 < 100")


@pytest.mark.parametrize(
    ("rule", "token"),
    [
        ("__import__('os').system('true')", "__import__('os').system('true')"),
        ("length_v1.__class__ == 1", "length_v1.__class__"),
        ("len(trace) > 3", "len(trace)"),
        ("length_v1 + 1 > 3", "length_v1 + 1"),
        ("[x for x in y]", "[x for x in y]"),
        ("meta['a'] == 1", "meta['a']"),
        ("lambda: 1", "lambda: 1"),
        ("length_v1 is None", "length_v1 is None"),
        ("family in [verify_v1]", "verify_v1"),
    ],
)
def test_unsafe_rules_are_refused_naming_the_token(rule, token):
    with pytest.raises(RuleError) as e:
        Rule(rule)
    assert repr(rule) in str(e.value) and repr(token) in str(e.value)


@pytest.mark.parametrize("rule", ["", "verify_v1 ==", "a = 1"])
def test_malformed_rules_are_refused(rule):
    with pytest.raises(RuleError, match="threshold rule"):
        Rule(rule)


def _doc(**kw) -> Document:
    row = rollout("What is 3 + 4?", "7", "3 + 4 = 7.", "7", "p", 0)
    row["metadata"].update(kw)
    return Document(text=row["text"], id=row["id"], metadata=row["metadata"])


def test_verify_scorer_extracts_missing_predictions_and_counts_missing_gold():
    docs = [
        _doc(),
        _doc(prediction=None),
        _doc(prediction="8"),
        _doc(answer=None),
        _doc(prediction=None, completion="no tags"),
    ]
    out = list(VerifyScorer().run(iter(docs)))
    assert [d.metadata["verify_v1"] for d in out] == ["correct", "correct", "wrong", "unparseable", "unparseable"]
    assert out[1].metadata["prediction"] == "7"  # recovered from the rendered completion
    pooled = list(VerifyScorer(workers=2, batch_size=2).run(iter([_doc(), _doc(prediction="8"), _doc(), _doc()])))
    assert [d.metadata["verify_v1"] for d in pooled] == ["correct", "wrong", "correct", "correct"]


def test_quality_scorer_flags_format_truncation_repetition_and_control_characters():
    unclosed = _doc(completion="<think>\n3 + 4 is", finish_reason="length", prediction=None, trace=None)
    looping = _doc(trace="\n".join(["add the numbers again"] * 20))
    ok, bad, loop, ctrl = QualityScorer().run(
        iter([_doc(), unclosed, looping, _doc(completion="<think>a</think>\x00\x07 7")])
    )
    assert ok.metadata["format_v1"] == "ok" and ok.metadata["truncated_v1"] is False
    assert bad.metadata["format_v1"] == "unclosed_think" and bad.metadata["truncated_v1"] is True
    assert loop.metadata["repetition_v1"]["dup_line_frac"] > 0.9 > ok.metadata["repetition_v1"]["dup_line_frac"]
    assert ctrl.metadata["nonprintable_v1"] == 2 and ok.metadata["nonprintable_v1"] == 0
    assert (
        next(QualityScorer().run(iter([_doc(completion="The answer is 7.", parse={})]))).metadata["format_v1"]
        == "no_think"
    )
    assert nonprintable_count("tab\tand newline\n") == 0
    assert repetition_measures("")["dup_line_frac"] == 0.0


def test_eval_index_short_questions_match_whole_and_long_ones_by_ngram():
    index = EvalIndex.build("heldout", ["What is 2 + 3?", "one two three four five six seven eight nine"], n=8)
    tok = normalize_tokens
    assert index.matches(tok("what is 2 3"), [])
    assert not index.matches(tok("What is 2 + 3 + 4?"), [])  # a longer problem is not the short question
    assert index.matches(tok("intro"), tok("so two three four five six seven eight nine ten"))
    assert not index.matches(tok("intro"), tok("two three four five six seven eight"))  # 7 words only
    assert not index.matches(tok("What is 2 + 4?"), [])  # numbers are not folded together


def test_eval_questions_from_parquet_and_jsonl(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from frontload.filters.decontam import build_eval_indexes

    pq.write_table(pa.table({"prompt": ["What is 2 + 3?", None], "answer": ["5", "x"]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(json.dumps({"prompt": "Name the capital of France."}) + "\n\n")
    a, b = build_eval_indexes([str(tmp_path / "a.parquet"), f"capitals={tmp_path / 'b.jsonl'}"], 13, "prompt")
    assert (a.name, a.questions, a.short) == ("a", 1, {"what is 2 3"})
    assert (b.name, b.short) == ("capitals", {"name the capital of france"})
