import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own simulated machines and no inherited migpool settings."""
    from migpool.mig import catalog

    monkeypatch.setenv("MIGPOOL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGPOOL_CONFIG_DIR", str(tmp_path / "config"))  # an empty user catalog
    monkeypatch.setenv("MIGPOOL_CACHE_DIR", str(tmp_path / "cache"))  # no run times learned by other tests
    monkeypatch.setenv("MIGPOOL_RUNTIME_DIR", str(tmp_path / "run"))  # real-GPU backends' locks and leases
    monkeypatch.setenv("MIGPOOL_DATA_DIR", str(tmp_path / "lib"))  # and their journal, never the machine's
    for var in ("MIGPOOL_READ_ONLY", "MIGPOOL_SIMULATE"):
        monkeypatch.delenv(var, raising=False)
    catalog.reload()
    yield
    catalog.reload()


@pytest.fixture
def sim():
    from migpool import SimulatedBackend

    def make(spec="A100-80GB"):
        return SimulatedBackend(spec)

    return make


# What `python -m pytest -q` leaves to `.ci/run` (pytest's `addopts` deselects these markers; `.ci/run` runs
# `-n 0 -m "slow or network or chaos"` after the default run). Each entry is a test file or a test's node id (with a
# parametrized test's brackets: that case alone; without them: every case), the marker it gets, and why.
# Seconds are the test's own time in full runs on a 2-core machine (pytest --durations).
LEFT_TO_CI: dict[str, tuple[str, str]] = {
    # network: Skyward's source distribution from PyPI, when .ci-cache/ lacks it (82 s for the first guide)
    "tests/pool/test_skyward_guides.py": ("network", "downloads Skyward's guides from PyPI"),
    # real clients and clusters (each skips where its program is absent)
    "tests/observe/test_prometheus.py": ("slow", "a real Prometheus server scraping migpool"),
    "tests/integrations/test_slurm.py::test_a_real_slurm_runs_each_type_on_its_own_mig_device": (
        "slow",
        "a one-node Slurm cluster (slurmctld, slurmd, munge)",
    ),
    "tests/pool/test_ray.py": ("slow", "local Ray clusters"),
    "tests/pool/test_plugins_ray.py": ("slow", "a local Ray cluster of two nodes (where Ray is installed)"),
    "tests/pool/test_elastic_ray.py": ("slow", "a local Ray cluster of two nodes: 70-80 s"),
    "tests/pool/test_ray_dynamic.py": ("slow", "dynamic MIG on a local Ray cluster of two nodes: 40-70 s"),
    "tests/project/test_examples.py::test_example_trains_on_two_simulated_partitions": ("slow", "PyTorch training"),
    # long runs of simulated workloads
    "tests/project/test_docs.py::test_the_checkpoint_example_was_moved": ("slow", "38-41 s"),
    "tests/project/test_benchmarks_smoke.py": ("slow", "every benchmark at a small size: 90-120 s together"),
    "tests/pool/test_moves.py::test_a_checkpoint_task_is_shrunk_for_waiting_tasks_and_resumes_where_it_stopped": (
        "slow",
        "16 s",
    ),
    "tests/pool/test_moves.py::test_a_move_whose_new_partition_fails_resumes_the_task_from_its_checkpoint": (
        "slow",
        "16 s",
    ),
    "tests/pool/test_dynamic.py::test_random_arrivals_end_exactly_once_on_legal_partitions": ("slow", "13-15 s"),
    "tests/pool/test_dynamic.py::test_a_task_never_has_an_idle_partition_destroyed_and_made_again_as_the_same_size": (
        "slow",
        "12-13 s",
    ),
    "tests/pool/test_pool.py::test_image_builds_a_cached_environment_when_needed": ("slow", "a venv: 9-10 s"),
    "tests/pool/test_pool.py::test_image_lives_under_the_cache_dir_and_says_what_it_installs": ("slow", "8-12 s"),
    "tests/pool/test_pool.py::test_image_install_failure_reports_the_installer_message": ("slow", "8-15 s"),
    "tests/integrations/test_migparted_errors.py::test_a_long_list_of_names_is_cut": ("slow", "10-11 s"),
    "tests/integrations/test_migparted.py::test_every_config_mig_parted_ships_is_read_and_each_applies_on_the_gpus_it_is_for": (  # noqa: E501
        "slow",
        "9-10 s",
    ),
    # one case of each stays in the default run
    "tests/reconcile/test_reconcile.py::test_killed_at_every_operation_the_next_apply_converges[A100-80GB-start1-goal1]": (  # noqa: E501
        "slow",
        "8 s",
    ),
    "tests/reconcile/test_reconcile.py::test_killed_at_every_operation_the_next_apply_converges[H100-80GB-start2-goal2]": (  # noqa: E501
        "slow",
        "7 s",
    ),
    "tests/launch/test_launch.py::test_restarts_with_back_off_then_give_up": ("slow", "waits out its back-off: 5 s"),
    # the same screens for every GPU of the catalog: 8-11 s each under load; KEEP_IN_DEFAULT keeps two
    "tests/cli/test_cli_width.py::test_gpus_profiles_and_catalog_show_at_80_columns": ("slow", "2-3 s per GPU model"),
    # the documentation's examples end to end (the CLI and the pool have their own tests) and the site's build
    "tests/project/test_docs.py::test_shell_examples_run": ("slow", "the four shell walkthroughs: 18-35 s together"),
    "tests/project/test_docs.py::test_python_examples_run": ("slow", "the site's build runs most of them again"),
    "tests/project/test_docs.py::test_first_gpu_steps_run_read_only_on_a_simulated_h100": ("slow", "3-7 s"),
    "tests/project/test_site.py": ("slow", "mkdocs builds the site, running its examples: 40-90 s"),
    # wave 4's longest (pytest --durations on a loaded 2-core machine); a quicker test of each stays in
    "tests/pool/test_policy_property.py": ("slow", "1,000 random mixes through the policy: 10-24 s"),
    "tests/cli/test_cli.py::test_plan_apply_status_assert_export_teardown": ("slow", "the whole CLI cycle: 12 s"),
    "tests/pool/test_pool.py::test_every_task_ends_exactly_once": ("slow", "11 s"),
    "tests/launch/test_run_sharing.py::test_a_layout_reuses_what_matches_and_refuses_what_cannot_fit_beside_the_rest": (
        "slow",
        "9 s",
    ),
    "tests/launch/test_run_sharing.py::test_partitions_another_pool_leases_are_never_touched": ("slow", "8 s"),
    "tests/launch/test_run_sharing.py::test_what_must_be_made_is_printed_as_apply_prints_it": ("slow", "8 s"),
    "tests/launch/test_run_sharing.py::test_two_sharing_pools_started_at_the_same_instant_get_partitions_of_their_own": (  # noqa: E501
        "slow",
        "5 s",
    ),
    "tests/launch/test_launch.py::test_a_job_file_runs_each_line_once_over_three_partitions_with_retries": (
        "slow",
        "9 s",
    ),
    "tests/cli/test_cli_width.py::test_plan_apply_status_demo_and_catalog_at_80_columns": ("slow", "8 s"),
    "tests/host/test_leases.py::test_two_pools_started_at_the_same_instant_never_share_or_lose_partitions": (
        "slow",
        "20 rounds of two racing pools: 6-11 s each case",
    ),
    "tests/reconcile/test_reconcile.py::test_journal_updates_from_many_threads_are_all_kept": ("slow", "7 s"),
    "tests/cli/test_cli_frictions.py::test_demo_prints_its_layout_as_apply_takes_it_and_a_next_step": ("slow", "6 s"),
    "tests/cli/test_cli.py::test_read_only_apply_refuses_and_changes_nothing": ("slow", "5 s"),
    "tests/pool/test_dynamic.py::test_a_large_task_is_not_starved_by_small_ones": ("slow", "5 s"),
    "tests/cli/test_cli_export_columns.py::test_export_comments_and_the_catalog_note_fit_80_columns": ("slow", "5 s"),
}
# cases of a test LEFT_TO_CI names without brackets that the default run still runs
KEEP_IN_DEFAULT = {
    "tests/cli/test_cli_width.py::test_gpus_profiles_and_catalog_show_at_80_columns[A100-80GB]",
    "tests/cli/test_cli_width.py::test_gpus_profiles_and_catalog_show_at_80_columns[H100-80GB]",
}


def pytest_collection_modifyitems(config, items):
    """LEFT_TO_CI's markers; and the gpu marker: skip cleanly where no NVIDIA GPU is present."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        found = LEFT_TO_CI.get(item.nodeid) or LEFT_TO_CI.get(item.nodeid.split("[", 1)[0]) or LEFT_TO_CI.get(path)
        if found and item.nodeid not in KEEP_IN_DEFAULT:
            item.add_marker(getattr(pytest.mark, found[0]))
    try:
        import pynvml

        pynvml.nvmlInit()
        has_gpu = pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no library, no device: all mean no GPU here
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (NVML found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


FOLDER_SECONDS: dict[str, float] = {}
FOLDER_TESTS: dict[str, int] = {}


def pytest_runtest_logreport(report):
    """Each test's setup, call and teardown time, added up per folder for the summary below."""
    folder = report.nodeid.split("::", 1)[0].rsplit("/", 1)[0]
    FOLDER_SECONDS[folder] = FOLDER_SECONDS.get(folder, 0.0) + report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        FOLDER_TESTS[folder] = FOLDER_TESTS.get(folder, 0) + 1


def pytest_terminal_summary(terminalreporter):
    """More than dots: where the time went, one line per folder."""
    if not FOLDER_SECONDS:
        return
    terminalreporter.section("time per folder", sep="-")
    for folder in sorted(FOLDER_SECONDS):
        terminalreporter.write_line(
            f"{folder:<24} {FOLDER_TESTS.get(folder, 0):>5} tests {FOLDER_SECONDS[folder]:>8.1f} s"
        )
