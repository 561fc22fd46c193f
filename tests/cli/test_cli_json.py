"""migpool.cli: --json where data is printed (catalog, sim reboot); a newcomer's rough edge, fixed."""

import json

from migpool_cli import mp


def test_catalog_and_sim_reboot_print_json():
    models = json.loads(mp("catalog", "--json", check=0).stdout)
    assert {"A100-80GB", "H200-141GB"} <= {m["key"] for m in models}
    out = json.loads(mp("sim", "reboot", "--simulate", "H100-80GB:2", "--json", check=0).stdout)
    assert out["rebooted"] == "H100-80GB:2" and out["gpu_instances"] == 0
