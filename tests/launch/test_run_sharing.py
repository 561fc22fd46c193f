"""`migpool run` and the `mig` plugin share GPUs: idle partitions of the profile are reused, missing ones are made
beside what is there (the operations printed as `apply` prints them), every other partition stays as it is;
`--exclusive` / `mig(exclusive=True)` repartitions the whole GPU as before. Each command in its own process."""

import json
import os
import subprocess
import sys

import pytest

import migpool
from migpool import Compute, Worker, plugins


def mp(*args, sim="A100-80GB", timeout=120):
    env = {**os.environ, "COLUMNS": "80", "MIGPOOL_SIMULATE": sim}
    return subprocess.run(
        [sys.executable, "-m", "migpool", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def uuids(sim="A100-80GB"):
    """The MIG devices of every GPU now."""
    b = migpool.SimulatedBackend(sim)
    return {d.uuid for g in b.gpus() if g.mig_current for d in b.mig_devices(g.index)}


def ran_on(out):
    return {line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[") and "] MIG-" in line}


def test_run_reuses_idle_partitions_and_leaves_the_others():
    assert mp("apply", "1g.10gb", "-n", "7").returncode == 0
    before = uuids()
    r = mp("run", "-p", "1g.10gb", "-n", "2", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
    assert r.returncode == 0, r.stderr
    assert uuids() == before and len(before) == 7  # the five it did not use are still there
    assert len(ran_on(r.stdout)) == 2 and ran_on(r.stdout) <= before
    assert "create-gi" not in r.stderr and "destroy" not in r.stderr  # nothing to change, nothing said


def test_the_readme_walkthrough_keeps_the_3g_partition():
    sim = "A100-80GB:2"
    assert mp("apply", "3g.40gb:1,1g.10gb:4", sim=sim).returncode == 0
    before = uuids(sim)
    r = mp("run", "-p", "1g.10gb", "-n", "4", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES", sim=sim)
    assert r.returncode == 0, r.stderr
    assert uuids(sim) == before and len(ran_on(r.stdout)) == 4
    assert mp("assert", "3g.40gb:1,1g.10gb:4", sim=sim).returncode == 0


def test_exclusive_repartitions_the_whole_gpu_as_before():
    assert mp("apply", "1g.10gb", "-n", "7").returncode == 0
    r = mp("run", "--exclusive", "-p", "1g.10gb", "-n", "2", "--", "true")
    assert r.returncode == 0, r.stderr
    assert len(uuids()) == 2  # the GPU's layout became the run's: five idle partitions destroyed
    assert "  GPU 0: destroy-gi 1g.10gb" in r.stderr  # and said so, as apply says it


def test_what_must_be_made_is_printed_as_apply_prints_it():
    planned = [x for x in mp("plan", "3g.40gb", "-n", "1").stdout.splitlines() if x.startswith("  GPU 0: ")]
    r = mp("run", "-p", "3g.40gb", "-n", "1", "--", "true")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("  GPU 0: ")]
    assert lines == planned and [x.split()[2] for x in lines] == ["enable-mig", "create-gi", "create-ci"]
    r = mp("run", "-p", "1g.10gb", "-n", "2", "--", "true")  # beside the 3g.40gb, which stays
    assert r.returncode == 0, r.stderr
    assert "destroy" not in r.stderr and r.stderr.count("  GPU 0: create-gi 1g.10gb") == 2
    assert mp("assert", "3g.40gb:1,1g.10gb:2").returncode == 0


def test_too_many_copies_say_what_fits_in_the_commands_words():
    r = mp("run", "-p", "1g.10gb", "-n", "8", "--", "true", sim="A100-80GB:2")
    assert r.returncode == 2 and "concurrency" not in r.stderr
    line = r.stderr.strip()
    assert line == "error: -n 8: GPU 0 holds at most 7 partitions of 1g.10gb. Use -n 7 or --gpus all (14 on every GPU)."
    assert mp("apply", "1g.10gb", "-n", "7").returncode == 0
    r = mp("run", "-p", "3g.40gb", "-n", "1", "--", "true")
    line = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in line and len(line) <= 160
    assert line == (
        "error: -n 1: GPU 0 holds no partitions of 3g.40gb beside the partitions kept there. "
        "Use --exclusive (2 on the emptied GPU)."
    )
    assert len(uuids()) == 7  # refused before anything changed


def test_partitions_another_pool_leases_are_never_touched(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    assert mp("apply", "1g.10gb", "-n", "7").returncode == 0
    before = uuids()
    with Compute(
        worker=Worker(executor="process"), plugins=[plugins.mig(profile="1g.10gb", count=2)], progress=False
    ) as pool:
        held = {p.uuid for p in pool.partitions}
        r = mp("run", "-p", "1g.10gb", "--json", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
        assert r.returncode == 0, r.stderr
        assert len(ran_on(r.stdout)) == 5 and not ran_on(r.stdout) & held  # the five idle ones, all of them
        r = mp("run", "-p", "1g.10gb", "-n", "6", "--", "true")
        assert r.returncode == 2 and "at most 5 partitions" in r.stderr
        r = mp("run", "--exclusive", "-p", "1g.10gb", "-n", "2", "--", "true")
        assert r.returncode == 2 and "leased by" in r.stderr
        assert uuids() == before


def test_the_plugin_shares_and_restores_only_what_it_made(sim):
    b = sim()
    migpool.apply({"3g.40gb": 1}, b)
    kept = {d.uuid for d in b.mig_devices(0)}
    mig = plugins.mig(profile="2g.20gb", count="all", restore=True)
    with Compute(provider=migpool.Local(simulate="A100-80GB"), plugins=[mig], progress=False) as c:
        assert len(c.partitions) == 1 and {p.profile for p in c.partitions} == {"2g.20gb"}
        assert kept <= {d.uuid for d in b.mig_devices(0)}
    assert {d.uuid for d in b.mig_devices(0)} == kept  # its own partition removed, the 3g.40gb kept
    mig = plugins.mig(profile="2g.20gb", count="all", exclusive=True)
    with Compute(provider=migpool.Local(simulate="A100-80GB"), plugins=[mig], progress=False) as c:
        assert len(c.partitions) == 3  # the whole GPU: the idle 3g.40gb destroyed
    assert not kept & {d.uuid for d in b.mig_devices(0)}


@pytest.mark.parametrize("exclusive", [False, True])
def test_a_fresh_gpu_is_restored_to_mig_off(sim, exclusive):
    mig = plugins.mig(profile="1g.10gb", count=2, restore=True, exclusive=exclusive)
    with Compute(provider=migpool.Local(simulate="A100-80GB"), plugins=[mig], progress=False) as c:
        assert len(c.partitions) == 2
    g = sim().gpus()[0]
    assert g.mig_current is False and json.loads(mp("gpus", "--json").stdout)[0]["mig_current"] is False


def test_a_layout_reuses_what_matches_and_refuses_what_cannot_fit_beside_the_rest():
    assert mp("apply", "3g.40gb:1,1g.10gb:4").returncode == 0
    before = uuids()
    r = mp("run", "--layout", "3g.40gb:1,1g.10gb:2", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
    assert r.returncode == 0 and "  GPU 0: " not in r.stderr, r.stderr  # all five idle: nothing made
    assert uuids() == before and len(ran_on(r.stdout)) == 3
    r = mp("run", "--layout", "4g.40gb:1", "--", "true")
    line = r.stderr.rstrip("\n")
    assert r.returncode == 2 and "\n" not in line and "run --exclusive" in line and uuids() == before
    r = mp("run", "--exclusive", "--layout", "4g.40gb:1", "--", "true")
    assert r.returncode == 0, r.stderr
    assert mp("assert", "4g.40gb:1").returncode == 0  # the whole GPU became the run's layout


def test_two_sharing_pools_started_at_the_same_instant_get_partitions_of_their_own(monkeypatch):
    """Two processes, released by a barrier 5 times, each open a pool of one 1g.10gb beside the other's: both
    open, on partitions that exist while they run, never the same one (the GPU's lock orders their claims, the
    leases keep them apart), reusing the idle ones of the rounds before."""
    import multiprocessing
    import queue

    import racers

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    ctx = multiprocessing.get_context("spawn")
    barrier, results, rounds = ctx.Barrier(2, timeout=120), ctx.Queue(), 5
    procs = [ctx.Process(target=racers.race, args=("1g.10gb", rounds, barrier, results, False)) for _ in range(2)]
    for p in procs:
        p.start()
    got = []
    try:
        for _ in range(2 * rounds):
            got.append(results.get(timeout=180))
    except queue.Empty:
        pass
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    assert len(got) == 2 * rounds, got
    for k in range(rounds):
        rows = [r for r in got if r[0] == k]
        assert [r[2] for r in rows] == ["open", "open"], rows
        a, b = (set(r[3]) for r in rows)
        assert len(a) == len(b) == 1 and not a & b and rows[0][4] == rows[1][4] == []
    assert len(uuids()) <= 2  # the later rounds reused the partitions the first one made


def test_a_sharing_pool_waits_for_room_when_asked(monkeypatch):
    """mig(wait=seconds) without exclusive: while another pool holds every partition that fits, the second one
    waits for room instead of being refused, and opens once the first has closed."""
    import threading
    import time

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    first = Compute(
        worker=Worker(executor="process"), plugins=[plugins.mig(profile="3g.40gb", count="all")], progress=False
    )
    first.__enter__()
    with pytest.raises(migpool.PluginError, match="at most 0 partitions of 3g.40gb beside"):
        with Compute(worker=Worker(executor="process"), plugins=[plugins.mig(profile="3g.40gb")], progress=False):
            pass
    closer = threading.Timer(1.0, first.close)
    closer.start()
    t0 = time.monotonic()
    try:
        mig = plugins.mig(profile="3g.40gb", wait=30)
        with Compute(worker=Worker(executor="process"), plugins=[mig], progress=False) as second:
            assert len(second.partitions) == 1 and second.submit(lambda: 2).result() == 2
        assert time.monotonic() - t0 >= 0.9
    finally:
        closer.join()
