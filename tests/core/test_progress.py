"""Progress bars in a log: whole lines now and then, not one carriage-return redraw per step."""

from frontload.core.progress import progress_bar


def test_a_bar_in_a_log_writes_a_few_whole_lines(capsys):
    # capsys's stderr is not a terminal, as in a log file, CI or a Slurm job.
    for _ in progress_bar(range(20_000), desc="pretrain", unit="step"):
        pass
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert 1 <= len(lines) <= 3, lines  # the first state and the last, not 20,000 redraws
    assert lines[-1].startswith("pretrain") and "20000/20000" in lines[-1]
