"""The workload record: written by a pool as tasks end, rotated past its cap, off with MIGPOOL_RECORD=0."""

import json

from migpool_cli import mp

from migpool import Compute, Local, Worker, function, plugins
from migpool.observe import workload


@function(min_memory="10GB")
def double(x):
    return 2 * x


def _pool():
    return Compute(
        provider=Local(simulate="A100-80GB"),
        worker=Worker(executor="process"),
        plugins=[plugins.mig(dynamic=True, remember=False)],
        progress=False,
    )


def test_a_pool_records_each_finished_task(tmp_path):
    with _pool() as c:
        assert [f.result() for f in [c.submit(double(k)) for k in range(5)]] == [0, 2, 4, 6, 8]
    workload.close_all()
    lines = workload.default_path().read_text().splitlines()
    assert len(lines) == 5
    rows = [json.loads(line) for line in lines]
    assert {r["fn"] for r in rows} == {f"{__name__}.double"}
    assert all(r["need_mib"] == 10e9 / 2**20 and r["seconds"] >= 0 and r["profile"].endswith("gb") for r in rows)
    assert all(len(line) < 300 for line in lines)  # a few hundred bytes per task at most
    assert list(workload.read(workload.paths())) == [
        dict(fn=r["fn"], need_mib=r["need_mib"], arrival=r["arrival"], profile=r["profile"], seconds=r["seconds"])
        for r in rows
    ]


def test_record_off(monkeypatch):
    monkeypatch.setenv("MIGPOOL_RECORD", "0")
    with _pool() as c:
        c.submit(double(1)).result()
    workload.close_all()
    assert workload.paths() == []


def test_the_record_rotates_and_stays_capped(tmp_path):
    path = tmp_path / "w.jsonl"
    r = workload.Recorder(path, max_bytes=2000)
    for k in range(100):
        r.add((f"f{k}", None, 1.0e9 + k, "1g.10gb", 1.0))
    r.close()
    assert path.stat().st_size <= 2000 and path.with_name("w.jsonl.1").stat().st_size <= 2000
    kept = list(workload.read(workload.paths(path)))
    assert kept[-1]["fn"] == "f99" and 0 < len(kept) < 100  # the newest kept, the oldest dropped
    assert [k["arrival"] for k in kept] == sorted(k["arrival"] for k in kept)


def test_a_bad_line_is_skipped_and_named(tmp_path):
    path = tmp_path / "t.jsonl"
    good = dict(fn="f", need_mib=None, arrival=1.0, profile="whole", seconds=2.0)
    path.write_text(json.dumps(good) + "\nnot json\n")
    bad: list[str] = []
    assert list(workload.read([path], bad.append)) == [good]
    assert bad == [f"{path}:2"]


def test_migpool_run_jobs_records_each_command(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("[min_memory=9GB] sh -c 'exit 0'\n[3g.40gb] true\nfalse\n")
    r = mp("run", "--simulate", "A100-80GB", "--dynamic", "--jobs", str(jobs))
    assert r.returncode != 0  # `false` failed: it is not recorded
    rows = list(workload.read(workload.paths()))
    assert sorted(row["fn"] for row in rows) == ["sh -c exit 0", "true"]
    assert next(row for row in rows if row["fn"] == "true")["profile"] == "3g.40gb"
    assert next(row for row in rows if row["fn"] != "true")["need_mib"] == 9e9 / 2**20
