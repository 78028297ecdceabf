"""Tokenizers: SentencePiece training, an exact Hugging Face ``tokenizer.json`` twin, and one loader.

A frontload tokenizer folder holds::

    tokenizer.model          # SentencePiece BPE model (the reference; fastest encoder)
    tokenizer.json           # the same tokenizer for the Hugging Face ``tokenizers`` library
    tokenizer_config.json    # what transformers / vLLM need: special tokens, chat template
    special_tokens_map.json

Invariants:

* ``tokenizer.model`` and ``tokenizer.json`` give identical ids on any text (tested), so a model
  trained on shards from one can be served with the other.
* No BOS or EOD is ever added by ``encode``; the EOD id is SentencePiece's ``</s>`` and shard
  writers append it per document. The chat and think markers of :mod:`frontload.core.chat`
  are single ids wherever they appear in text; the control pieces (``<unk> <s> </s> <pad>``)
  are never produced from text, so a literal ``</s>`` in a web page cannot end a document.
* ``fingerprint`` is a hash of the id-defining files' contents (``tokenizer.model`` and/or
  ``tokenizer.json``), never of paths or times.

Why BPE with ``add_dummy_prefix=False`` and identity normalization: SentencePiece BPE merges the
adjacent pair whose result has the best score, which a ``tokenizers`` BPE reproduces exactly when
its merges are ranked by that score; without a dummy prefix and normalization there is nothing
left that the two libraries could do differently around special tokens and whitespace.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from frontload.core.chat import SPECIAL_TOKENS
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write, atomic_write_json, fingerprint_files
from frontload.core.progress import progress_bar

SPM_NAME = "tokenizer.model"
HF_NAME = "tokenizer.json"
CONFIG_NAME = "tokenizer_config.json"
SPECIAL_MAP_NAME = "special_tokens_map.json"
UNK, BOS, EOD, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPACE = "\u2581"  # SentencePiece's whitespace marker
# Serves the chat format of frontload.core.chat to transformers and vLLM (apply_chat_template).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>\n{{ m['content'] | trim }}\n"
    "{% elif m['role'] == 'user' %}<|user|>\n{{ m['content'] | trim }}\n"
    "{% else %}<|assistant|>\n{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class TokenizerError(FrontloadError):
    """A tokenizer folder or file is missing, unreadable or inconsistent; the message names it."""


class Tokenizer:
    """A loaded frontload tokenizer (SentencePiece when ``tokenizer.model`` exists, else ``tokenizers``).

    Picklable: workers reload the backend from ``path`` on first use.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            self.dir: Path | None = path
            spm, hf = path / SPM_NAME, path / HF_NAME
            self._spm_path = spm if spm.exists() else None
            self._hf_path = hf if hf.exists() else None
            if not (self._spm_path or self._hf_path):
                raise TokenizerError(f"{path}: no {SPM_NAME} or {HF_NAME} in this folder")
        elif path.is_file():
            self.dir = None
            if path.suffix == ".model":
                self._spm_path, self._hf_path = path, None
            elif path.suffix == ".json":
                self._spm_path, self._hf_path = None, path
            else:
                raise TokenizerError(f"{path}: expected a SentencePiece .model, a tokenizer.json or a folder")
        else:
            raise TokenizerError(f"{path}: no such tokenizer file or folder")
        self.path = path
        self.fingerprint: str = fingerprint_files(p for p in (self._spm_path, self._hf_path) if p)
        self._backend: Any = None
        self.account: Any = None  # the drop account of its training data, set by train_tokenizer
        self._load()

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._spm_path is not None:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor()
            try:
                sp.Load(str(self._spm_path))
            except (OSError, RuntimeError) as e:
                raise TokenizerError(f"{self._spm_path}: not a SentencePiece model: {e}") from e
            self._backend, self._kind = sp, "spm"
            self.vocab_size: int = sp.GetPieceSize()
            self.eod_id: int = sp.eos_id()
            self.pad_id: int = sp.pad_id() if sp.pad_id() >= 0 else sp.eos_id()
            self.unk_id: int = sp.unk_id()
            return
        from tokenizers import Tokenizer as HFTokenizer

        try:
            tok = HFTokenizer.from_file(str(self._hf_path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{self._hf_path}: not a tokenizers JSON file: {e}") from e
        self._backend, self._kind = tok, "hf"
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        special = _special_tokens_from_config(self._hf_path.parent)
        self.eod_id = self._require_piece(tok, special.get("eos_token", EOD), "eos_token")
        pad = tok.token_to_id(special.get("pad_token", PAD))
        self.pad_id = pad if pad is not None else self.eod_id
        unk = tok.token_to_id(special.get("unk_token", UNK))
        self.unk_id = unk if unk is not None else -1

    def _require_piece(self, tok: Any, piece: str, what: str) -> int:
        i = tok.token_to_id(piece)
        if i is None:
            raise TokenizerError(f"{self._hf_path}: {what} {piece!r} is not in the vocabulary")
        return i

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_backend"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()

    # -- encoding ------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``"spm"`` (SentencePiece) or ``"hf"`` (Hugging Face tokenizers)."""
        return self._kind

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no BOS or EOD added."""
        if self._kind == "spm":
            return self._backend.EncodeAsIds(text)
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
        """Token ids of several texts (threaded inside the backend)."""
        if self._kind == "spm":
            return self._backend.Encode(list(texts), out_type=int, num_threads=num_threads)
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (control pieces such as EOD decode to nothing)."""
        if self._kind == "spm":
            return self._backend.DecodeIds([int(i) for i in ids])
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_id(self, piece: str) -> int:
        """Id of one vocabulary piece (e.g. ``"<|end|>"``); TokenizerError if absent."""
        if self._kind == "spm":
            i = self._backend.PieceToId(piece)
            if i == self.unk_id and piece != UNK:
                raise TokenizerError(f"{self.path}: piece {piece!r} is not in the vocabulary")
            return i
        i = self._backend.token_to_id(piece)
        if i is None:
            raise TokenizerError(f"{self.path}: piece {piece!r} is not in the vocabulary")
        return i

    def id_to_piece(self, i: int) -> str:
        """Vocabulary piece of id ``i``."""
        if self._kind == "spm":
            return self._backend.IdToPiece(int(i))
        return self._backend.id_to_token(int(i))

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, backend={self._kind}, vocab_size={self.vocab_size})"


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer folder, a SentencePiece ``.model`` or a Hugging Face ``tokenizer.json``."""
    return Tokenizer(path)


def _special_tokens_from_config(folder: Path) -> dict[str, str]:
    for name in (CONFIG_NAME, SPECIAL_MAP_NAME):
        p = folder / name
        if p.exists():
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise TokenizerError(f"{p}: not valid JSON: {e}") from e
            out = {}
            for k in ("eos_token", "pad_token", "unk_token", "bos_token"):
                v = d.get(k)
                if isinstance(v, dict):
                    v = v.get("content")
                if isinstance(v, str):
                    out[k] = v
            return out
    return {}


# -- training ----------------------------------------------------------------------------------
def _lines(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    # SentencePiece trains on lines; newlines inside documents become byte-fallback ids at encode time.
    for text in texts:
        for line in text.split("\n"):
            if line.strip() and len(line.encode("utf-8")) <= max_bytes:
                yield line


def train_tokenizer_from_texts(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int,
    *,
    max_sentences: int = 2_000_000,
    character_coverage: float = 0.9999,
    seed: int = 1234,
    num_threads: int = 2,
) -> Tokenizer:
    """Train a SentencePiece BPE tokenizer on ``texts`` and write the tokenizer folder to ``out_dir``."""
    import sentencepiece as spm

    if vocab_size < len(SPECIAL_TOKENS) + 4 + 256 + 16:
        raise TokenizerError(f"vocab_size {vocab_size} is too small: byte fallback alone needs 256 pieces")
    out = Path(out_dir)
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(
                progress_bar(_lines(texts, 4096), desc="tokenizer lines", unit="line", mininterval=2)
            ),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=True,
            split_digits=True,
            user_defined_symbols=list(SPECIAL_TOKENS),
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            unk_piece=UNK,
            bos_piece=BOS,
            eos_piece=EOD,
            pad_piece=PAD,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=4096,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise TokenizerError(f"SentencePiece training for {out} failed: {e}") from e
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / SPM_NAME, model.getvalue())
    write_hf_files(out / SPM_NAME, out)
    return Tokenizer(out)


def train_tokenizer(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    vocab_size: int,
    text_field: str = "text",
    **options: Any,
) -> Tokenizer:
    """Train a tokenizer on the documents of corpus files/folders (JSONL, Parquet, saved HF datasets).

    Bad records are dropped as everywhere else: counted by reason in ``TOK_DIR/training.json``
    (``account``) and written to ``TOK_DIR/rejects/`` with file and line; ``tok.account`` holds them.
    """
    from frontload.core.manifest import Account, require_records
    from frontload.corpus.readers import RecordSpec, make_reader

    out = Path(out_dir)
    reader = make_reader(inputs, RecordSpec(text_field=text_field), rejects_dir=out / "rejects")
    kept = 0

    def texts() -> Iterator[str]:
        nonlocal kept
        for doc in reader.run(None, 0, 1):
            kept += 1
            yield doc.text

    stream = texts()
    try:
        tok = train_tokenizer_from_texts(stream, out, vocab_size, **options)
    except BaseException:
        stream.close()  # removes the unfinished rejects file
        raise
    for _ in stream:  # SentencePiece reads every sentence; reaching the end closes the rejects file
        pass
    dropped = dict(sorted(reader.checker.counts.items()))
    if not dropped:  # checkpoints copy the tokenizer folder; an empty rejects file is noise there
        shutil.rmtree(out / "rejects", ignore_errors=True)
    account = Account(inputs=kept + sum(dropped.values()), kept=kept, dropped=dropped)
    require_records(account, out, out / "rejects", allow_empty=False)
    atomic_write_json(
        out / "training.json",
        {"inputs": [str(p) for p in inputs], "text_field": text_field, "account": account.to_dict()},
    )
    tok.account = account
    return tok


# -- the Hugging Face twin ---------------------------------------------------------------------
def build_hf_tokenizer(spm_model: str | os.PathLike) -> Any:
    """A ``tokenizers.Tokenizer`` that gives the same ids as the SentencePiece BPE model."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    proto = pb.ModelProto()
    proto.ParseFromString(Path(spm_model).read_bytes())
    ts = proto.trainer_spec
    ns = proto.normalizer_spec
    if ts.model_type != pb.TrainerSpec.BPE or ns.add_dummy_prefix or ns.name != "identity":
        raise TokenizerError(
            f"{spm_model}: only BPE models trained with identity normalization and no dummy prefix "
            "convert exactly; train it with `frontload corpus tokenizer train`"
        )
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = {sp.IdToPiece(i): i for i in range(sp.GetPieceSize())}
    normal = {p for p, i in vocab.items() if not (sp.IsControl(i) or sp.IsUnknown(i) or sp.IsByte(i))}
    normal -= set(SPECIAL_TOKENS)
    # SentencePiece merges the adjacent pair whose concatenation scores best; rank merges the same way.
    ranked = []
    for piece in normal:
        if len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-sp.GetScore(vocab[piece]), vocab[piece], vocab[left], left, right))
    ranked.sort()
    merges = [(left, right) for *_, left, right in ranked]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def write_hf_files(spm_model: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` for a model."""
    out = Path(out_dir)
    tok = build_hf_tokenizer(spm_model)
    atomic_write(out / HF_NAME, tok.to_str(pretty=False))
    special = {
        "bos_token": BOS,
        "eos_token": EOD,
        "unk_token": UNK,
        "pad_token": PAD,
        "additional_special_tokens": list(SPECIAL_TOKENS),
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "extra_special_tokens": list(SPECIAL_TOKENS),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
        "chat_template": CHAT_TEMPLATE,
    }
    atomic_write_json(out / CONFIG_NAME, config)
    atomic_write_json(out / SPECIAL_MAP_NAME, special)
