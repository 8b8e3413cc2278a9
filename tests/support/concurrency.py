"""Races on purpose: calls that start at the same moment, each in its own thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask


def at_once(app: Flask | None, *calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread, in `app`'s context (None: none), released together; their results in
    the order given. An exception in a thread is raised here, after all have ended."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        with app.app_context() if app is not None else contextlib.nullcontext():
            start.wait()
            try:
                results[index] = call()
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
