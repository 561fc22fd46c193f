"""migpool.integrations.migparted: a long list of names in an error is cut; a newcomer's rough edge, fixed."""

import pytest
import yaml
from migpool_cli import mp

import migpool as sky
from migpool.integrations import migparted


def test_a_long_list_of_names_is_cut(tmp_path):
    f = tmp_path / "many.yaml"
    configs = {f"c{k}": [{"devices": "all", "mig-enabled": False}] for k in range(10_000)}
    f.write_text(yaml.safe_dump({"version": "v1", "mig-configs": configs}))
    with pytest.raises(sky.MigpoolError) as e:
        migparted.load(str(f), None)
    assert "… and 9,990 more" in str(e.value) and len(str(e.value)) < 300
    r = mp("apply", "-f", str(f), "--simulate", "A100-80GB")
    assert r.returncode == 2 and len(r.stderr) < 400 and "9,990 more" in r.stderr
