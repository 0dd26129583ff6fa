"""Scoring releases the GIL (other Python threads run meanwhile) and stops at Ctrl-C between batches."""

import os
import signal
import threading
import time

from bge_rerank import Reranker
from conftest import fixture

PASSAGE = " ".join(["The giant panda is a bear species endemic to China."] * 12)


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, started, time.perf_counter()


def test_other_threads_run_while_scoring():
    reranker = Reranker(fixture("minicpm-layerwise-reranker"), batch_size=8)
    pairs = [("what is panda?", PASSAGE)] * 400
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    counter = threading.Thread(target=count)
    counter.start()
    try:
        scores, started, ended = timed(lambda: reranker.score(pairs))
    finally:
        stop.set()
        counter.join()
    assert len(scores) == 400
    assert ended - started > 0.1, "the call is too short to tell"
    during = [t for t in ticks if started < t < ended]
    # With the GIL held the counter could not run at all during the call.
    assert len(during) > 10_000, f"{len(during)} ticks in {ended - started:.2f} s"
    # and it ran throughout, not just at the edges.
    assert during[0] - started < 0.1 and ended - during[-1] < 0.1


def test_ctrl_c_stops_scoring_between_batches():
    reranker = Reranker(fixture("minicpm-layerwise-reranker"), batch_size=4)
    pairs = [("what is panda?", PASSAGE)] * 40
    _, started, ended = timed(lambda: reranker.score(pairs))
    whole = (ended - started) * 50  # 2000 pairs
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        _, started, _ = timed(lambda: None)
        interrupted = False
        try:
            reranker.score(pairs * 50)
        except KeyboardInterrupt:
            interrupted = True
        elapsed = time.perf_counter() - started
    finally:
        timer.cancel()
    assert interrupted
    assert whole > 2.0, f"the run ({whole:.1f} s) is too short to tell"
    assert elapsed < 0.3 + whole / 4, f"stopped after {elapsed:.2f} s of {whole:.2f}"
    # The reranker is still usable after an interrupt.
    assert len(reranker.score(pairs[:2])) == 2
