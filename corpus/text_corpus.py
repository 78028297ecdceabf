"""General-text corpus folders from local files (JSONL, Parquet, saved HF datasets).

Records are read through :mod:`frontload.corpus.readers` (datatrove readers that count and write
rejects naming file and line) and written as a corpus folder: ``data/`` + ``rejects/`` +
``manifest.json`` whose account balances: every input record is kept or dropped with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datatrove.pipeline.writers import JsonlWriter

from frontload.core.fingerprint import fingerprint
from frontload.core.manifest import Account, Manifest, require_records


def write_text_corpus(
    out_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    text_field: str = "text",
    *,
    allow_empty: bool = False,
) -> Manifest:
    """Copy the documents of ``inputs`` into a corpus folder, dropping (and counting) bad records.

    A corpus that keeps no document is an error carrying the drop account, unless ``allow_empty``.
    """
    from frontload.corpus.readers import RecordSpec, input_fingerprint, read_documents
    from frontload.corpus.shards import count_rejects

    out_dir = Path(out_dir)
    rejects = out_dir / "rejects"
    kept = 0
    with JsonlWriter(str(out_dir / "data"), output_filename="${rank}.jsonl.gz") as writer:
        for doc in read_documents(inputs, RecordSpec(text_field=text_field), rejects_dir=rejects):
            writer.write(doc)
            kept += 1
    dropped = count_rejects(rejects) if rejects.exists() else {}
    account = Account(inputs=kept + sum(dropped.values()), kept=kept, dropped=dropped)
    require_records(account, out_dir, rejects, allow_empty)
    manifest = Manifest(
        kind="corpus",
        fingerprint=fingerprint("text_corpus", text_field, input_fingerprint(inputs)),
        config={"source": {"kind": "files", "paths": [str(i) for i in inputs], "text_field": text_field}},
        counts={"documents": kept},
        account=account,
        extra={"data": "data", "rejects": "rejects"},
    )
    manifest.write(out_dir)
    return manifest
