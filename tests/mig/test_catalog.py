import math
import re
from pathlib import Path

import pytest
from hardware_readout import parse

import migpool
from migpool.mig import catalog
from migpool.mig.catalog import format_placements

FIXTURES = Path(__file__).parents[1] / "fixtures"

READOUTS = {"H100-80GB": "h100-80gb-hbm3.md", "H200-141GB": "h200-141gb.md"}
SHARED = Path(__file__).resolve().parents[3] / "shared" / "hardware"


@pytest.mark.parametrize("file", sorted(READOUTS.values()))
def test_fixtures_hold_the_shared_readouts_facts(file):
    """The fixtures are copies of ../shared/hardware: their facts must not drift (notes may grow)."""
    if not (SHARED / file).exists():
        pytest.skip("../shared/hardware is not beside this checkout")
    assert parse(FIXTURES / file) == parse(SHARED / file)


@pytest.mark.parametrize("key", sorted(READOUTS))
def test_catalog_entry_equals_the_real_readout_field_for_field(key):
    r = parse(FIXTURES / READOUTS[key])
    assert len(r["lgip"]) == 7 and len(r["lgipp"]) == 7 and len(r["nvml"]) == 7  # the parser read every row
    gpu = catalog.lookup(key)
    assert catalog.lookup(r["nvml_name"] or r["name"]) == gpu
    assert not gpu.estimated and gpu.source.startswith("hw")
    assert {p.name for p in gpu.profiles} == set(r["lgip"])
    for p in gpu.profiles:
        row, nv = r["lgip"][p.name], r["nvml"][p.name]
        assert p.id == row["id"] == nv["id"]
        assert p.max_instances == row["max_instances"] == nv["max_instances"]
        assert p.sms == row["sms"] == nv["sms"]
        assert p.memory_mib == nv["memory_mib"]
        assert f"{p.memory_mib / 1024:.2f}" == f"{row['memory_gib']:.2f}"
        if "slices" in nv:
            assert p.slices == nv["slices"]
        if "nvml_index" in nv:
            assert p.nvml_index == nv["nvml_index"]
        assert format_placements(p.placements) == r["lgipp"][p.id]
        for k in ("decoders", "encoders", "copy_engines", "jpeg", "ofa"):
            assert p.media[k] == row[k], (p.name, k)


def test_a_profile_name_is_not_its_memory():
    """The H200 readout: 1g.18gb holds 16384 MiB and 7g.141gb 143360 MiB, not what the names suggest."""
    gpu = catalog.lookup("H200")
    assert gpu.profile("1g.18gb").memory_mib == 16384 and gpu.profile("7g.141gb").memory_mib == 143360


def test_estimated_figures_are_marked_in_the_data():
    for m in catalog.models():
        assert set(m.estimated) <= {"memory_mib", "sms", "id"}, m.key
        if m.source in ("approx", "approx-h200", "migparted+h200"):
            assert m.memory_estimated, m.key
    assert not catalog.lookup("A100-80GB").memory_estimated
    assert catalog.lookup("H100-NVL-94GB").memory_estimated


@pytest.mark.parametrize(
    "name",
    [
        "A100-80GB",
        "NVIDIA A100-SXM4-80GB",
        "a100 80gb",
        "H100-80GB",
        "H100",
        "NVIDIA H100 80GB HBM3",
        "B200",
        "RTX-PRO-6000",
        "NVIDIA RTX PRO 6000 Blackwell Server Edition",
    ],
)
def test_lookup_accepts_keys_aliases_and_nvml_names(name):
    assert catalog.lookup(name).profiles


def test_catalog_covers_the_documented_gpus():
    keys = {m.key for m in catalog.models()}
    assert {
        "A100-40GB",
        "A100-80GB",
        "A30-24GB",
        "H100-80GB",
        "H100-PCIE-80GB",
        "H100-NVL-94GB",
        "H200-141GB",
        "H200-NVL-141GB",
        "H20-96GB",
        "GH200-96GB",
        "B200-180GB",
        "GB200-186GB",
        "RTX-PRO-6000",
        "B300-269GB",
        "GB300-278GB",
    } <= keys


def _name_gb(total_mib: int, memory_mib: int) -> int:
    """The GB in a profile's name as NVIDIA's tools compute it from memory (go-nvlib's getMigMemorySizeGB): the
    profile's share of the GPU's memory rounded up to eighths, times the GPU's memory in whole GiB rounded up,
    rounded half away from zero."""
    share = math.ceil(memory_mib / total_mib * 8) / 8
    return math.floor(share * math.ceil(total_mib / 1024) + 0.5)


def test_every_profile_is_named_as_nvidias_tools_name_it_from_its_memory():
    """Holds on the real readouts (H100, H200) and must hold on every estimate: before, the B200's estimated memory
    (23552 MiB for 1g.23gb of 183359 MiB) would have been named 1g.45gb by NVIDIA's own tools."""
    for m in catalog.models():
        for p in m.profiles:
            named = int(re.match(r"\d+g\.(\d+)gb", p.name).group(1))
            assert _name_gb(m.memory_mib, p.memory_mib) == named, (m.key, p.name, p.memory_mib)


def test_every_model_has_a_pci_device_id_for_mig_parted_device_filters():
    for m in catalog.models():
        assert m.pci_device_ids and all(x & 0xFFFF == 0x10DE for x in m.pci_device_ids), m.key


@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("B300", ["1g.34gb", "1g.34gb+me", "1g.67gb", "2g.67gb", "3g.135gb", "4g.135gb", "7g.269gb"]),
        ("GB300", ["1g.35gb", "1g.35gb+me", "1g.70gb", "2g.70gb", "3g.139gb", "4g.139gb", "7g.278gb"]),
        ("RTX-PRO-6000", ["1g.24gb+gfx", "2g.48gb+gfx", "4g.96gb+gfx", "1g.24gb-me", "2g.48gb-me", "1g.24gb+me.all"]),
    ],
)
def test_the_profiles_mig_parteds_default_configs_use(model, names):
    gpu = catalog.lookup(model)
    assert set(names) <= {p.name for p in gpu.profiles}


def test_every_model_is_consistent():
    for m in catalog.models():
        assert m.source in catalog._raw()["sources"], m.key
        for p in m.profiles:
            assert p.placements and all(pl.start + pl.size <= m.memory_slices for pl in p.placements), (m.key, p.name)
            assert p.max_instances <= len(p.placements)
            assert p.compute_profiles[-1].slices == p.slices and p.compute_profiles[-1].name == p.name
        assert max(p.slices for p in m.profiles) == m.compute_slices


def test_compute_instance_profiles_are_named_like_nvidia_smi():
    p = catalog.lookup("A100-80GB").profile("3g.40gb")
    assert [c.name for c in p.compute_profiles] == ["1c.3g.40gb", "2c.3g.40gb", "3g.40gb"]


@pytest.mark.parametrize("spec", ["3g.40gb", "MIG 3g.40gb", "3G.40GB", "mig-3g.40gb", 9, "9"])
def test_profile_parse_is_forgiving(spec):
    assert catalog.lookup("H100-80GB").profile(spec).name == "3g.40gb"


def test_unknown_profile_names_model_lists_valid_and_suggests():
    with pytest.raises(migpool.ProfileError) as e:
        catalog.lookup("H100-80GB").profile("3g.20gb")
    msg = str(e.value)
    assert "NVIDIA H100 80GB HBM3" in msg and "did you mean '3g.40gb'" in msg and "valid: 1g.10gb" in msg


def test_unknown_profile_id_and_garbage_are_errors():
    gpu = catalog.lookup("H100-80GB")
    with pytest.raises(migpool.ProfileError, match="profile id 42"):
        gpu.profile(42)
    with pytest.raises(migpool.ProfileError, match="valid:"):
        gpu.profile("lots")
    assert isinstance(migpool.ProfileError("x"), migpool.MigpoolError)


def test_unknown_model_suggests():
    with pytest.raises(migpool.CatalogError, match="did you mean 'A100-80GB'"):
        catalog.lookup("A100-80G")


def test_answers_that_rest_on_estimated_memory_say_so():
    est = catalog.lookup("H100-NVL-94GB")
    with pytest.warns(migpool.EstimateWarning, match="H100-NVL-94GB are estimates.*migpool catalog check"):
        migpool.Layout.of(partitions=2, min_memory="40GB").resolve(est)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        migpool.Layout.of(partitions=2, min_memory="30GB").resolve(catalog.lookup("H100"))  # read from hardware
        migpool.Layout.of(partitions=2).resolve(est)  # no memory asked: no estimate involved


def test_cli_notes_an_estimate_once():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "migpool", "catalog"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.count("note:") == 1 and "migpool catalog check" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "migpool",
            "plan",
            "--partitions",
            "2",
            "--min-memory",
            "40GB",
            "--simulate",
            "H100-NVL-94GB:2",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stderr.count("note:") == 1 and "H100-NVL-94GB" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "migpool", "profiles", "--simulate", "H100"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "note:" not in r.stderr


def test_a_model_hashes_as_its_fields_and_its_kept_hash_stays_out_of_pickles():
    """Models and profiles keep their hash (the planner's memo hashes them on every call); a string's hash differs
    from one process to the next, so the kept one is never pickled."""
    import copy
    import dataclasses
    import pickle

    m = catalog.lookup("A100-80GB")
    twin = dataclasses.replace(m)  # equal, not the same object
    assert twin is not m and twin == m and hash(twin) == hash(m)
    assert hash(dataclasses.replace(m, sms=m.sms + 1)) != hash(m)
    p = m.profiles[0]
    hash(p)
    assert "_hash" in p.__dict__ and "_hash" in m.__dict__  # kept
    for back in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), pickle.loads(pickle.dumps(p))):
        assert "_hash" not in back.__dict__ and back == (m if isinstance(back, type(m)) else p)
