"""frontload.core: what every stage shares and nothing else.

Config helpers (``config``), errors, fingerprints and atomic file writes (``fingerprint``), event
files and run folders (``events``), manifests, the chat format (``chat``), the phase list
(``phases.PHASES``), the workspace layout (``workspace``) and folders that appear whole
(``atomic.atomic_folder``). It imports no stage; every stage imports it (the floor order is written
once in tests/test_architecture.py).
"""
