"""lumir.progress: a bar on a terminal only, rare log lines elsewhere, nested jobs silent, quiet mode."""

from __future__ import annotations

import logging

import pytest

from lumir import progress as progress_module
from lumir.progress import progress, set_quiet, track


def test_without_a_terminal_a_job_logs_one_final_line_and_no_cursor_codes(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="lumir.progress")
    with progress(total=4, desc="embed", unit="item") as bar:
        for _ in range(4):
            bar.update(1)
    assert [r.getMessage() for r in caplog.records] == ["embed: 4/4 item (100%), done"]
    assert "\r" not in capsys.readouterr().err


def test_long_jobs_log_at_most_every_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="lumir.progress")
    monkeypatch.setattr(progress_module, "LOG_EVERY_SECONDS", 0.0)
    with progress(total=2, desc="job") as bar:
        bar.set_postfix(loss="0.5")
        bar.update(1)
    assert caplog.records[0].getMessage() == "job: 1/2 it (50%); loss=0.5"


def test_nested_and_quiet_jobs_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lumir.progress")
    with progress(total=1, desc="outer") as outer:
        assert list(track([1, 2], desc="inner")) == [1, 2]
        outer.update(1)
    assert [r.getMessage() for r in caplog.records] == ["outer: 1/1 it (100%), done"]
    caplog.clear()
    set_quiet(True)
    try:
        with progress(total=1, desc="hidden") as bar:
            bar.update(1)
    finally:
        set_quiet(False)
    assert caplog.records == []
