"""The fused-kernel build lock a killed process leaves behind must not hang every later BO job."""

import os
import threading
import time

from bomf.warmup import release_stale_lock


def test_a_stale_lock_is_removed(tmp_path, capfd):
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    assert release_stale_lock(tmp_path, max_age=600, poll=0.01) is True
    assert not lock.exists()
    assert "removed a stale build lock" in capfd.readouterr().err


def test_a_live_lock_is_waited_for_and_left_to_its_owner(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    owner = threading.Timer(0.3, lock.unlink)  # a build that finishes after 0.3 s
    owner.start()
    started = time.perf_counter()
    assert release_stale_lock(tmp_path, max_age=600, poll=0.01) is False
    assert time.perf_counter() - started >= 0.25
    owner.join()


def test_no_lock_returns_at_once(tmp_path):
    assert release_stale_lock(tmp_path, poll=10) is False
