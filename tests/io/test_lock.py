"""output_lock: one writer per output file, across processes and within one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lumir.errors import OutputLockedError
from lumir.io.lock import lock_path, output_lock

HOLDER = """
import fcntl, os, sys
fh = open(sys.argv[1], "a+")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
fh.seek(0); fh.truncate(); fh.write(f"{os.getpid()}\\n"); fh.flush()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "caps.jsonl"
    with output_lock(out) as lock:
        assert lock == lock_path(out) == tmp_path / "sub" / "caps.jsonl.lock"
        assert lock.read_text().strip() == str(os.getpid())
        with (
            pytest.raises(
                OutputLockedError, match=rf"caps\.jsonl is being written by another job \(process {os.getpid()}"
            ),
            output_lock(out),
        ):
            pass
    assert not lock_path(out).exists()  # removed on a clean exit
    with output_lock(out):  # and free again
        pass


def test_another_process_holding_the_lock_refuses_until_it_ends(tmp_path: Path) -> None:
    out = tmp_path / "k.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path(out))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"k\.jsonl .*process {holder.pid}"), output_lock(out):
            pass
    finally:
        holder.kill()  # a crash: the lock file stays, the lock goes with the process
        holder.wait()
    assert lock_path(out).exists()
    with output_lock(out):
        pass
