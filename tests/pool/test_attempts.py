"""The retry loop's own edges, with futures the test controls (the pools' retries are tested in test_pool.py)."""

from __future__ import annotations

from concurrent.futures import Future

from migpool.pool.api.attempts import Retry, retrying


def test_a_cancel_that_comes_while_the_next_attempt_is_sent_cancels_that_attempt():
    sent: list[Future] = []
    outer: list[Future] = []

    def submit() -> Future:
        if sent:  # the caller cancels just as the retry is being sent (another thread, in real use)
            outer[0].cancel()
        sent.append(Future())
        return sent[-1]

    outer.append(retrying(submit, Retry(attempts=3)))
    sent[0].set_exception(RuntimeError("first attempt failed"))
    assert outer[0].cancelled()
    assert len(sent) == 2 and sent[1].cancelled()  # the attempt sent then does not run on unseen


def test_cancelling_between_attempts_sends_no_more():
    sent: list[Future] = []

    def submit() -> Future:
        sent.append(Future())
        return sent[-1]

    fut = retrying(submit, Retry(attempts=3))
    sent[0].set_exception(RuntimeError("first"))
    assert len(sent) == 2 and not fut.done()
    fut.cancel()
    assert sent[1].cancelled()
    sent[1].set_running_or_notify_cancel()
    assert len(sent) == 2
