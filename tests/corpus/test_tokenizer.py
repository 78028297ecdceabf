"""The tokenizer folder: SentencePiece and its tokenizer.json twin agree, and transformers can load it."""

import pickle
import random
from pydoc_data.topics import topics

import pytest

from frontload.core.chat import SPECIAL_TOKENS, render_example
from frontload.core.errors import FrontloadError
from frontload.corpus.tokenizer import load_tokenizer, train_tokenizer_from_texts


def _documents(n_slices: int = 300) -> list[str]:
    docs = [topics[k] for k in sorted(topics)]
    rng = random.Random(0)
    for _ in range(n_slices):
        d = rng.choice(docs)
        i = rng.randrange(len(d))
        docs.append(d[i : i + rng.randrange(1, 1500)])
    prompt, response = render_example("What is 12 * 7?", "12 * 7 = 84", "84")
    docs += [
        prompt + response,
        "a<|end|>b <|user|>  c</think><think>",
        "  leading  spaces\t\ttabs\n\n  trailing  ",
        "émoji 😀 中文 ünïcödé ½ \u00a0nbsp",
        "literal </s> and <s> and <pad> stay text",
        "",
        " ",
        "1234567890 3.14159 -42",
    ]
    return docs


def test_spm_and_tokenizer_json_give_identical_ids(tiny_tokenizer):
    hf = load_tokenizer(tiny_tokenizer.path / "tokenizer.json")
    assert tiny_tokenizer.backend == "spm" and hf.backend == "hf"
    docs = _documents()
    a = tiny_tokenizer.encode_batch(docs)
    b = hf.encode_batch(docs)
    mismatched = [d[:60] for d, x, y in zip(docs, a, b) if x != y]
    assert not mismatched, mismatched[:3]
    assert hf.vocab_size == tiny_tokenizer.vocab_size
    assert hf.eod_id == tiny_tokenizer.eod_id and hf.pad_id == tiny_tokenizer.pad_id
    assert [tiny_tokenizer.encode(d) for d in docs[:50]] == a[:50]


def test_special_tokens_are_single_ids_and_text_round_trips(tiny_tokenizer):
    for piece in SPECIAL_TOKENS:
        assert tiny_tokenizer.encode(piece) == [tiny_tokenizer.token_id(piece)]
    assert tiny_tokenizer.id_to_piece(tiny_tokenizer.eod_id) == "</s>"
    assert tiny_tokenizer.eod_id != tiny_tokenizer.pad_id
    # Control pieces are never produced from text: a literal "</s>" cannot end a document.
    assert tiny_tokenizer.eod_id not in tiny_tokenizer.encode("x </s> y")
    for d in _documents(20):
        assert tiny_tokenizer.decode(tiny_tokenizer.encode(d)) == d  # byte fallback: nothing is lost


def test_fingerprint_is_content_hash_and_pickle_reloads(tiny_tokenizer, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_tokenizer.path, copy)
    assert load_tokenizer(copy).fingerprint == tiny_tokenizer.fingerprint
    assert load_tokenizer(copy / "tokenizer.model").fingerprint != tiny_tokenizer.fingerprint
    clone = pickle.loads(pickle.dumps(tiny_tokenizer))
    assert clone.encode("hello world") == tiny_tokenizer.encode("hello world")
    with pytest.raises(FrontloadError, match="no tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)


def test_training_is_deterministic_and_too_large_a_vocabulary_is_named(tiny_tokenizer, tmp_path):
    texts = [topics[k] for k in sorted(topics)]
    again = train_tokenizer_from_texts(texts, tmp_path / "again", vocab_size=512)
    assert again.fingerprint == tiny_tokenizer.fingerprint
    with pytest.raises(FrontloadError, match=r"too_big.*Vocabulary size too high"):
        train_tokenizer_from_texts(texts[:2], tmp_path / "too_big", vocab_size=5000)


def test_transformers_loads_the_folder(tiny_tokenizer):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    docs = _documents(50)[:-4]
    want = tiny_tokenizer.encode_batch(docs)
    auto = AutoTokenizer.from_pretrained(str(tiny_tokenizer.path))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tiny_tokenizer.path / "tokenizer.json"))
    for t in (auto, fast):
        assert [t.encode(d, add_special_tokens=False) for d in docs] == want
    assert auto.eos_token_id == tiny_tokenizer.eod_id
    assert auto.pad_token_id == tiny_tokenizer.pad_id
    text = auto.apply_chat_template(
        [{"role": "user", "content": "What is 1+1?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == render_example("What is 1+1?", None, "2")[0]
