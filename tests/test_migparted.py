import pytest

import migpool
from migpool import migparted

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
    ml = migparted.machine_layout(migparted.loads(CONFIG, "mixed"), b.gpus())
    migpool.apply(ml, b)
    assert [g.mig_current for g in b.gpus()] == [True, False]
    assert migpool.diff(ml, b) == []
    ml = migparted.machine_layout(migparted.loads(CONFIG, "all-3g.40gb"), b.gpus())
    migpool.apply(ml, b)
    assert [len(b.mig_devices(i)) for i in (0, 1)] == [2, 2]


def test_device_filter_selects_by_pci_device_id(sim):
    b = sim("A100-80GB,H100-80GB")
    ml = migparted.machine_layout(migparted.loads(CONFIG, "h100-only"), b.gpus())
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
    ml = migparted.machine_layout(migparted.loads(CONFIG, "mixed"), b.gpus())
    text = migparted.dump(
        "mine",
        [(0, migpool.Layout.of({"4g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1})), (1, migpool.Layout(mig_enabled=False))],
    )
    back = migparted.machine_layout(migparted.loads(text, "mine"), b.gpus())
    assert back.for_gpu(0).counts == ml.for_gpu(0).counts and back.for_gpu(1).mig_enabled is False
