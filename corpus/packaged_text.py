"""General English text that ships inside installed packages, as a corpus folder.

No hub is reachable at run time, so the default study's "web" corpus is built from prose that
every install has: Python's own help topics (``pydoc_data.topics``), the docstrings of the standard
library, and the long descriptions of installed distributions. Documents are emitted in a sorted,
deterministic order, and the corpus fingerprint is the hash of the texts themselves, so two machines
with the same packages build the same corpus, byte for byte.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from frontload.core.fingerprint import fingerprint
from frontload.core.manifest import Account, Manifest

SOURCES = ("pydoc_topics", "stdlib_docstrings", "package_descriptions")
# Raised whenever the same installed packages would give other texts; study fingerprints include it.
# 2: frontload's own README is no longer a document.
CONTENT_VERSION = 2
MIN_CHARS = 200


def _pydoc_topics() -> Iterator[tuple[str, str]]:
    import pydoc_data.topics

    for name in sorted(pydoc_data.topics.topics):
        yield f"pydoc:{name}", pydoc_data.topics.topics[name]


def _stdlib_docstrings() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        parts = Path(dirpath).relative_to(root).parts
        # Tests are not prose, and site-packages is not the standard library.
        if parts and (parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in parts):
            dirnames[:] = []
            continue
        dirnames.sort()
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"stdlib:{rel}:{getattr(node, 'name', '')}:{getattr(node, 'lineno', 0)}", doc


# frontload's own description is this repository's README: it changes with every edit (pasting in a
# demo's printed results included) while the version, and so the study's fingerprint, stays the same.
# Left in, a README edit changed the web corpus of the next fresh install, and with it every number.
EXCLUDED_DISTRIBUTIONS = ("frontload",)


def _package_descriptions() -> Iterator[tuple[str, str]]:
    seen = set(EXCLUDED_DISTRIBUTIONS)
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower()
        if name in seen:
            continue
        seen.add(name)
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        yield f"package:{name}", body


def packaged_texts(sources: tuple[str, ...] = SOURCES, min_chars: int = MIN_CHARS) -> Iterator[tuple[str, str]]:
    """``(origin, text)`` pairs in a stable order; short or duplicate texts are skipped."""
    makers = {
        "pydoc_topics": _pydoc_topics,
        "stdlib_docstrings": _stdlib_docstrings,
        "package_descriptions": _package_descriptions,
    }
    seen: set[bytes] = set()
    for source in sources:
        for origin, text in makers[source]():
            text = text.strip()
            digest = hashlib.sha1(text.encode()).digest()
            if len(text) < min_chars or digest in seen:
                continue
            seen.add(digest)
            yield origin, text


def write_packaged_text(out_dir: str | os.PathLike, sources: tuple[str, ...] = SOURCES) -> Manifest:
    """Write the packaged English text as a corpus folder (``data/`` + ``manifest.json``)."""
    from datatrove.data import Document
    from datatrove.pipeline.writers import JsonlWriter

    out_dir = Path(out_dir)
    texts = list(packaged_texts(sources))
    fp = fingerprint("packaged_text", [hashlib.sha1(t.encode()).hexdigest() for _, t in texts])
    # Plain JSONL (a few MB): a gzip header carries the time of writing, and two machines that build
    # this corpus must hold the same bytes.
    with JsonlWriter(str(out_dir / "data"), output_filename="${rank}.jsonl", compression=None) as writer:
        for origin, text in texts:
            doc_id = hashlib.sha1(text.encode()).hexdigest()[:16]
            writer.write(
                Document(text=text, id=doc_id, metadata={"source": origin.split(":", 1)[0], "origin": origin})
            )
    manifest = Manifest(
        kind="corpus",
        fingerprint=fp,
        config={"source": {"kind": "packaged_text", "sources": list(sources)}},
        counts={"documents": len(texts), "characters": sum(len(t) for _, t in texts)},
        account=Account(inputs=len(texts), kept=len(texts)),
    )
    manifest.write(out_dir)
    return manifest
