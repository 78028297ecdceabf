"""frontload.core: what every stage shares and nothing else.

Config helpers, errors, fingerprints and atomic writes, event files, manifests, the chat format.
It imports no stage; every stage imports it (the order is written once in tests/test_architecture.py).
"""
