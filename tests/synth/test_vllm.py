"""Trace generation for real: the pipeline starts vllm-cpu on a tiny random Llama and samples rollouts."""

import json

import pytest

from frontload.synth.generate import GenerateConfig, generate_traces
from frontload.synth.sources import FileSource, GeneratorSource, iter_problems, write_source

pytestmark = pytest.mark.vllm


def test_vllm_cpu_rollouts_through_the_pipeline(tmp_path, tiny_llama):
    pytest.importorskip("vllm")
    # Ten generated problems plus one far longer than the context, which the server must reject.
    rows = [
        {"question": d.metadata["problem"], "answer": d.metadata["answer"]}
        for d in iter_problems(GeneratorSource(families=["arithmetic", "sorting"], n=10, seed=1, difficulty=1))
    ]
    rows.append({"question": "count " * 600, "answer": "0"})
    src = tmp_path / "problems.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_source(tmp_path / "problems", FileSource(path=str(src)))

    cfg = GenerateConfig(
        model=str(tiny_llama),
        rollouts=2,
        max_tokens=24,
        max_model_len=512,
        temperature=1.0,
        check_prompts=False,  # let the server see the overlong prompt
        vllm_args={"dtype": "float32", "max-num-seqs": 16},
    )
    m = generate_traces(tmp_path / "problems", tmp_path / "traces", cfg)
    assert (m.counts["problems"], m.counts["rollouts"], m.counts["failures"]) == (11, 20, 2)
    assert m.account.to_dict() == {"in": 22, "kept": 20, "dropped": {"rejected_by_server": 2}}

    records = [
        json.loads(x) for f in sorted((tmp_path / "traces/data").glob("*.jsonl")) for x in f.read_text().splitlines()
    ]
    assert (
        sorted(r["metadata"]["rollout"] for r in records) == [0] * 10 + [1] * 10
        and len({r["id"] for r in records}) == 20
    )
    for r in records:
        md = r["metadata"]
        assert 0 < md["usage"]["completion_tokens"] <= 24 and md["usage"]["prompt_tokens"] > 5
        assert md["finish_reason"] in ("length", "stop")
        assert md["teacher"]["model"] == str(tiny_llama.resolve()) and md["teacher"]["backend"] == "vllm"
        assert md["teacher"]["sampling"]["skip_special_tokens"] is False
        assert md["prompt"].startswith("<|user|>\n") and r["text"] == md["prompt"] + md["response"]
        assert "prediction" in md and md["completion"] is not None
    # Two rollouts of one problem are sampled with different seeds, so they differ.
    by_problem = {}
    for r in records:
        by_problem.setdefault(r["metadata"]["problem_id"], set()).add(r["metadata"]["completion"])
    assert sum(len(v) == 2 for v in by_problem.values()) >= 8
    rejects = [
        json.loads(x) for f in (tmp_path / "traces/rejects").glob("*.jsonl") for x in f.read_text().splitlines()
    ]
    assert len(rejects) == 2 and all("count count" in r["metadata"]["problem"] for r in rejects)
