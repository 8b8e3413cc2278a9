"""Which process this is, kept current across fork without a system call per check.

gunicorn forks its workers from the process that built the app; threads, connections and queues made
before the fork belong to the parent. The hot path checks on every request, and getpid is a system call.
"""

from __future__ import annotations

import os


class _Process:
    pid = os.getpid()
    generation = 0  # how many forks led to this process

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()
        cls.generation += 1


process = _Process
os.register_at_fork(after_in_child=_Process.forked)
