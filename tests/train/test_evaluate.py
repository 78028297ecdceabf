"""Evaluation: accuracy judged by the verifier, pass@k, per-question predictions, perplexity, the CLI."""

import itertools
import json
import math
import shutil

import pytest
from export_helpers import memorized_checkpoint

from frontload.core.config import ConfigError
from frontload.core.errors import FrontloadError
from frontload.core.events import RunFolder, read_events
from frontload.train.evaluate import EvalConfig, TaskSpec, evaluate, evaluate_model, pass_at_k, perplexity


@pytest.fixture(scope="module")
def ckpt(tiny_tokenizer, tmp_path_factory):
    return memorized_checkpoint(tiny_tokenizer, tmp_path_factory)


def write_task(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pass_at_k_is_the_unbiased_estimator():
    # Brute force: the chance that a random k-subset of n samples, c of them correct, holds a correct one.
    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 1, 6), (4, 4, 2)]:
        subsets = list(itertools.combinations(range(n), k))
        expected = sum(any(i < c for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_accuracy_predictions_and_summary_events(ckpt, tmp_path):
    # The memorized model answers 42 to every chat question; golds decide what counts as correct.
    task = write_task(
        tmp_path / "heldout.jsonl",
        [
            {"id": "a", "question": "What is 12 + 30?", "answer": "42"},
            {"id": "b", "question": "What is 40 + 2?", "answer": "42.0"},  # equal as a number
            {"id": "c", "question": "What is 6 * 7?", "answer": 42},
            {"id": "d", "question": "What is 21 + 20?", "answer": "41"},
        ],
    )
    run = RunFolder(tmp_path / "run", stage="eval", config={})
    results = evaluate(ckpt, [TaskSpec(path=str(task))], EvalConfig(max_new_tokens=24, progress=False), run)
    run.close()
    assert [(r.task, r.metric, r.value, r.n_questions) for r in results if r.metric == "accuracy"] == [
        ("heldout", "accuracy", 0.75, 4)
    ]
    preds, bad = read_events(tmp_path / "run/events/predictions.rank0.jsonl")
    assert bad == 0 and [p["question_id"] for p in preds] == ["a", "b", "c", "d"]
    assert [p["verdict"] for p in preds] == ["correct", "correct", "correct", "wrong"]
    assert all(p["prediction"] == "42" and p["checkpoint"] == str(ckpt) and p["phase"] == "sft" for p in preds)
    evals, _ = read_events(tmp_path / "run/events/evals.rank0.jsonl")
    assert [(e["task"], e["metric"], e["value"], e["step"]) for e in evals if e["metric"] == "accuracy"] == [
        ("heldout", "accuracy", 0.75, 1)
    ]
    # Every question's score is kept, so two arms can be compared question by question.
    scores, _ = read_events(tmp_path / "run/events/question_scores.rank0.jsonl")
    assert [(q["question_id"], q["value"]) for q in scores if q["metric"] == "accuracy"] == [
        ("a", 1.0),
        ("b", 1.0),
        ("c", 1.0),
        ("d", 0.0),
    ]


def test_sampled_pass_at_k_from_a_corpus_style_task(ckpt, tmp_path):
    # Fields are dotted paths, as in frontload corpus records; the verifier judges each sample.
    task = write_task(
        tmp_path / "corpus.jsonl",
        [
            {"text": "x", "metadata": {"problem": "What is 12 + 30?", "answer": "42"}},
            {"text": "y", "metadata": {"problem": "What is 1 + 1?", "answer": "2"}},
        ],
    )
    spec = TaskSpec(path=str(task), question_field="metadata.problem", answer_field="metadata.answer", name="mixed")
    cfg = EvalConfig(
        samples=4, temperature=0.7, pass_k=[1, 2], max_new_tokens=24, progress=False, teacher_forced=False
    )
    results = {(r.metric, r.k): r for r in evaluate(ckpt, [spec], cfg)}
    assert set(results) == {("pass@1", None), ("pass@k", 2)}
    p1, p2 = results[("pass@1", None)], results[("pass@k", 2)]
    assert p1.n_samples == 4 and p1.n_questions == 2
    assert 0.25 <= p1.value <= 0.5  # the 42-question is mostly right, the other never
    assert p1.value <= p2.value <= 0.5


def test_bad_task_files_and_configs_are_named(ckpt, tmp_path):
    no_answer = write_task(tmp_path / "broken.jsonl", [{"id": "q7", "question": "What?"}])
    with pytest.raises(FrontloadError, match="broken.jsonl: record q7: no answer field 'answer'"):
        evaluate(ckpt, [TaskSpec(path=str(no_answer))], EvalConfig(progress=False))
    with pytest.raises(ConfigError, match="temperature"):
        EvalConfig(samples=4, temperature=0.0)
    with pytest.raises(ConfigError, match="template"):
        TaskSpec(path="x.jsonl", template="Q: {problem}")


def test_perplexity_is_lower_on_what_the_model_saw(ckpt, tiny_tokenizer, tmp_path):
    import torch
    from export_helpers import examples
    from train_data import web_shards, write_shards

    from frontload.train.checkpoint import load_model
    from frontload.train.model import forward

    model, _, _ = load_model(ckpt)
    seen = [tiny_tokenizer.encode(p + r) + [tiny_tokenizer.eod_id] for p, r in examples()]
    seen_dir = write_shards(tmp_path / "seen", tiny_tokenizer, seen * 4)
    web_dir = web_shards(tmp_path / "web", tiny_tokenizer, max_docs=8)
    cfg = EvalConfig(perplexity=[str(seen_dir), str(web_dir)], perplexity_tokens=512, progress=False)
    seen_ppl, web_ppl = evaluate_model(model, tiny_tokenizer, [], cfg)
    assert seen_ppl.metric == "perplexity" and seen_ppl.task == "seen"
    assert seen_ppl.value < web_ppl.value
    # It is exp of the mean next-token loss over windows of the model's context.
    stream = torch.tensor([t for d in seen * 4 for t in d])
    windows = (len(stream) - 1) // 64
    x = torch.stack([stream[w * 64 : w * 64 + 64] for w in range(windows)])
    y = torch.stack([stream[w * 64 + 1 : w * 64 + 65] for w in range(windows)])
    with torch.no_grad():
        expected = math.exp(float(forward(model, x, labels=y).mean()))
    assert seen_ppl.value == pytest.approx(expected, rel=1e-5)
    assert seen_ppl.n_samples == windows * 64
    # A shard set made with another tokenizer is refused, naming its manifest.
    bad = tmp_path / "other_tokenizer"
    shutil.copytree(seen_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**manifest, "tokenizer_fingerprint": "0" * 16}))
    with pytest.raises(FrontloadError, match="other_tokenizer/manifest.json: tokenizer_fingerprint"):
        perplexity(model, tiny_tokenizer, bad, cfg)


def test_eval_command_prints_a_table(ckpt, tmp_path, capsys):
    from frontload.cli import main

    task = write_task(tmp_path / "t.jsonl", [{"question": "What is 6 * 7?", "answer": "42"}])
    rc = main(["eval", str(ckpt), "--tasks", str(task), "--max-new-tokens", "24", "--out", str(tmp_path / "run")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "1.0000" in out
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["stage"] == "eval" and config["parent"] == str(ckpt)
    assert main(["eval", str(ckpt), "--tasks", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.vllm
def test_vllm_backend_gives_the_same_answers(ckpt, tmp_path):
    pytest.importorskip("vllm")
    task = write_task(
        tmp_path / "t.jsonl",
        [{"id": "a", "question": "What is 6 * 7?", "answer": "42"}, {"id": "b", "question": "2 + 2?", "answer": "4"}],
    )
    runs, nll = {}, {}
    for backend in ("megatron", "vllm"):
        with RunFolder(tmp_path / backend, stage="eval", config={}) as run:
            results = evaluate(ckpt, [TaskSpec(path=str(task))], EvalConfig(max_new_tokens=24, backend=backend), run)
        assert [(r.metric, r.value) for r in results if r.metric == "accuracy"] == [("accuracy", 0.5)]
        # Teacher-forced metrics always come from the Megatron model itself: the same on both back ends.
        nll[backend] = next(r.value for r in results if r.metric == "answer_nll")
        runs[backend], _ = read_events(tmp_path / backend / "events/predictions.rank0.jsonl")
    fields = ("question_id", "completion", "prediction", "verdict", "finish_reason", "length")
    assert [[p[f] for f in fields] for p in runs["vllm"]] == [[p[f] for f in fields] for p in runs["megatron"]]
    assert nll["vllm"] == nll["megatron"]


def _hand_nll(model, prompt_ids, response_ids, lo, hi):
    """Mean NLL of response_ids[lo:hi] after prompt_ids: one explicit forward and log_softmax."""
    import torch

    from frontload.train.model import forward

    ids = torch.tensor(prompt_ids + response_ids)
    with torch.no_grad():
        logp = torch.log_softmax(forward(model, ids[None])[0].float(), dim=-1)
    p = len(prompt_ids)
    return -sum(float(logp[p + j - 1, response_ids[j]]) for j in range(lo, hi)) / (hi - lo)


def test_teacher_forced_metrics_equal_a_hand_computation(ckpt, tiny_tokenizer, tmp_path):
    from frontload.core.chat import render_prompt, render_response
    from frontload.train.checkpoint import load_model

    rows = [
        {"id": "a", "question": "What is 6 * 7?", "answer": "42", "solution": "6 * 7 = 42"},
        {"id": "b", "question": "What is 3 / 4 of 1?", "answer": "3/4"},  # no solution: answer_nll only
        {"id": "c", "question": "Name 12 + 30.", "answer": "42", "solution": "12 + 30 = 42"},
    ]
    task = write_task(tmp_path / "tf.jsonl", rows)
    with RunFolder(tmp_path / "run", stage="eval", config={}) as run:
        results = evaluate(ckpt, [TaskSpec(path=str(task))], EvalConfig(max_new_tokens=4, progress=False), run)
    scores, _ = read_events(tmp_path / "run/events/question_scores.rank0.jsonl")
    got = {(s["question_id"], s["metric"]): s for s in scores}
    model, _, _ = load_model(ckpt)
    tok = tiny_tokenizer
    for row in rows:
        prompt = tok.encode(render_prompt(row["question"]))
        # answer_nll: the answer sentence alone; scored = the shortest run of its tokens spelling answer + "}".
        answer = tok.encode(render_response(None, row["answer"]))
        lo, hi = min(
            (
                (i, j)
                for i in range(len(answer))
                for j in range(i + 1, len(answer) + 1)
                if row["answer"] + "}" in tok.decode(answer[i:j])
            ),
            key=lambda w: w[1] - w[0],
        )
        expected = _hand_nll(model, prompt, answer, lo, hi)
        assert got[(row["id"], "answer_nll")]["value"] == pytest.approx(expected, rel=1e-4)
        assert got[(row["id"], "answer_nll")]["n"] == hi - lo
        if "solution" in row:
            response = tok.encode(render_response(row["solution"], row["answer"]))
            expected = _hand_nll(model, prompt, response, 0, len(response))
            assert got[(row["id"], "solution_nll")]["value"] == pytest.approx(expected, rel=1e-4)
            assert got[(row["id"], "solution_nll")]["n"] == len(response)
        else:
            assert (row["id"], "solution_nll") not in got
    summary = {r.metric: r for r in results}
    assert summary["answer_nll"].n_questions == 3 and summary["solution_nll"].n_questions == 2
    assert summary["solution_nll"].value == pytest.approx(
        (got[("a", "solution_nll")]["value"] + got[("c", "solution_nll")]["value"]) / 2
    )
    # The memorized model has seen "The answer is \\boxed{42}": 42 is far likelier than 3/4.
    assert got[("a", "answer_nll")]["value"] < got[("b", "answer_nll")]["value"]


def test_sampled_metrics_report_the_pass_at_k_curve(ckpt, tmp_path):
    from frontload.train.evaluate import pass_k_curve

    assert pass_k_curve(32) == [2, 4, 8, 16, 32] and pass_k_curve(6) == [2, 4, 6] and pass_k_curve(1) == []
    task = write_task(tmp_path / "t.jsonl", [{"question": "What is 6 * 7?", "answer": "42"}])
    cfg = EvalConfig(samples=8, temperature=1.0, max_new_tokens=12, progress=False, teacher_forced=False)
    results = evaluate(ckpt, [TaskSpec(path=str(task))], cfg)
    assert [(r.metric, r.k) for r in results] == [("pass@1", None), ("pass@k", 2), ("pass@k", 4), ("pass@k", 8)]
    values = [r.value for r in results]
    assert values == sorted(values)  # pass@k never falls as k grows
