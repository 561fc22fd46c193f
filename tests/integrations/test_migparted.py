from pathlib import Path

import pytest

import migpool
from migpool import Layout
from migpool.backend.base import GpuInfo
from migpool.integrations import migparted
from migpool.mig import catalog

CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-3g.40gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "3g.40gb": 2
  mixed:
    - devices: [0]
      mig-enabled: true
      mig-devices:
        "4g.40gb": 1
        "2g.20gb": 1
        "1g.10gb": 1
    - devices: [1]
      mig-enabled: false
  h100-only:
    - device-filter: ["0x233010DE"]
      devices: all
      mig-enabled: true
      mig-devices:
        "1g.20gb": 4
"""


def test_reads_mig_parted_configs_and_applies_them(sim):
    b = sim("A100-80GB:2")
    ml = migparted.machine_layout(migparted.loads(CONFIG, "mixed"), b)
    migpool.apply(ml, b)
    assert [g.mig_current for g in b.gpus()] == [True, False]
    assert migpool.diff(ml, b) == []
    ml = migparted.machine_layout(migparted.loads(CONFIG, "all-3g.40gb"), b)
    migpool.apply(ml, b)
    assert [len(b.mig_devices(i)) for i in (0, 1)] == [2, 2]


def test_device_filter_selects_by_pci_device_id(sim):
    b = sim("A100-80GB,H100-80GB")
    ml = migparted.machine_layout(migparted.loads(CONFIG, "h100-only"), b)
    assert ml.for_gpu(0) is None and ml.for_gpu(1).counts == (("1g.20gb", 4),)


@pytest.mark.parametrize(
    "text,name,msg",
    [
        (
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devise: {}\n",
            "a",
            "line 6: unknown key 'mig-devise'",
        ),
        (
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: yes please\n",
            "a",
            "line 5: mig-enabled must be true or false",
        ),
        (
            "version: v1\nmig-configs:\n  a:\n    - devices: some\n      mig-enabled: true\n",
            "a",
            "line 4: devices must be 'all' or a list",
        ),
        (
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n"
            "      mig-devices: {'3g.40gb': -1}\n",
            "a",
            "line 6: count for '3g.40gb' must be a non-negative integer",
        ),
        ("version: v2\nmig-configs: {}\n", None, "line 1: unsupported version"),
        ("version: v1\nmigconfigs: {}\n", None, "line 2: unknown key 'migconfigs'"),
        (CONFIG, "nope", "has no config 'nope'; configs: all-disabled, all-3g.40gb, mixed, h100-only"),
        (CONFIG, None, "holds 4 configs; choose one with -c"),
    ],
)
def test_bad_configs_name_the_line(text, name, msg):
    with pytest.raises(migpool.ConfigError) as e:
        migparted.loads(text, name, "c.yaml")
    assert msg in str(e.value)


def test_export_round_trips(sim):
    b = sim("A100-80GB:2")
    ml = migparted.machine_layout(migparted.loads(CONFIG, "mixed"), b)
    text = migparted.dump(
        "mine",
        [(0, migpool.Layout.of({"4g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1})), (1, migpool.Layout(mig_enabled=False))],
    )
    back = migparted.machine_layout(migparted.loads(text, "mine"), b)
    assert dict(back.for_gpu(0).counts) == dict(ml.for_gpu(0).counts) and back.for_gpu(1).mig_enabled is False


# --- mig-parted's own semantics (tests/fixtures/mig-parted/NOTICE says where each rule comes from) ---
FIXTURES = Path(__file__).parents[1] / "fixtures" / "mig-parted"
DEFAULT = (FIXTURES / "config-default.yaml").read_text()
HEAD = "version: v1\nmig-configs:\n  c:\n"
# A 4-GPU machine: A100-40GB (with a subsystem id), A100-80GB, H100-80GB, H200.
PCI = [0x20B010DE, 0x20B210DE, 0x233010DE, 0x233510DE]
MACHINE = [
    GpuInfo(i, f"GPU-{i}", "x", 1, True, False, False, pci, 0x134F10DE if i == 0 else None) for i, pci in enumerate(PCI)
]


def _one(body: str) -> str:
    return HEAD + "    - " + body.replace("\n", "\n      ") + "\n"


ALL = [[0, 1, 2, 3]]
# (the entry, the GPUs of MACHINE each entry selects, or None where mig-parted refuses the file)
CASES = {
    "enabled, mig-devices missing": ("devices: all\nmig-enabled: true", None),
    "enabled, mig-devices null": ("devices: all\nmig-enabled: true\nmig-devices:", None),
    "enabled, mig-devices {} (its all-enabled config)": ("devices: all\nmig-enabled: true\nmig-devices: {}", ALL),
    "enabled, all counts 0": ("devices: all\nmig-enabled: true\nmig-devices: {'1g.5gb': 0}", None),
    "enabled, some counts 0": ("devices: all\nmig-enabled: true\nmig-devices: {'1g.5gb': 0, '3g.20gb': 1}", ALL),
    "disabled with devices": ("devices: all\nmig-enabled: false\nmig-devices: {'1g.5gb': 1}", None),
    "disabled, mig-devices null": ("devices: all\nmig-enabled: false\nmig-devices:", ALL),
    "missing devices": ("mig-enabled: false", None),
    "missing mig-enabled": ("devices: all", None),
    "mig-enabled a string": ("devices: all\nmig-enabled: 'true'", None),
    "mig-enabled yes (YAML 1.1)": ("devices: all\nmig-enabled: yes\nmig-devices: {'3g.20gb': 1}", ALL),
    "unknown key": ("devices: all\nmig-enabled: false\nfoo: 1", None),
    "devices: some": ("devices: some\nmig-enabled: false", None),
    "devices: ALL": ("devices: ALL\nmig-enabled: false", None),
    "devices a map": ("devices: {}\nmig-enabled: false", None),
    "devices [-1, 0]": ("devices: [-1, 0]\nmig-enabled: false", [[0]]),
    "devices with a string": ("devices: [0, '1']\nmig-enabled: false", None),
    "devices []": ("devices: []\nmig-enabled: false", [[]]),
    "a key written twice": ("devices: [0]\ndevices: all\nmig-enabled: false", ALL),
    "device-filter unquoted hex (a number)": ("device-filter: 0x20B010DE\ndevices: all\nmig-enabled: false", None),
    "device-filter quoted": ("device-filter: '0x20B010DE'\ndevices: all\nmig-enabled: false", [[0]]),
    "device-filter lower case": ("device-filter: '0x20b010de'\ndevices: all\nmig-enabled: false", [[0]]),
    "device-filter decimal": ("device-filter: '548409566'\ndevices: all\nmig-enabled: false", [[0]]),
    "device-filter list": ("device-filter: ['0x20B010DE', '0x233010DE']\ndevices: all\nmig-enabled: false", [[0, 2]]),
    "device-filter list of numbers": ("device-filter: [0x20B010DE]\ndevices: all\nmig-enabled: false", None),
    "device-filter with subsystem": ("device-filter: '0x20B010DE:0x134F10DE'\ndevices: all\nmig-enabled: false", [[0]]),
    "device-filter, other subsystem": (
        "device-filter: '0x20B210DE:0x134F10DE'\ndevices: all\nmig-enabled: false",
        [[]],
    ),
    "device-filter a model name": ("device-filter: 'A100-SXM4-40GB'\ndevices: all\nmig-enabled: false", [[]]),
    "device-filter empty": ("device-filter: ''\ndevices: all\nmig-enabled: false", ALL),
    "device-filter null": ("device-filter:\ndevices: all\nmig-enabled: false", ALL),
    "device-filter and devices": (
        "device-filter: ['0x20B210DE','0x233510DE']\ndevices: [1, 2]\nmig-enabled: false",
        [[1]],
    ),
    "count -1": ("devices: all\nmig-enabled: true\nmig-devices: {'1g.5gb': -1}", None),
    "count '2'": ("devices: all\nmig-enabled: true\nmig-devices: {'1g.5gb': '2'}", None),
    "count 2.5": ("devices: all\nmig-enabled: true\nmig-devices: {'1g.5gb': 2.5}", None),
    "mig-devices a list": ("devices: all\nmig-enabled: true\nmig-devices: ['1g.5gb']", None),
}
for _p, _ok in [
    ("3G.20GB", False),
    ("MIG 3g.20gb", False),
    ("9", False),
    ("1c.3g.20gb", True),
    ("2c.3g.20gb", True),
    ("1c.7g.40gb", True),
    ("1c.1g.5gb+me", True),
    ("1g.24gb+gfx", True),
    ("1g.24gb-me", True),
    ("1g.24gb+me.all", True),
    ("1g.5gb+ME", True),
    ("1g.5gb+me,me", False),
    ("1g.5gb+me-x", False),
    (" 1g.5gb", False),
    ("1g.5gb+", False),
    ("1g.5gb+.me", False),
    ("1c.2c.3g.20gb", False),
]:
    CASES[f"profile {_p!r}"] = (f"devices: all\nmig-enabled: true\nmig-devices: {{{_p!r}: 1}}", ALL if _ok else None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_mig_parted_refuses_is_refused_and_what_it_accepts_is_accepted(case):
    body, selects = CASES[case]
    if selects is None:
        with pytest.raises(migpool.ConfigError, match=r"^c\.yaml, line \d+: "):
            migparted.loads(_one(body), "c", "c.yaml")
        return
    entries = migparted.loads(_one(body), "c", "c.yaml")
    assert [[g.index for g in MACHINE if e.selects_gpu(g)] for e in entries] == selects


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (HEAD + "    []\n", "has no entry"),
        ("version: v1\nmig-configs: {}\n", "holds no config"),
        ("version: v1\n", "no configs"),
        ("mig-configs:\n  c:\n    - devices: all\n      mig-enabled: false\n", "missing 'version: v1'"),
        ("version: v1\nfoo: 1\nmig-configs:\n  c:\n    - devices: all\n      mig-enabled: false\n", "unknown key"),
    ],
)
def test_files_mig_parted_refuses_whole(text, why):
    with pytest.raises(migpool.ConfigError, match=why):
        migparted.loads(text, None, "c.yaml")


def test_every_config_mig_parted_ships_is_read_and_each_applies_on_the_gpus_it_is_for(sim):
    """Its config-default.yaml on every catalog GPU: where each entry's profiles exist on the GPUs it selects, the
    config applies and asserts; elsewhere it is refused before anything changes, naming the line (mig-parted's own
    apply fails there too, at that GPU)."""
    import yaml

    names = list(yaml.safe_load(DEFAULT)["mig-configs"])
    parsed = {n: migparted.loads(DEFAULT, n, "config-default.yaml") for n in names}
    applied = set()
    for model in catalog.models():
        b = sim(model.key)
        for name, entries in parsed.items():
            missing = [
                p
                for e in entries
                if e.selects_gpu(b.gpus()[0])
                for p, _ in e.layout.counts
                if b.model(0).device_named(p) is None
            ]
            if missing:
                with pytest.raises(
                    migpool.ConfigError, match=r"^config-default\.yaml, line \d+: '.*' is not a profile"
                ):
                    migparted.machine_layout(entries, b)
                continue
            ml = migparted.machine_layout(entries, b)
            if ml.for_gpu(0) is None:
                continue  # no entry is for this GPU
            migpool.apply(ml, b)
            assert migpool.diff(ml, b) == [], (model.key, name)
            applied.add(name)
        migpool.teardown(b, restore=True)
    legacy = {"all-3g.95gb", "all-4g.95gb", "all-7g.189gb"}  # GB200's pre-production names (mig-parted ebab1f77)
    assert set(names) - applied == legacy


def test_assert_fails_for_a_gpu_that_no_entry_covers(sim):
    b = sim("A100-80GB:4")
    text = HEAD + "    - devices: [0, 1]\n      mig-enabled: false\n"
    ml = migparted.machine_layout(migparted.loads(text, "c", "c.yaml"), b)
    assert ml.uncovered == (2, 3)
    assert migpool.diff(ml, b) == [
        f"GPU {i}: no entry of the config selects it (mig-parted's assert fails for it too)" for i in (2, 3)
    ]
    filtered = HEAD + "    - device-filter: '0x233010DE'\n      devices: all\n      mig-enabled: false\n"
    assert migparted.machine_layout(migparted.loads(filtered, "c", "c.yaml"), b).uncovered == (0, 1, 2, 3)


def test_export_merges_as_mig_parteds_export(sim):
    """Its export: one entry per distinct layout, `devices: all` where an entry covers every GPU of its types,
    `device-filter` only where the machine has GPUs of more than one type, and `mig-devices: {}` for MIG off."""
    import yaml

    one_type = yaml.safe_load(
        migparted.dump(
            "current", [(0, Layout.of({"3g.40gb": 2})), (1, Layout(mig_enabled=False))], [0, 1], {0: 1, 1: 1}
        )
    )
    assert one_type == {
        "mig-configs": {
            "current": [
                {"devices": [0], "mig-devices": {"3g.40gb": 2}, "mig-enabled": True},
                {"devices": [1], "mig-devices": {}, "mig-enabled": False},
            ]
        },
        "version": "v1",
    }
    a100, h100 = 0x20B210DE, 0x233010DE
    per_gpu = [(0, Layout.of({"3g.40gb": 2})), (1, Layout.of({"3g.40gb": 2})), (2, Layout(mig_enabled=False))]
    two_types = yaml.safe_load(migparted.dump("current", per_gpu, [0, 1, 2], {0: a100, 1: a100, 2: h100}))
    assert two_types["mig-configs"]["current"] == [
        {"device-filter": "0x20B210DE", "devices": "all", "mig-devices": {"3g.40gb": 2}, "mig-enabled": True},
        {"device-filter": "0x233010DE", "devices": "all", "mig-devices": {}, "mig-enabled": False},
    ]
    same = yaml.safe_load(migparted.dump("current", per_gpu[:2], [0, 1], {0: a100, 1: h100}))
    assert same["mig-configs"]["current"] == [{"devices": "all", "mig-devices": {"3g.40gb": 2}, "mig-enabled": True}]


def test_a_profile_missing_at_apply_time_names_the_file_and_line(tmp_path, monkeypatch):
    from migpool_cli import mp

    f = tmp_path / "c.yaml"
    f.write_text(HEAD + "    - devices: all\n      mig-enabled: true\n      mig-devices:\n        '3g.71gb': 2\n")
    r = mp("apply", "-f", str(f), "--simulate", "A100-80GB")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{f}, line 7: '3g.71gb' is not a profile of GPU 0 (NVIDIA A100-SXM4-80GB)" in r.stderr
    assert "Disabled" in mp("gpus", "--simulate", "A100-80GB").stdout  # nothing changed


def test_compute_instance_profiles_from_a_mig_parted_file_end_to_end(sim):
    b = sim("A100-40GB")
    entry = "    - devices: all\n      mig-enabled: true\n      mig-devices: {%s}\n"
    bad = HEAD + entry % "'1c.3g.20gb': 3, '1c.3g.40gb': 1"  # (an A100-80GB's profile)
    with pytest.raises(migpool.ConfigError, match=r"line 6: '1c.3g.40gb' is not a profile of GPU 0"):
        migparted.machine_layout(migparted.loads(bad, "c", "c.yaml"), b)
    text = HEAD + entry % "'1c.3g.20gb': 4, '2c.3g.20gb': 1, '1c.3g.40gb': 0"  # a count of 0: nothing to make
    ml = migparted.machine_layout(migparted.loads(text, "c", "c.yaml"), b)
    migpool.apply(ml, b)
    assert sorted(d.profile_name for d in b.mig_devices(0)) == ["1c.3g.20gb"] * 4 + ["2c.3g.20gb"]
    assert len(b.gpu_instances(0)) == 2  # packed as mig-parted packs them: [2c, 1c] and [1c, 1c, 1c]
    assert migpool.diff(ml, b) == []
