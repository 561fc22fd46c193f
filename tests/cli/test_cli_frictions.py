"""A newcomer's smaller frictions (issue 44, item 5), each as the newcomer met it: through the real entry point
at 80 columns."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mp(*args, sim="A100-80GB", env=None, lines=None):
    e = {**os.environ, "COLUMNS": "80", "MIGPOOL_SIMULATE": sim, **(env or {})}
    if lines:
        e["LINES"] = str(lines)
    return subprocess.run([sys.executable, "-m", "migpool", *args], capture_output=True, text=True, env=e, timeout=120)


@pytest.mark.parametrize(
    "args,says",
    [
        (["apply", "3g.40gb:3"], "at most 2 fit here"),
        (["apply", "1g.5gb"], "A100-SXM4-80GB (did you mean '1g.10gb'?); valid: 1g.10gb,"),
        (["apply", "3g.20gb", "-n", "2"], "(did you mean '3g.40gb'?)"),
        (["apply", "1g.10gb:3,3g.40gb:2"], "Would fit instead: "),
    ],
)
def test_refusals_are_one_sentence_line_of_at_most_160_characters(args, says):
    r = mp(*args)
    line = r.stderr.rstrip("\n")
    assert r.returncode == 2 and "\n" not in line and line.startswith("error: ") and line.endswith(".")
    assert says in line and len(line) <= 160, (len(line), line)


def test_a_second_apply_does_not_call_the_partitions_it_kept_new():
    assert mp("apply", "1g.10gb:2").returncode == 0
    r = mp("apply", "1g.10gb:3")
    assert r.returncode == 0 and "new partitions" not in r.stdout and "partitions (1 new)" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines() if "MIG-" in line]
    assert [row[-1] == "new" for row in rows] == [False, False, True]


def test_top_shows_two_gpus_and_all_their_partitions_in_80_by_24():
    sim = "A100-80GB:2"
    assert mp("apply", "3g.40gb:1,1g.10gb:4", sim=sim).returncode == 0
    r = mp("top", "--once", "--interval", "0.2", sim=sim, lines=24)
    shown = r.stdout.rstrip("\n").splitlines()
    assert r.returncode == 0 and len(shown) <= 23, "\n".join(shown)  # the live view adds a footer line
    assert sum(line.lstrip().startswith(("7:1g.10gb", "10:1g.10gb")) for line in shown) == 4  # each GPU's last
    assert sum("activity n/a" in line for line in shown) == 1  # the reason once, not once per GPU


def test_help_shows_the_layout_syntax_the_defaults_and_whole_summaries():
    for cmd in ("apply", "plan"):
        text = mp(cmd, "--help").stdout
        assert "3g.40gb:1,1g.10gb:4" in text and "--partitions 4 --min-memory 16GB" in text
    text = mp("run", "--help").stdout
    assert "[default: 10.0" in " ".join(text.split()) and "(default: all fit)" in text
    top = mp("--help").stdout
    commands = top.split("Commands:")[1]
    assert "..." not in commands and "print the MIG UUIDs." in " ".join(commands.split())
    assert all(len(line) <= 80 for line in (top + text).splitlines())


def test_status_ends_with_a_newline():
    assert mp("apply", "1g.10gb:1").returncode == 0
    for args in (["status"], ["status", "--json"]):
        r = mp(*args)
        assert r.returncode == 0 and r.stdout.endswith("\n")


def test_pool_tour_without_a_gpu_ends_in_one_line():
    env = {k: v for k, v in os.environ.items() if k != "MIGPOOL_SIMULATE"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples/pool_tour.py")], capture_output=True, text=True, env=env, timeout=120
    )
    if r.returncode == 0:
        pytest.skip("this machine has a MIG GPU: the tour ran on it")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pool_tour.py: ") and "--simulate" in r.stderr


def test_demo_prints_its_layout_as_apply_takes_it_and_a_next_step():
    r = mp("demo")
    assert r.returncode == 0, r.stderr
    assert "layout 3g.40gb:1,1g.10gb:4 on simulated A100-80GB" in r.stdout and "{" not in r.stdout
    assert "Next: migpool plan 3g.40gb:1,1g.10gb:4 --simulate A100-80GB" in r.stdout


def test_the_example_never_builds_cuda_torch_for_a_simulated_gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import nvidia_mig

    env = {"MIGPOOL_CACHE_DIR": "/c"}
    image = nvidia_mig.worker_image(True, ["torch"], None, env)  # no terminal: nobody to ask
    assert image.pip == ["torch"] and env["PIP_INDEX_URL"] == env["UV_INDEX_URL"] == nvidia_mig.CPU_WHEELS
    assert env["MIGPOOL_IMAGE_DIR"] == "/c/images/cpu"  # never mistaken for a CUDA image
    env = {}
    nvidia_mig.worker_image(False, ["torch"], None, env)  # a real GPU: the CUDA wheel, as the pool builds it
    assert env == {}
    asked = []
    with pytest.raises(SystemExit, match="nothing built"):
        nvidia_mig.worker_image(True, ["torch"], lambda q: asked.append(q) or False, env)
    assert "CPU torch" in asked[0] and env == {}
    nvidia_mig.worker_image(True, [], lambda q: asked.append(q) or False, env)  # torch here: nothing to ask
    assert len(asked) == 1 and env == {}
