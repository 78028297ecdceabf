"""A trace run killed with ``kill -9`` and rerun finishes with every problem × rollout exactly once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from frontload.synth.generate import GenerateConfig, generate_traces
from frontload.synth.sources import write_problems

# Runs in a subprocess: datatrove's dummy server, slowed down so that the kill lands mid-run.
SLOW_RUN = """
import sys, time
from datatrove.pipeline.inference.servers import dummy_server
answer = dummy_server.DummyHandler.do_POST
def slow(self):
    time.sleep(0.05)
    answer(self)
dummy_server.DummyHandler.do_POST = slow
from frontload.synth.generate import GenerateConfig, generate_traces
generate_traces(sys.argv[1], sys.argv[2], GenerateConfig(server="dummy", rollouts=2, records_per_chunk=4, concurrency=2))
"""

N_PROBLEMS = 40


def _checkpointed(out: Path) -> int:
    return sum(len(f.read_bytes().splitlines()) for f in out.glob("checkpoints/00000/chunk_*.jsonl"))


def _completed_chunks(out: Path) -> int:
    f = out / "checkpoints/last_chunk/00000.txt"
    return int(f.read_text()) + 1 if f.exists() else 0


def test_kill_9_then_rerun_gives_every_rollout_exactly_once(tmp_path):
    problems, out = tmp_path / "problems", tmp_path / "traces"
    write_problems(problems, families=["arithmetic", "counting"], n=N_PROBLEMS, seed=9)
    # Its own process group, so the kill takes datatrove's helper processes too, as a crashed node would.
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(problems), str(out)], stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 180
        while _completed_chunks(out) < 2 or _checkpointed(out) < 1:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "the run made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.json").exists()
    done_before = _completed_chunks(out) * 4 + _checkpointed(out)
    assert 8 <= done_before < N_PROBLEMS

    m = generate_traces(problems, out, GenerateConfig(server="dummy", rollouts=2, records_per_chunk=4, concurrency=2))
    ids = []
    for f in sorted((out / "data").glob("*.jsonl")):
        ids += [json.loads(line)["id"] for line in f.read_text().splitlines()]
    problem_ids = {json.loads(x)["id"] for x in (problems / "data/00000.jsonl").read_text().splitlines()}
    assert sorted(ids) == sorted(f"{p}.{k}" for p in problem_ids for k in range(2))
    assert m.counts["rollouts"] == 2 * N_PROBLEMS and m.account.balanced
    # The rerun asked the server only for what the killed run had not finished.
    stats = json.loads((out / "logs/stats.json").read_text())
    runner = next(s for s in stats if "Inference" in s["name"])
    asked = runner["stats"]["successful_requests"]
    asked = asked["total"] if isinstance(asked, dict) else asked
    assert asked <= 2 * (N_PROBLEMS - done_before)
