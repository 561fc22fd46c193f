"""migpool.cli: `apply` lists each new partition (GPU, profile, placement); a newcomer's rough edge, fixed."""

import json

from migpool_cli import mp


def test_apply_lists_each_new_partition_with_gpu_profile_and_placement():
    sim = ["--simulate", "A100-80GB"]
    out = mp("apply", "3g.40gb:1,1g.10gb:2", *sim, check=0, env={"COLUMNS": "80"}).stdout
    rows = [ln.split() for ln in out.splitlines() if "MIG-" in ln]
    assert sorted((r[0], r[1]) for r in rows) == [("0", "1g.10gb"), ("0", "1g.10gb"), ("0", "3g.40gb")]
    assert {r[2] for r in rows if r[1] == "3g.40gb"} <= {"0:4", "4:4"}
    data = json.loads(mp("apply", "2g.20gb:1", *sim, "--json", check=0).stdout)
    assert [p["profile"] for p in data["partitions"]] == ["2g.20gb"] and data["partitions"][0]["uuid"].startswith(
        "MIG-"
    )
