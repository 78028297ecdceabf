"""Evaluation of a checkpoint: answer accuracy on task files and held-out perplexity on shard sets.

A task is any JSONL/Parquet file, folder, corpus folder or saved Hugging Face dataset with a question
and a gold answer field (read through :mod:`frontload.corpus.readers`, strictly: a bad record stops
the run with its file and line). Each question is rendered with a prompt template (by default
:func:`frontload.core.chat.render_prompt`), answered by a sampler of :mod:`frontload.train.sampling`
(the Megatron model's own KV cache, or a vLLM engine holding it), parsed with :func:`frontload.core.chat.parse_response`
and judged by :func:`frontload.filters.verify.verify_answer`.

Metrics (contract of the ``evals`` events):

* greedy decoding (``temperature = 0``, one sample): ``accuracy``;
* sampled decoding (``samples = n``): ``pass@1`` averaged over the n samples, and ``pass@k`` for each
  requested k <= n with the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (c = correct samples);
* ``perplexity`` = exp(mean next-token loss) over up to ``perplexity_tokens`` tokens of a shard set,
  on the loss-masked (response) tokens only for SFT shard sets.

Every answer is kept as a ``predictions`` event for error analysis; nothing is judged silently.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontload.core.chat import parse_response, render_prompt
from frontload.core.config import ConfigError, as_dict
from frontload.core.errors import FrontloadError


@dataclass(kw_only=True)
class TaskSpec:
    """One evaluation task: where its questions are and which fields hold question and gold answer."""

    path: str  # JSONL/Parquet file, folder of them, corpus folder or save_to_disk dataset
    name: str | None = None  # task name in events and tables; default: the file or folder name
    question_field: str = "question"  # dotted path of the question (e.g. metadata.problem)
    answer_field: str = "answer"  # dotted path of the gold answer (e.g. metadata.answer)
    id_field: str = "id"  # dotted path of a question id; "<file>:<line>" when absent
    template: str | None = None  # prompt with a {question} placeholder; None = the chat format's render_prompt
    limit: int | None = None  # evaluate only the first N questions

    def __post_init__(self) -> None:
        if self.template is not None and "{question}" not in self.template:
            raise ConfigError("template", "must contain the placeholder {question}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1, got {self.limit}")
        if self.name is None:
            p = Path(self.path)
            self.name = p.name.split(".")[0] if p.is_file() else p.name

    def prompt(self, question: str) -> str:
        """The prompt the model sees for ``question``."""
        return render_prompt(question) if self.template is None else self.template.format(question=question)


@dataclass(kw_only=True)
class EvalConfig:
    """How questions are answered and scored."""

    samples: int = 1  # completions per question (n); pass@1 is averaged over them
    temperature: float = 0.0  # 0 = greedy (then samples must be 1)
    top_p: float = 1.0  # nucleus sampling mass
    max_new_tokens: int = 256  # answer budget per completion (also capped by the model's context)
    pass_k: list[int] = field(default_factory=list)  # k values for pass@k; default [samples] when samples > 1
    batch_size: int = 32  # completions decoded together
    seed: int = 0  # sampling seed (per question and sample, independent of batching)
    verify_mode: str = "math"  # mode passed to verify_answer
    backend: str = (
        "megatron"  # "megatron" (KV-cache sampler on the model) or "vllm" (the model exported, served by vLLM)
    )
    perplexity: list[str] = field(default_factory=list)  # shard set folders for held-out perplexity
    perplexity_tokens: int = 65536  # most tokens scored per shard set
    progress: bool = True  # tqdm progress bars

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError("samples", f"must be >= 1, got {self.samples}")
        if self.temperature < 0:
            raise ConfigError("temperature", f"must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.samples > 1:
            raise ConfigError("temperature", "samples > 1 needs temperature > 0 (greedy samples are all the same)")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        for k in self.pass_k:
            if not 1 <= k <= self.samples:
                raise ConfigError("pass_k", f"each k must be in 1..samples ({self.samples}), got {k}")
        if self.backend not in ("megatron", "vllm"):
            raise ConfigError("backend", f"must be 'megatron' or 'vllm', got {self.backend!r}")
        if self.batch_size < 1 or self.perplexity_tokens < 1:
            raise ConfigError("batch_size", "batch_size and perplexity_tokens must be >= 1")

    @property
    def greedy(self) -> bool:
        """True when answers are decoded greedily (one sample, temperature 0)."""
        return self.temperature == 0


@dataclass(kw_only=True)
class EvalResult:
    """One summary number: a metric of a task (also written as an ``evals`` event)."""

    task: str
    metric: str  # "accuracy", "pass@1", "pass@k" (see k) or "perplexity"
    value: float
    n_questions: int  # questions (perplexity: windows of the model's context length)
    n_samples: int  # completions per question (perplexity: tokens scored)
    k: int | None = None  # the k of pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


@dataclass(kw_only=True)
class _Question:
    qid: str
    question: str
    gold: str
    prompt: str


def load_questions(task: TaskSpec) -> list[_Question]:
    """The questions of ``task``; a record without question or answer raises an error naming file and line."""
    from frontload.corpus.readers import RecordSpec, get_field, read_documents

    out = []
    spec = RecordSpec(text_field=task.question_field, id_field=task.id_field)
    for doc in read_documents([task.path], spec, on_error="raise"):
        # Readers flatten a record's "metadata" table into the document's metadata.
        gold = get_field(doc.metadata, task.answer_field)
        if not isinstance(gold, str | int | float):
            gold = get_field(doc.metadata, task.answer_field.removeprefix("metadata."))
        if not isinstance(gold, str | int | float) or isinstance(gold, bool):
            raise FrontloadError(f"{task.path}: record {doc.id}: no answer field {task.answer_field!r}")
        out.append(_Question(qid=str(doc.id), question=doc.text, gold=str(gold), prompt=task.prompt(doc.text)))
        if task.limit is not None and len(out) >= task.limit:
            break
    if not out:
        raise FrontloadError(f"{task.path}: task {task.name!r} has no questions")
    return out


def _log(run, kind: str, **fields: Any) -> None:
    if run is not None:
        run.log(kind, **fields)


def evaluate_task(
    model,
    tokenizer,
    task: TaskSpec,
    config: EvalConfig,
    run=None,
    *,
    checkpoint=None,
    step=None,
    phase=None,
    sampler=None,
) -> list[EvalResult]:
    """Answer every question of ``task`` and score it; predictions and summaries go to ``run``.

    ``sampler`` (a :class:`frontload.train.sampling.Sampler` holding the same model, e.g. a vLLM
    engine) answers when given; else the model itself does, with its KV cache.
    """
    from frontload.filters.verify import verify_answer
    from frontload.train.model import unwrap
    from frontload.train.sampling import MegatronSampler

    questions = load_questions(task)
    context = int(getattr(unwrap(model), "max_sequence_length", 0)) or 1 << 30
    for q in questions:
        n_tokens = len(tokenizer.encode(q.prompt))
        if n_tokens >= context:
            raise FrontloadError(
                f"{task.path}: question {q.qid}: the prompt has {n_tokens} tokens, the model's context is {context}"
            )
    sampling = dict(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        n=config.samples,
        seed=config.seed,
    )
    if sampler is None:
        sampler = MegatronSampler(model, tokenizer, batch_size=config.batch_size, progress=config.progress)
    completions = sampler.generate([q.prompt for q in questions], **sampling)
    correct = [0] * len(questions)
    for c in completions:
        q = questions[c.prompt_index]
        prediction = parse_response(c.text).answer
        verdict = verify_answer(q.gold, prediction, mode=config.verify_mode)
        correct[c.prompt_index] += verdict == "correct"
        _log(
            run,
            "predictions",
            phase=phase,
            checkpoint=checkpoint,
            step=step,
            task=task.name,
            question_id=q.qid,
            question=q.question,
            gold=q.gold,
            sample=c.sample_index,
            completion=c.text,
            prediction=prediction,
            verdict=verdict,
            correct=verdict == "correct",
            finish_reason=c.finish_reason,
            length=len(c.token_ids),
        )
    n, nq = config.samples, len(questions)
    if config.greedy:
        results = [EvalResult(task=task.name, metric="accuracy", value=sum(correct) / nq, n_questions=nq, n_samples=1)]
    else:
        results = [
            EvalResult(task=task.name, metric="pass@1", value=sum(correct) / (nq * n), n_questions=nq, n_samples=n)
        ]
        for k in config.pass_k or ([n] if n > 1 else []):
            if k == 1:
                continue
            value = sum(pass_at_k(n, c, k) for c in correct) / nq
            results.append(EvalResult(task=task.name, metric="pass@k", value=value, n_questions=nq, n_samples=n, k=k))
    for r in results:
        _log(run, "evals", phase=phase, checkpoint=checkpoint, step=step, **as_dict(r))
    return results


def _shard_stream(shard_dir: Path, tokenizer, limit: int):
    """Concatenated tokens (and loss mask) of a shard set's documents, up to ``limit`` tokens."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from frontload.core.manifest import Manifest

    manifest = Manifest.read(shard_dir, kind="shards")
    fp = manifest.extra.get("tokenizer_fingerprint")
    if fp is not None and fp != tokenizer.fingerprint:
        raise FrontloadError(
            f"{shard_dir}/manifest.json: tokenizer_fingerprint {fp} is not the checkpoint's ({tokenizer.fingerprint})"
        )
    prefixes = manifest.extra.get("prefixes") or []
    masks = manifest.extra.get("mask_prefixes") if manifest.extra.get("sft") else None
    tokens, loss_mask, total = [], [], 0
    for i, prefix in enumerate(prefixes):
        ds = IndexedDataset(str(shard_dir / prefix))
        mds = IndexedDataset(str(shard_dir / masks[i])) if masks else None
        for d in range(len(ds)):
            t = np.asarray(ds[d], dtype=np.int64)
            tokens.append(t)
            loss_mask.append(np.asarray(mds[d], dtype=np.float32) if mds is not None else np.ones(len(t), np.float32))
            total += len(t)
            if total > limit:
                break
        if total > limit:
            break
    if not tokens:
        raise FrontloadError(f"{shard_dir}: shard set holds no documents")
    return np.concatenate(tokens)[: limit + 1], np.concatenate(loss_mask)[: limit + 1]


def perplexity(
    model,
    tokenizer,
    shard_dir: str | os.PathLike,
    config: EvalConfig,
    run=None,
    *,
    checkpoint=None,
    step=None,
    phase=None,
) -> EvalResult:
    """exp(mean next-token loss) on a shard set, in non-overlapping windows of the model's context."""
    import torch

    from frontload.train import model as model_lib

    shard_dir = Path(shard_dir)
    bare = model_lib.unwrap(model)
    seq = int(bare.max_sequence_length)
    tokens, mask = _shard_stream(shard_dir, tokenizer, config.perplexity_tokens)
    n_windows = max(1, (len(tokens) - 1) // seq)
    device = next(bare.parameters()).device
    loss_sum, counted = 0.0, 0.0
    was_training = bare.training
    bare.eval()
    try:
        with torch.no_grad():
            for start in range(0, n_windows, config.batch_size):
                batch = range(start, min(n_windows, start + config.batch_size))
                width = min(seq, len(tokens) - 1)
                x = torch.stack([torch.from_numpy(tokens[w * seq : w * seq + width]) for w in batch]).to(device)
                y = torch.stack([torch.from_numpy(tokens[w * seq + 1 : w * seq + width + 1]) for w in batch]).to(
                    device
                )
                m = torch.stack([torch.from_numpy(mask[w * seq + 1 : w * seq + width + 1]) for w in batch]).to(device)
                loss = model_lib.forward(bare, x, labels=y).float()
                loss_sum += float((loss * m).sum())
                counted += float(m.sum())
    finally:
        bare.train(was_training)
    if counted == 0:
        raise FrontloadError(f"{shard_dir}: no loss-masked tokens in the first {config.perplexity_tokens} tokens")
    result = EvalResult(
        task=shard_dir.name,
        metric="perplexity",
        value=math.exp(loss_sum / counted),
        n_questions=n_windows,
        n_samples=int(counted),
    )
    _log(run, "evals", phase=phase, checkpoint=checkpoint, step=step, **as_dict(result))
    return result


def evaluate_model(
    model,
    tokenizer,
    tasks: list[TaskSpec],
    config: EvalConfig,
    run=None,
    *,
    checkpoint=None,
    step=None,
    phase=None,
    model_config=None,
) -> list[EvalResult]:
    """Evaluate a live model (e.g. during training) on ``tasks`` and ``config.perplexity`` shard sets.

    The vLLM backend exports the model to a temporary folder and needs its ``model_config``.
    """
    import tempfile

    from frontload.train.sampling import open_sampler

    where = {"checkpoint": None if checkpoint is None else str(checkpoint), "step": step, "phase": phase}
    results: list[EvalResult] = []
    if tasks:
        with contextlib.ExitStack() as stack:
            work = None
            if config.backend == "vllm":
                work = stack.enter_context(tempfile.TemporaryDirectory(prefix="frontload-eval-"))
            sampler = open_sampler(
                config.backend,
                model,
                tokenizer,
                model_config=model_config,
                tokenizer_dir=tokenizer.dir,
                work_dir=work,
                seed=config.seed,
                batch_size=config.batch_size,
                progress=config.progress,
            )
            stack.callback(sampler.close)
            for task in tasks:
                results += evaluate_task(model, tokenizer, task, config, run, sampler=sampler, **where)
    for shard_dir in config.perplexity:
        results.append(perplexity(model, tokenizer, shard_dir, config, run, **where))
    return results


def evaluate(ckpt_dir: str | os.PathLike, tasks: list[TaskSpec], config: EvalConfig, run=None) -> list[EvalResult]:
    """Load checkpoint ``ckpt_dir`` and evaluate it; events (if ``run``) name the checkpoint, step and phase."""
    from frontload.corpus.tokenizer import load_tokenizer
    from frontload.train.checkpoint import load_model, tokenizer_path

    model, model_config, meta = load_model(ckpt_dir)
    tokenizer = load_tokenizer(tokenizer_path(ckpt_dir))
    if meta.get("tokenizer_fingerprint") and meta["tokenizer_fingerprint"] != tokenizer.fingerprint:
        raise FrontloadError(f"{ckpt_dir}/tokenizer: fingerprint differs from meta.json's tokenizer_fingerprint")
    return evaluate_model(
        model,
        tokenizer,
        tasks,
        config,
        run,
        checkpoint=str(ckpt_dir),
        step=meta.get("step"),
        phase=meta.get("phase"),
        model_config=model_config,
    )


def format_table(results: list[EvalResult]) -> str:
    """A plain-text table of results, one row per task and metric."""
    rows = [("task", "metric", "value", "questions", "samples")]
    for r in results:
        metric = f"pass@{r.k}" if r.metric == "pass@k" else r.metric
        rows.append((r.task, metric, f"{r.value:.4f}", str(r.n_questions), str(r.n_samples)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
