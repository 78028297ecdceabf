"""RL rewards: a completion's reward from the verifier's verdict on its answer and from its format.

:class:`RewardScorer` runs the verifier (math-verify through :mod:`frontload.filters.verify`) under a
timeout on a worker thread; a verifier that raises or times out gives reward 0 and counts an error.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from frontload.core.chat import parse_response


@dataclass(kw_only=True)
class RewardConfig:
    """How a completion's reward is made from the verifier's verdict and its format."""

    correct: float = 1.0  # reward for a verified correct answer
    format: float = 0.0  # extra reward when the think block is closed and a \boxed{} answer is present
    verifier_timeout_s: float = 10.0  # a verification running longer counts as an error (reward 0)
    mode: str = "math"  # verifier mode passed to verify_answer ("math", "exact", "numeric", "choice")

    def __post_init__(self) -> None:
        from frontload.core.config import ConfigError
        from frontload.filters.verify import MODES

        if self.mode not in MODES:
            # Caught here: at scoring time a bad mode would turn every completion into a verifier error.
            raise ConfigError("mode", f"must be one of {list(MODES)}, got {self.mode!r}")
        if self.verifier_timeout_s <= 0:
            raise ConfigError("verifier_timeout_s", f"must be > 0, got {self.verifier_timeout_s}")
        if self.correct == 0 and self.format == 0:
            raise ConfigError("correct", "correct and format rewards are both 0: every reward would be 0")


@dataclass(kw_only=True)
class Reward:
    """One completion's score."""

    reward: float
    verdict: str  # "correct", "wrong", "unparseable" or "error" (verifier raised or timed out)
    prediction: str | None
    formatted: bool  # think block closed and a boxed answer present
    error: str | None = None


def default_verifier() -> Callable[..., str]:
    """The shared verifier, ``frontload.filters.verify.verify_answer``."""
    from frontload.filters.verify import verify_answer

    return verify_answer


class _TimedCaller:
    """Runs calls on one daemon worker thread with a timeout; a hung worker is abandoned, not joined.

    Python cannot kill a thread, so after a timeout the stuck worker is left to finish (or hang)
    on its own as a daemon and a fresh worker takes the next call; the run never waits on it and
    interpreter exit does not block on it.
    """

    def __init__(self) -> None:
        self._inbox: queue.Queue | None = None

    def _start(self) -> queue.Queue:
        inbox: queue.Queue = queue.Queue()

        def work() -> None:
            while True:
                fn, args, kwargs, outbox = inbox.get()
                try:
                    outbox.put((True, fn(*args, **kwargs)))
                except BaseException as e:  # noqa: BLE001 - any verifier failure becomes a counted error
                    outbox.put((False, e))

        threading.Thread(target=work, name="frontload-verifier", daemon=True).start()
        return inbox

    def __call__(self, timeout: float, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        if self._inbox is None:
            self._inbox = self._start()
        outbox: queue.Queue = queue.Queue(maxsize=1)
        self._inbox.put((fn, args, kwargs, outbox))
        try:
            ok, value = outbox.get(timeout=timeout)
        except queue.Empty:
            self._inbox = None  # abandon the stuck worker
            raise TimeoutError(f"verifier ran past {timeout:g} s") from None
        if not ok:
            raise value
        return value


class RewardScorer:
    """Scores completions against gold answers; verifier failures become reward 0 and a count."""

    def __init__(self, config: RewardConfig | None = None, verifier: Callable[..., str] | None = None) -> None:
        self.config = config or RewardConfig()
        self.verifier = verifier or default_verifier()
        self.errors = 0  # verifier errors (raised or timed out) since construction
        self._call = _TimedCaller()

    def score(self, gold: str, completion: str) -> Reward:
        """Reward of one completion."""
        parsed = parse_response(completion)
        formatted = parsed.think_closed and parsed.boxed
        fmt = self.config.format if formatted else 0.0
        try:
            verdict = self._call(
                self.config.verifier_timeout_s, self.verifier, gold, parsed.answer, mode=self.config.mode
            )
        except Exception as e:  # noqa: BLE001 - the contract: one bad completion never kills the run
            self.errors += 1
            return Reward(
                reward=0.0, verdict="error", prediction=parsed.answer, formatted=formatted, error=repr(e)[:200]
            )
        if verdict not in ("correct", "wrong", "unparseable"):
            self.errors += 1
            return Reward(
                reward=0.0,
                verdict="error",
                prediction=parsed.answer,
                formatted=formatted,
                error=f"verifier returned {verdict!r}",
            )
        value = (self.config.correct if verdict == "correct" else 0.0) + fmt
        return Reward(reward=value, verdict=verdict, prediction=parsed.answer, formatted=formatted)

    def score_batch(self, golds: Sequence[str], completions: Sequence[str]) -> list[Reward]:
        """Rewards of many completions (``golds[i]`` is the gold answer of ``completions[i]``)."""
        return [self.score(g, c) for g, c in zip(golds, completions, strict=True)]
