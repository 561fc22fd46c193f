"""Task functions for pool/test_delivery.py, in a module that imports little: a worker imports it by name at its
first task, and the tests restart workers often."""

import os

import migpool


@migpool.function
def wait_for_item(name):
    """Note this process in the pool dict "pids", then wait for an item of queue `name`."""
    migpool.dict("pids")[name] = os.getpid()
    return migpool.queue(name).get(timeout=60)


@migpool.function
def meet(name):
    """Note this process in the pool dict "pids", then wait at barrier `name` of two parties."""
    migpool.dict("pids")[name] = os.getpid()
    return migpool.barrier(name, 2).wait(timeout=60)


@migpool.function
def endless():
    i = 0
    while True:
        yield i
        i += 1


@migpool.function
def total(items):
    """Each item as it came (a list: its sum)."""
    return [sum(x) if isinstance(x, list) else x for x in items]


@migpool.function
def take(name):
    return migpool.queue(name).get(timeout=5)
