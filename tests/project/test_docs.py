"""The documentation site: its code comes from files under examples/ that run here, never pasted, and its
pictures are drawn from real output (docs/pictures.py). `mkdocs build --strict` runs in .ci/run and in
test_site.py (a slow test)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$')
CODE = {"python", "bash", "sh", "console", "py"}


def test_every_code_block_is_included_from_a_file_that_exists():
    found = 0
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            lines = [ln for ln in body.strip().splitlines() if ln.strip()]
            if lang not in CODE:
                continue  # an output (text) block
            assert lines and all(SNIPPET.match(ln) for ln in lines), f"{page}: pasted {lang} code: {body[:80]!r}"
            for ln in lines:
                path, section = SNIPPET.match(ln).groups()
                text = (ROOT / path).read_text()
                assert not section or f"--8<-- [start:{section}]" in text, f"{page}: no section {section} in {path}"
                found += 1
    assert found >= 10


def _run(argv, **kw):
    env = {**os.environ, "MIGPOOL_READ_ONLY": "", **kw.pop("env", {})}
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env, **kw)


@pytest.mark.parametrize(
    "argv",
    [
        ["examples/first_pool.py"],
        ["examples/catalog_and_planner.py"],
        ["examples/pool_tour.py", "--simulate", "A100-80GB"],
        ["examples/shared_collections.py"],
        ["examples/large_values.py"],
        ["examples/warm_spares.py"],
    ],
)
def test_python_examples_run(argv):
    r = _run([sys.executable, *argv])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


@pytest.mark.parametrize("script", ["operator_cli.sh", "reboots_and_schedulers.sh", "run_programs.sh", "telemetry.sh"])
def test_shell_examples_run(script):
    bindir = str(Path(sys.executable).parent)  # `migpool` as installed beside this interpreter
    r = _run(["bash", f"examples/{script}"], env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr


def test_first_gpu_steps_run_read_only_on_a_simulated_h100():
    bindir = str(Path(sys.executable).parent)
    r = _run(
        ["bash", "examples/first_gpu.sh"],
        env={"PATH": f"{bindir}:{os.environ['PATH']}", "MIGPOOL_SIMULATE": "H100-80GB"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "matches the catalog" in r.stdout + r.stderr


def test_the_pictures_are_drawn_from_what_they_show():
    r = _run([sys.executable, "docs/pictures.py", "--check"])
    assert r.returncode == 0, r.stderr
    svg = (ROOT / "docs" / "pictures" / "placements.svg").read_text()
    from migpool import plan
    from migpool.mig import catalog

    for inst in plan(catalog.lookup("A100-80GB"), "3g.40gb:1,2g.20gb:1,1g.10gb:2"):
        assert f"{inst.profile.name} @ {inst.start}:{inst.size}" in svg


def test_the_checkpoint_example_was_moved():
    r = _run([sys.executable, "examples/checkpoints.py", "--simulate", "A100-80GB"])
    assert r.returncode == 0 and "move 7g.80gb shrunk" in r.stdout, r.stdout + r.stderr


def test_the_readme_is_short_and_points_to_the_site():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "pip install -e '.[demo]' && migpool demo" in text and "pip install -e '.[test]' && python -m pytest" in text
    assert "mkdocs" in text


def test_the_tests_left_to_ci_exist_and_ci_runs_them():
    """tests/conftest.py's LEFT_TO_CI names real tests; the default run leaves them out and .ci/run runs them
    (issue 44: the README's `python -m pytest -q` in minutes, with no network)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tests_conftest", ROOT / "tests" / "conftest.py")
    assert spec and spec.loader
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    assert len(conftest.LEFT_TO_CI) >= 10
    for nodeid, (marker, why) in conftest.LEFT_TO_CI.items():
        path, _, name = nodeid.split("[", 1)[0].partition("::")
        assert (ROOT / path).is_file(), nodeid
        assert not name or f"def {name}(" in (ROOT / path).read_text(), nodeid
        assert marker in ("slow", "network") and why, nodeid
    for nodeid in conftest.KEEP_IN_DEFAULT:
        path, _, name = nodeid.split("[", 1)[0].partition("::")
        assert f"{path}::{name}" in conftest.LEFT_TO_CI and f"def {name}(" in (ROOT / path).read_text(), nodeid
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11's; migpool runs on 3.10)
    assert re.search(r"""^addopts = ".*-m 'not slow and not network and not chaos'.*"$""", pyproject, re.M)
    assert 'python -m pytest -q -n 0 -m "slow or network or chaos"' in (ROOT / ".ci" / "run").read_text()
