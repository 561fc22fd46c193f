"""`migpool run` on a simulated GPU: copies on partitions, placeholders, ports, output, exit status, signals,
restarts, job queues (static and dynamic), read-only mode. Each run is the real command in its own process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migpool.launch import copies as launch

RUN = [sys.executable, "-m", "migpool", "run", "--simulate", "A100-80GB"]


def migpool_run(*args, timeout=120, env=None):
    return subprocess.run(
        [*RUN, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def summary_of(out):
    """The --json summary, after the prefixed lines."""
    return json.loads(out[out.index("[\n") :])


def lines_of(out, name):
    return [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith(f"[{name}] ")]


def test_seven_copies_on_seven_distinct_partitions_with_every_placeholder():
    r = migpool_run(
        "-p", "1g.10gb", "-n", "7", "--json", "--",
        "sh", "-c", "echo i={index} u={uuid} p={profile} g={gpu} port={port} env=$CUDA_VISIBLE_DEVICES "
        "mi=$MIGPOOL_INDEX mp=$MIGPOOL_PROFILE {{literal}}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    seen = {}
    for i in range(7):
        (line,) = lines_of(r.stdout, f"1g.10gb#{i}")
        fields = dict(f.split("=", 1) for f in line.split()[:-1])
        assert line.endswith("{literal}")
        assert fields["i"] == fields["mi"] == str(i) and fields["p"] == fields["mp"] == "1g.10gb"
        assert fields["u"] == fields["env"] and fields["u"].startswith("MIG-") and fields["g"] == "0"
        seen[i] = (fields["u"], int(fields["port"]))
    assert len({u for u, _ in seen.values()}) == 7  # seven partitions, one copy each
    ports = [p for _, p in seen.values()]
    assert len(set(ports)) == 7 and all(p >= 8000 for p in ports)
    summary = summary_of(r.stdout)
    assert [j["name"] for j in summary] == [f"1g.10gb#{i}" for i in range(7)]
    assert all(j["status"] == 0 and j["partition"] == "1g.10gb" for j in summary)


def test_ports_in_use_are_skipped():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        got = launch.free_ports(3, taken)
    assert taken not in got and len(set(got)) == 3


def test_lines_are_whole_and_prefixed_and_the_first_failure_sets_the_status():
    script = "for i in $(seq 1 200); do echo out-{index}-$i; echo err-{index}-$i >&2; done; exit $(( {index} * 3 ))"
    r = migpool_run("-p", "3g.40gb", "-n", "2", "--", "sh", "-c", script)
    assert r.returncode == 3
    for i in (0, 1):
        assert lines_of(r.stdout, f"3g.40gb#{i}") == [f"out-{i}-{n}" for n in range(1, 201)]
        errs = [x for x in lines_of(r.stderr, f"3g.40gb#{i}") if x.startswith("err-")]
        assert errs == [f"err-{i}-{n}" for n in range(1, 201)]
    assert "exit 3" in r.stderr


def test_a_bad_placeholder_or_a_missing_program_is_one_line():
    r = migpool_run("-p", "1g.10gb", "-n", "1", "--", "echo", "{nope}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown placeholder {nope}" in r.stderr
    r = migpool_run("-p", "1g.10gb", "-n", "1", "--", "/no/such/program")
    assert r.returncode == 127 and "could not start" in r.stderr


def _sleeper(marker):
    return [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)", marker]


def _pids_running(marker):
    """The programs started with `marker` as their last argument (not migpool run itself, which names it too)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if argv and argv[-1] == marker.encode() and b"run" not in argv:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_copy_and_leaves_no_process(sig, tmp_path):
    marker = f"migpool-test-sleeper-{sig.name}"
    p = subprocess.Popen(
        [*RUN, "-p", "1g.10gb", "-n", "3", "--grace", "1", "--", *_sleeper(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_pids_running(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_pids_running(marker)) == 3
    finally:
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig
    assert err.count("stopped") >= 3
    deadline = time.monotonic() + 10
    while _pids_running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pids_running(marker) == []


def test_restarts_with_back_off_then_give_up(tmp_path):
    count = tmp_path / "count"
    # copy 0 keeps failing; copy 1 would run for ten minutes: the run stops when copy 0 is given up
    script = f"if [ {{index}} = 0 ]; then echo try >> {count}; echo last words; exit 4; fi; exec sleep 600"
    t = time.monotonic()
    r = migpool_run(
        "-p", "3g.40gb", "-n", "2", "--grace", "1", "--restart", "on-failure", "--max-restarts", "3", "--",
        "sh", "-c", script,
    )  # fmt: skip
    took = time.monotonic() - t
    assert r.returncode == 4
    assert len(count.read_text().split()) == 4  # the first run and three restarts
    assert "[3g.40gb#0] failed 4 times, so the run stops; its last lines:" in r.stderr
    assert "[3g.40gb#0]   last words" in r.stderr and "[3g.40gb#1] stopped" in r.stderr
    assert 0.5 + 1.0 + 2.0 <= took < 120  # waits of 0.5 s, then 1 s, then 2 s


def test_a_job_file_runs_each_line_once_over_three_partitions_with_retries(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    lines = []
    for i in range(50):
        fail = "exit 1" if i % 10 == 9 else "true"
        lines.append(f"sh -c 'echo $MIGPOOL_PARTITION > {done}/{i}.$$; {fail}'")
    (tmp_path / "jobs.txt").write_text("# a sweep\n\n" + "\n".join(lines) + "\n")
    failed = tmp_path / "failed.txt"
    r = migpool_run(
        "-p", "2g.20gb", "-n", "3", "--jobs", str(tmp_path / "jobs.txt"), "--retries", "1",
        "--failed", str(failed), "--json",
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    runs: dict[int, int] = {}
    partitions = set()
    for f in done.iterdir():
        i = int(f.name.split(".")[0])
        runs[i] = runs.get(i, 0) + 1
        partitions.add(json.loads(f.read_text())["uuid"])
    assert sorted(runs) == list(range(50))
    assert all(n == (2 if i % 10 == 9 else 1) for i, n in runs.items())  # once, and a failure once more
    assert len(partitions) == 3
    assert failed.read_text().splitlines() == [lines[i] for i in (9, 19, 29, 39, 49)]
    summary = summary_of(r.stdout)
    assert len(summary) == 50 and sum(j["attempts"] for j in summary) == 55


def test_dynamic_jobs_of_two_sizes_get_partitions_of_their_size(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "".join("[3g.40gb] sh -c 'echo big $MIGPOOL_PARTITION'\n" for _ in range(2))
        + "".join("[min_memory=9GB] sh -c 'echo small $MIGPOOL_PARTITION'\n" for _ in range(3))
    )
    r = migpool_run("--dynamic", "--jobs", str(jobs))
    assert r.returncode == 0, r.stderr
    out = [line.split("] ", 1)[1].split(" ", 1) for line in r.stdout.splitlines() if line.startswith("[job")]
    assert sorted(kind for kind, _ in out) == ["big"] * 2 + ["small"] * 3
    for kind, part in out:
        p = json.loads(part)
        assert p["profile"] == "3g.40gb" if kind == "big" else p["memory_mib"] >= 9 * 1024


def test_read_only_mode_refuses_with_one_line_and_changes_nothing():
    r = migpool_run("-p", "1g.10gb", "-n", "2", "--", "true", env={"MIGPOOL_READ_ONLY": "1"})
    assert r.returncode == 2 and r.stderr.startswith("error: MIGPOOL_READ_ONLY is set") and "[1g.10gb" not in r.stdout


def test_usage_errors():
    assert migpool_run("--", "true").returncode == 2
    assert migpool_run("-p", "1g.10gb", "--dynamic", "--", "true").returncode == 2
    assert "unknown" not in migpool_run("-p", "1g.10gb", "-n", "1", "--", "true").stderr


def test_a_job_line_parses_like_a_shell_without_one():
    job = launch.parse_job_line("[min_memory=30GB]  python train.py --lr '0.1 0.2'", 4)
    assert job is not None and job.min_memory == "30GB" and job.argv == ["python", "train.py", "--lr", "0.1 0.2"]
    assert launch.parse_job_line("# comment", 0) is None and launch.parse_job_line("   ", 1) is None
    with pytest.raises(launch.PluginError, match="line 3"):
        launch.parse_job_line("echo 'unclosed", 2)


def test_a_job_file_names_each_job_after_its_line_and_skips_blanks_and_comments():
    from migpool.launch.jobs import read_job_file

    jobs = read_job_file("# a sweep\n\necho a\n[2g.20gb] echo b {index}\n  [min_memory=30GB] echo c\n")
    assert [(j.name, j.argv, j.partition, j.min_memory) for j in jobs] == [
        ("job3", ["echo", "a"], None, None),
        ("job4", ["echo", "b", "{index}"], "2g.20gb", None),
        ("job5", ["echo", "c"], None, "30GB"),
    ]


def test_whole_gpus_one_copy_each():
    r = subprocess.run(
        [sys.executable, "-m", "migpool", "run", "--simulate", "A100-80GB:2", "--whole-gpu", "--", "sh", "-c",
         "echo $CUDA_VISIBLE_DEVICES"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = [lines_of(r.stdout, f"gpu#{i}") for i in range(2)]
    assert len({g[0] for g in got}) == 2 and all(g[0].startswith("GPU-") for g in got)


def test_log_dir_gets_one_file_per_copy(tmp_path):
    logs = tmp_path / "logs"
    r = migpool_run("-p", "3g.40gb", "-n", "2", "--log-dir", str(logs), "--", "echo", "hello {index}")
    assert r.returncode == 0
    assert sorted(p.name for p in logs.iterdir()) == ["3g.40gb_0.log", "3g.40gb_1.log"]
    assert (logs / "3g.40gb_1.log").read_text() == "hello 1\n"


def test_the_run_leases_its_partitions(tmp_path):
    marker = "migpool-test-lease-holder"
    p = subprocess.Popen(
        [*RUN, "-p", "7g.80gb", "--grace", "1", "--", *_sleeper(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _pids_running(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        r = subprocess.run(
            [sys.executable, "-m", "migpool", "apply", "--simulate", "A100-80GB", "1g.10gb", "-n", "7", "--force"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and "leased" in r.stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    assert Path(os.environ["MIGPOOL_STATE_DIR"]).exists()


def test_ready_port_lists_every_endpoint_once_they_accept_connections(tmp_path):
    marker = "migpool-test-server"
    server = "import sys, http.server as h; h.test(h.SimpleHTTPRequestHandler, port=int(sys.argv[1]), bind='127.0.0.1')"
    p = subprocess.Popen(
        [*RUN, "-p", "1g.10gb", "-n", "3", "--ready-port", "--port-base", "18700", "--grace", "1", "--",
         sys.executable, "-c", server, "{port}", marker],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        urls: list[str] = []
        while time.monotonic() < deadline and len(urls) < 3:
            line = p.stderr.readline()
            if line.startswith("ready:"):
                urls.append(line.split()[2])
        ports = [int(u.rsplit(":", 1)[1]) for u in urls]
        assert len(set(ports)) == 3 and min(ports) >= 18700  # (a port still closing is skipped)
        import urllib.request

        for url in urls:
            assert urllib.request.urlopen(url, timeout=5).status == 200
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM


def test_run_command_from_python():
    import migpool

    with migpool.Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        plugins=[migpool.plugins.mig(profile="3g.40gb")],
        progress=False,
    ) as pool:
        r = migpool.run_command(["sh", "-c", "echo on {profile} $CUDA_VISIBLE_DEVICES; echo oops >&2; exit 3"]) >> pool
    assert r.status == 3 and r.profile == "3g.40gb" and r.stdout == f"on 3g.40gb {r.uuid}\n" and r.stderr == "oops\n"


def test_ready_cmd_is_run_with_each_copys_placeholders(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    r = subprocess.Popen(
        [*RUN, "-p", "2g.20gb", "-n", "2", "--grace", "1", "--ready-cmd", f"test -e {marks}/{{index}}-{{profile}}",
         "--", "sh", "-c", f"sleep 1; touch {marks}/{{index}}-{{profile}}; exec sleep 600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            line = r.stderr.readline()
            if line.startswith("ready:"):
                got.append(line.split()[1:])
        assert sorted(got) == [["2g.20gb#0", "2g.20gb"], ["2g.20gb#1", "2g.20gb"]]
    finally:
        r.send_signal(signal.SIGTERM)
        r.communicate(timeout=60)


def test_its_help_fits_80_columns():
    r = subprocess.run(
        [sys.executable, "-m", "migpool", "run", "--help"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert r.returncode == 0 and "{port}" in r.stdout
    assert [line for line in r.stdout.splitlines() if len(line) > 80] == []


def test_a_mixed_layout_runs_one_copy_on_each_partition():
    r = migpool_run("--layout", "3g.40gb:1,1g.10gb:4", "--json", "--", "sh", "-c", "echo {profile} $MIGPOOL_PROFILE")
    assert r.returncode == 0, r.stderr
    summary = summary_of(r.stdout)
    assert sorted(j["partition"] for j in summary) == ["1g.10gb"] * 4 + ["3g.40gb"]
    for j in summary:
        (line,) = lines_of(r.stdout, j["name"])
        assert j["name"].startswith(j["partition"] + "#") and line == f"{j['partition']} {j['partition']}"
