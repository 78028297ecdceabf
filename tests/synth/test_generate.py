"""Trace generation control flow (datatrove's dummy server, a local OpenAI-compatible stand-in) and bad input."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frontload.cli import main
from frontload.core.config import ConfigError
from frontload.core.errors import FrontloadError
from frontload.core.manifest import Manifest
from frontload.synth.generate import GenerateConfig, generate_traces
from frontload.synth.sources import FileSource, write_problems, write_source


def read_jsonl(folder):
    rows = []
    for f in sorted(folder.glob("*.jsonl")):
        rows += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return rows


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "problems"
    write_problems(out, families=["arithmetic", "logic", "fractions"], n=12, seed=4)
    return out


def test_dummy_server_writes_one_record_per_problem_and_rollout(problems, tmp_path):
    out = tmp_path / "traces"
    m = generate_traces(problems, out, GenerateConfig(server="dummy", rollouts=3, records_per_chunk=5))
    rows = read_jsonl(out / "data")
    assert m.counts["problems"] == 12 and m.counts["rollouts"] == 36 and m.counts["failures"] == 0
    # Each file in id order, whatever order the requests completed in: the same run writes the same bytes.
    for f in sorted((out / "data").glob("*.jsonl")):
        ids = [json.loads(line)["id"] for line in f.read_text().splitlines()]
        assert ids == sorted(ids) and len(ids) > 1, f
    assert m.account.to_dict() == {"in": 36, "kept": 36, "dropped": {"rejected_by_server": 0}}
    assert sorted(r["id"] for r in rows) == sorted(
        f"{p}.{k}" for p in {r["metadata"]["problem_id"] for r in rows} for k in range(3)
    )
    md = rows[0]["metadata"]
    assert md["teacher"]["backend"] == "dummy" and md["teacher"]["sampling"]["max_tokens"] == 512
    assert md["finish_reason"] == "stop" and md["usage"]["completion_tokens"] == 100
    assert md["gold_trace"] and md["answer"] and md["prediction"] is None and md["parse"]["answer_source"] == "none"
    assert rows[0]["text"] == md["prompt"] + md["response"]
    # the same call again reuses the finished folder
    assert (
        generate_traces(problems, out, GenerateConfig(server="dummy", rollouts=3, records_per_chunk=5)).fingerprint
        == m.fingerprint
    )
    with pytest.raises(FrontloadError, match="another config"):
        generate_traces(problems, out, GenerateConfig(server="dummy", rollouts=2))


class _FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible completions server that rejects prompts containing REJECT, like vLLM does for bad input."""

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "fake-teacher", "object": "model"}]})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "REJECT" in req["prompt"]:
            self._send(400, {"error": {"message": "prompt too long for this model", "type": "BadRequestError"}})
            return
        text = "<think>\n6 times 7 is 42\n</think>\nThe answer is \\boxed{42}."
        usage = {"prompt_tokens": len(req["prompt"].split()), "completion_tokens": 11, "total_tokens": 0}
        self._send(
            200, {"choices": [{"text": text, "finish_reason": "stop"}], "usage": usage, "seed": req.get("seed")}
        )

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_endpoint_rejections_are_counted_and_kept(tmp_path, fake_endpoint):
    src = tmp_path / "in.jsonl"
    rows = [{"q": f"What is 6 x 7? ({i})", "a": "42"} for i in range(5)] + [{"q": "REJECT this one", "a": "1"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_source(tmp_path / "problems", FileSource(path=str(src), question_field="q", answer_field="a"))
    cfg = GenerateConfig(endpoint=fake_endpoint + "/v1", rollouts=2, temperature=1.0)
    m = generate_traces(tmp_path / "problems", tmp_path / "traces", cfg)
    assert (m.counts["problems"], m.counts["rollouts"], m.counts["failures"]) == (6, 10, 2)
    assert m.account.dropped == {"rejected_by_server": 2} and m.account.balanced
    rejects = read_jsonl(tmp_path / "traces/rejects")
    assert {r["metadata"]["problem"] for r in rejects} == {"REJECT this one"}
    assert "prompt too long" in rejects[0]["metadata"]["error"]
    good = read_jsonl(tmp_path / "traces/data")
    md = good[0]["metadata"]
    assert md["prediction"] == "42" and md["trace"] == "6 times 7 is 42" and md["parse"]["boxed"]
    assert md["response"] == "<think>\n6 times 7 is 42\n</think>\nThe answer is \\boxed{42}.<|end|>"
    assert md["teacher"]["model"] == "fake-teacher" and md["teacher"]["sampling"]["stop"] == ["<|end|>"]
    events = (tmp_path / "traces/events/stats.rank0.jsonl").read_text()
    assert '"rejected_by_server": 2' in events


def test_unreachable_endpoint_fails_fast(problems, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(FrontloadError, match=f"127.0.0.1:{port} is unreachable"):
        generate_traces(problems, tmp_path / "t", GenerateConfig(endpoint=f"http://127.0.0.1:{port}"))
    assert not (tmp_path / "t").exists()


def test_missing_model_folder_fails_fast(problems, tmp_path):
    with pytest.raises(ConfigError, match="no-such-model: no such model folder"):
        generate_traces(problems, tmp_path / "t", GenerateConfig(model=str(tmp_path / "no-such-model")))


def test_template_with_a_missing_field_names_it(problems, tmp_path):
    cfg = GenerateConfig(server="dummy", prompt_template="{problem}\nHint: {hint}")
    with pytest.raises(ConfigError, match=r"00000.jsonl:1: template field \{hint\} is missing"):
        generate_traces(problems, tmp_path / "t", cfg)


def test_prompt_longer_than_the_context_names_the_problem(tmp_path, tiny_llama):
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"question": "short one", "answer": "1"})
        + "\n"
        + json.dumps({"question": "word " * 400, "answer": "2"})
        + "\n"
    )
    write_source(tmp_path / "problems", FileSource(path=str(src)))
    cfg = GenerateConfig(model=str(tiny_llama), max_tokens=64, max_model_len=256)
    with pytest.raises(FrontloadError, match=r"00000.jsonl:2: the prompt of problem '\w+' is \d+ tokens"):
        generate_traces(tmp_path / "problems", tmp_path / "t", cfg)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="exactly one of model"):
        GenerateConfig()
    with pytest.raises(ConfigError, match="rollouts"):
        GenerateConfig(server="dummy", rollouts=0)
    with pytest.raises(ConfigError, match="prompt_template"):
        GenerateConfig(server="dummy", prompt_template="{problem.__class__}")


def test_cli_families_problems_and_traces(tmp_path, capsys):
    assert main(["synth", "families"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 10 and lines[0].startswith("arithmetic ")
    args = [
        "synth",
        "problems",
        "--family",
        "sorting",
        "--family",
        "counting",
        "--n",
        "8",
        "--seed",
        "3",
        "--difficulty",
        "2",
    ]
    assert main([*args, "-o", str(tmp_path / "p")]) == 0
    assert main([*args, "-o", str(tmp_path / "q")]) == 0
    assert (tmp_path / "p/data/00000.jsonl").read_bytes() == (tmp_path / "q/data/00000.jsonl").read_bytes()
    assert Manifest.read(tmp_path / "p", kind="corpus").counts["documents"] == 8
    assert main(["synth", "traces", str(tmp_path / "p"), "-o", str(tmp_path / "t"), "--dummy", "--rollouts", "2"]) == 0
    assert "rollouts=16" in capsys.readouterr().out
    assert (
        main(["synth", "traces", str(tmp_path / "p"), "-o", str(tmp_path / "u"), "--model", str(tmp_path / "none")])
        == 2
    )
    assert "no such model folder" in capsys.readouterr().err
