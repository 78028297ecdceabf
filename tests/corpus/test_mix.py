"""Mix schedules: exact plans from shard manifests, Megatron blended datasets, resume and SFT masks."""

from __future__ import annotations

import pickle
import tomllib
from collections import Counter

import pytest
import torch
from mix_helpers import EOD, PROMPT, RESPONSE, sft_docs, text_docs, write_shard_set

from frontload.core.config import ConfigError, from_mapping
from frontload.corpus.mix import MixError, MixSchedule, MixStage, MixWarning
from frontload.corpus.mix_data import build_phase_dataset
from frontload.corpus.mix_plan import MixPlan, plan_mix

SEQ = 32
RANGES = {"web": (10, 100), "reasoning": (100, 200), "code": (200, 300)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return {
        "web": write_shard_set(root / "web", text_docs(*RANGES["web"], 3000, seed=0), files=3),
        "reasoning": write_shard_set(root / "reasoning", text_docs(*RANGES["reasoning"], 600, seed=1), files=2),
        "code": write_shard_set(root / "code", text_docs(*RANGES["code"], 300, seed=2)),
    }


def two_stage() -> MixSchedule:
    return MixSchedule(
        pretrain=[
            MixStage(tokens=24_000, blend={"web": 1.0}),
            MixStage(tokens=40_000, blend={"web": 0.6, "reasoning": 0.3, "code": 0.1}),
        ]
    )


def source_of(tokens: torch.Tensor) -> str:
    """The source whose id range holds the sample's non-EOD tokens (each source has its own range)."""
    ids = tokens[tokens != EOD]
    hits = [name for name, (lo, hi) in RANGES.items() if bool(((ids >= lo) & (ids < hi)).all())]
    assert len(hits) == 1, f"sample mixes sources: {ids.tolist()}"
    return hits[0]


def test_plan_has_exact_numbers_from_manifests(shards):
    plan = plan_mix(two_stage(), shards, seq_len=SEQ, seed=7)
    ph = plan.phase("pretrain")
    assert [s.samples for s in ph.stages] == [24_000 // SEQ, 40_000 // SEQ]
    assert ph.stages[1].start_sample == ph.stages[0].samples
    web_tokens = ph.sources["web"].tokens
    assert web_tokens == sum(len(d) for d in text_docs(*RANGES["web"], 3000, seed=0))
    s1 = ph.stages[1].sources
    assert sum(sp.samples for sp in s1.values()) == ph.stages[1].samples
    for name, w in {"web": 0.6, "reasoning": 0.3, "code": 0.1}.items():
        assert abs(s1[name].share - w) <= 1 / ph.stages[1].samples
        assert s1[name].tokens == s1[name].samples * SEQ
    assert s1["web"].cumulative_epochs == pytest.approx(
        (ph.stages[0].sources["web"].samples + s1["web"].samples) * SEQ / web_tokens
    )
    rows = plan.rows()  # flat, for analysis
    assert [(r["stage"], r["source"]) for r in rows] == [(0, "web"), (1, "code"), (1, "reasoning"), (1, "web")]
    assert sum(r["tokens"] for r in rows if r["stage"] == 1) == ph.stages[1].tokens
    table = plan.format_table()
    for needle in ("pretrain", "reasoning", "code", "epochs", f"{s1['web'].samples:,}"):
        assert needle in table
    # Same inputs, same fingerprint; a different seed or budget changes it.
    assert plan_mix(two_stage(), shards, seq_len=SEQ, seed=7).fingerprint == plan.fingerprint
    assert plan_mix(two_stage(), shards, seq_len=SEQ, seed=8).fingerprint != plan.fingerprint


def test_plan_json_round_trip(shards, tmp_path):
    plan = plan_mix(two_stage(), shards, seq_len=SEQ, seed=7)
    back = MixPlan.read(plan.write(tmp_path / "plan.json"))
    assert back.to_dict() == plan.to_dict()
    assert back.format_table() == plan.format_table()


def test_realised_token_share_matches_plan(shards, tmp_path):
    plan = plan_mix(two_stage(), shards, seq_len=SEQ, seed=7)
    ds = build_phase_dataset(plan, shards, tmp_path / "cache")
    ph = plan.phase("pretrain")
    st = ph.stages[1]
    seen = {name: 0 for name in RANGES}
    for k in range(st.start_sample, st.start_sample + st.samples):
        item = ds[k]
        assert item["stage"] == 1
        assert item["source"] == source_of(item["tokens"])  # the label names the right shard set
        seen[item["source"]] += item["tokens"].numel()
    total = sum(seen.values())
    # Tolerance: one sample of the stage (Megatron's greedy blending is within one sample of the weights).
    for name, w in {"web": 0.6, "reasoning": 0.3, "code": 0.1}.items():
        assert abs(seen[name] / total - w) <= 1 / st.samples + 1e-9, (name, seen)
        assert seen[name] == st.sources[name].tokens  # exactly what the plan printed
    assert {ds[k]["source"] for k in range(st.start_sample)} == {"web"}
    # What a run resumed at k has consumed per source, from the indices alone.
    for k in (0, 7, st.start_sample, st.start_sample + 101, len(ds)):
        seen_k = Counter(ds[j]["source"] for j in range(k))
        assert ds.consumed_by_source(k) == dict(sorted(seen_k.items()))


def test_resume_at_k_continues_exactly(shards, tmp_path):
    plan = plan_mix(two_stage(), shards, seq_len=SEQ, seed=7)
    path = plan.write(tmp_path / "plan.json")
    full = build_phase_dataset(plan, shards, tmp_path / "cache")
    uninterrupted = [full[k] for k in range(len(full))]
    boundary = plan.phase("pretrain").stages[1].start_sample
    # A resumed run: a new process reads the plan file and builds from a cold cache of its own.
    resumed = build_phase_dataset(MixPlan.read(path), shards, tmp_path / "cache-resumed")
    for k in (0, 13, boundary - 1, boundary, boundary + 57, len(full) - 4):
        for j in range(k, min(k + 4, len(full))):
            a, b = uninterrupted[j], resumed[j]
            assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["labels"], b["labels"]), j
            assert (a["source"], a["stage"]) == (b["source"], b["stage"])
    # A different seed gives a different order (the seed matters, so determinism is not vacuous).
    other = build_phase_dataset(plan_mix(two_stage(), shards, seq_len=SEQ, seed=8), shards, tmp_path / "c3")
    assert not all(torch.equal(other[k]["tokens"], uninterrupted[k]["tokens"]) for k in range(20))


def test_source_stream_continues_across_stages(shards, tmp_path):
    """web is read for under one epoch over both stages: no web sequence may come twice."""
    plan = plan_mix(two_stage(), shards, seq_len=SEQ, seed=7)
    assert plan.phase("pretrain").stages[1].sources["web"].cumulative_epochs < 1
    ds = build_phase_dataset(plan, shards, tmp_path / "cache")
    web = [tuple(ds[k]["tokens"].tolist()) for k in range(len(ds)) if ds[k]["source"] == "web"]
    assert len(web) == len(set(web))


def test_second_build_loads_index_caches(shards, tmp_path):
    plan = plan_mix(two_stage(), shards, seq_len=SEQ, seed=7)
    cache = tmp_path / "cache"
    first = build_phase_dataset(plan, shards, cache)
    files = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert any(p.name.endswith("dataset_index.npy") for p in files)
    assert any(p.name.endswith("shuffle_index.npy") for p in files)
    again = build_phase_dataset(plan, shards, cache)
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == files
    assert torch.equal(first[len(first) - 1]["tokens"], again[len(again) - 1]["tokens"])


def test_sft_loss_mask_covers_only_responses(tmp_path):
    docs, masks = sft_docs(300, seed=3)
    dirs = {"chat": write_shard_set(tmp_path / "chat", docs, masks=masks, files=2)}
    plan = plan_mix(MixSchedule(sft=[MixStage(epochs=2, blend={"chat": 1.0})]), dirs, seq_len=SEQ, seed=1)
    ds = build_phase_dataset(plan, dirs, tmp_path / "cache", phase="sft")
    assert len(ds) == plan.phase("sft").stages[0].samples
    on = off = 0
    for k in range(len(ds)):
        item = ds[k]
        labels, mask = item["labels"], item["loss_mask"]
        assert mask.dtype == torch.float32 and item["tokens"].dtype == torch.int64
        response = ((labels >= RESPONSE[0]) & (labels < RESPONSE[1])) | (labels == EOD)
        prompt = (labels >= PROMPT[0]) & (labels < PROMPT[1])
        assert torch.equal(mask.bool(), response), k
        assert not mask[prompt].any()
        on, off = on + int(mask.sum()), off + int(prompt.sum())
    assert on > 0 and off > 0


def test_errors_name_stage_and_source(shards, tmp_path):
    with pytest.raises(MixError, match=r"pretrain\[1\]: source 'math' has no shard set"):
        plan_mix(
            [MixStage(tokens=1000, blend={"web": 1.0}), MixStage(tokens=1000, blend={"math": 1.0})],
            shards,
            seq_len=SEQ,
            seed=1,
        )
    other = write_shard_set(tmp_path / "other", text_docs(10, 100, 50, seed=5), tokenizer_fingerprint="another")
    with pytest.raises(MixError, match=r"pretrain\[0\]: source 'other' was tokenized with tokenizer another"):
        plan_mix(
            [MixStage(tokens=1000, blend={"web": 0.5, "other": 0.5})], {**shards, "other": other}, seq_len=SEQ, seed=1
        )
    with pytest.raises(MixError, match=r"pretrain\[1\]: source 'code' would be read .* beyond its repeat cap of 2"):
        plan_mix(
            MixSchedule(
                pretrain=[MixStage(tokens=5000, blend={"code": 1.0}), MixStage(epochs=2, blend={"code": 1.0})],
                repeat_caps={"code": 2},
            ),
            shards,
            seq_len=SEQ,
            seed=1,
        )
    with pytest.warns(MixWarning, match=r"pretrain\[0\]: source 'code' is repeated 5.\d+ epochs"):
        plan = plan_mix([MixStage(epochs=5, blend={"code": 1.0})], shards, seq_len=SEQ, seed=1)
    assert plan.warnings and "code" in plan.format_table()


def test_shard_set_changed_after_planning_is_refused(shards, tmp_path):
    dirs = {"code": write_shard_set(tmp_path / "code", text_docs(200, 300, 100, seed=2))}
    plan = plan_mix([MixStage(tokens=2000, blend={"code": 1.0})], dirs, seq_len=SEQ, seed=1)
    write_shard_set(tmp_path / "code", text_docs(200, 300, 120, seed=9))
    with pytest.raises(MixError, match=r"source 'code': shard set .* changed since the plan was made"):
        build_phase_dataset(plan, dirs, tmp_path / "cache")


def test_schedule_from_toml_and_its_errors():
    doc = tomllib.loads(
        """
        [mix]
        repeat_caps = { reasoning = 3 }
        pretrain = [ { tokens = 6e6, blend = { web = 1.0 } },
                     { tokens = 4e6, blend = { web = 0.8, reasoning = 0.2 } },
                     { source_tokens = { web = 3.2e6, reasoning = 8e5 } } ]
        sft = [ { epochs = 2, blend = { chat = 1 } } ]
        """
    )
    sched = from_mapping(MixSchedule, doc["mix"], where="study.toml: [mix]")
    assert sched.pretrain[1].weights == {"web": 0.8, "reasoning": 0.2}
    assert sched.pretrain[2].weights == {"web": 3.2e6, "reasoning": 8e5}
    assert list(sched.phases()) == ["pretrain", "sft"]
    bad = {"pretrain": [{"tokens": 1e6, "blend": {"web": 1.0}}, {"tokens": 1e6, "blend": {"web": -0.5}}]}
    with pytest.raises(ConfigError, match=r"\[mix\]\.pretrain\[1\]\.blend\.web: must be a non-negative number"):
        from_mapping(MixSchedule, bad, where="study.toml: [mix]")
    zero = {"pretrain": [{"tokens": 1e6, "blend": {"web": 0, "reasoning": 0.0}}]}
    with pytest.raises(ConfigError, match=r"pretrain\[0\]\.blend: all weights are zero"):
        from_mapping(MixSchedule, zero, where="[mix]")
    with pytest.raises(ConfigError, match=r"pretrain\[0\]\.tokens: give exactly one budget"):
        from_mapping(MixSchedule, {"pretrain": [{"tokens": 1e6, "samples": 10, "blend": {"web": 1}}]}, where="[mix]")


def test_stage_mixing_sft_and_plain_text_pickles_for_workers(shards, tmp_path):
    docs, masks = sft_docs(200, seed=4)
    dirs = {"web": shards["web"], "chat": write_shard_set(tmp_path / "chat", docs, masks=masks)}
    plan = plan_mix([MixStage(tokens=8000, blend={"web": 1.0, "chat": 1.0})], dirs, seq_len=SEQ, seed=2)
    ds = build_phase_dataset(plan, dirs, tmp_path / "cache")
    copy = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker started with spawn receives
    kinds = set()
    for k in range(len(ds)):
        a, b = ds[k], copy[k]
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["loss_mask"], b["loss_mask"])
        kinds.add(a["source"])
        if a["source"] == "web":
            assert bool((a["loss_mask"] == 1).all())  # plain text: loss on every token
    assert kinds == {"web", "chat"}


def test_shards_rebuilt_in_place_do_not_hit_stale_index_caches(tmp_path):
    """Same path and sample budget, other documents: the new build must not reuse the old index
    (Megatron keys its cache on the path; a stale sample index would cut the new documents wrongly)."""
    folder, cache = tmp_path / "code", tmp_path / "cache"
    stage = [MixStage(tokens=2000, blend={"code": 1.0})]
    dirs = {"code": write_shard_set(folder, text_docs(200, 300, 100, seed=2, min_len=9, max_len=10), fingerprint="v1")}
    build_phase_dataset(plan_mix(stage, dirs, seq_len=SEQ, seed=1), dirs, cache)
    write_shard_set(folder, text_docs(500, 600, 100, seed=2, min_len=39, max_len=40), fingerprint="v2")
    new = build_phase_dataset(plan_mix(stage, dirs, seq_len=SEQ, seed=1), dirs, cache)
    for k in range(len(new)):
        tokens = new[k]["tokens"]
        assert tokens.numel() == SEQ and int((tokens == EOD).sum()) <= 1  # documents are 40 tokens long
        assert int(tokens[tokens != EOD].min()) >= 500
