"""`migpool export --k8s` against what NVIDIA's Kubernetes projects define (tests/fixtures/k8s-device-plugin/NOTICE):
the device plugin's resources per MIG strategy, GPU feature discovery's labels (its own expected-output files and
its unit tests' values), and a mig-manager ConfigMap that mig-parted's semantics read back as the same layout.
Nothing here ran against a Kubernetes cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from migpool import SimulatedBackend
from migpool.cli import commands as cli
from migpool.integrations import kubernetes, migparted
from migpool.mig.layout import Layout

FIXTURES = Path(__file__).parents[1] / "fixtures" / "k8s-device-plugin"


def _expected(strategy: str) -> list[re.Pattern[str]]:
    """GFD's expected MIG labels (its e2e test greps each pattern), those about MIG resources and the strategy."""
    lines = (FIXTURES / f"expected-output-mig-{strategy}.txt").read_text().splitlines()
    return [re.compile(x) for x in lines if re.match(r"nvidia\\\.com\\/(mig|gpu)", x)]


def _check_against_gfd(labels: dict[str, str], strategy: str, keys: str) -> None:
    patterns = [p for p in _expected(strategy) if re.match(keys, p.pattern.replace("\\", ""))]
    lines = [f"{k}={v}" for k, v in labels.items() if re.match(keys, k)]
    assert lines and patterns
    for line in lines:  # everything we label for these resources is a label GFD writes
        assert any(p.match(line) for p in patterns), line
    for p in patterns:  # and every label GFD writes for them is there
        assert any(p.match(line) for line in lines), p.pattern


def test_mixed_strategy_resources_and_labels_are_gfds():
    b = SimulatedBackend("H100-80GB:2")
    per_gpu = [(0, Layout.of({"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2})), (1, Layout.of({"7g.80gb": 1}))]
    seen = kubernetes.view(b, per_gpu)
    assert seen.mixed == {
        "nvidia.com/mig-3g.40gb": 1,
        "nvidia.com/mig-2g.20gb": 1,
        "nvidia.com/mig-1g.10gb": 2,
        "nvidia.com/mig-7g.80gb": 1,
    }
    labels = seen.labels["mixed"]
    _check_against_gfd(labels, "mixed", r"nvidia.com/mig-")
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    model = b.model(0)
    one = model.device("1g.10gb")
    assert labels["nvidia.com/mig-1g.10gb.product"] == "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"
    assert labels["nvidia.com/mig-1g.10gb.count"] == "2"
    assert labels["nvidia.com/mig-1g.10gb.memory"] == str(one.memory_mib)
    assert labels["nvidia.com/mig-1g.10gb.multiprocessors"] == str(one.sms)
    assert labels["nvidia.com/mig-3g.40gb.slices.gi"] == "3" and labels["nvidia.com/mig-3g.40gb.slices.ci"] == "3"
    assert labels["nvidia.com/mig-7g.80gb.engines.ofa"] == str(model.device("7g.80gb").gi.media["ofa"])
    assert seen.single is None and "4 names" in seen.single_reason
    assert seen.labels["single"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-MIG-INVALID"


def test_single_strategy_is_gfds_for_one_profile_everywhere():
    b = SimulatedBackend("H100-80GB:2")
    seen = kubernetes.view(b, [(0, Layout.of({"1g.10gb": 7})), (1, Layout.of({"1g.10gb": 3}))])
    assert seen.single == {"nvidia.com/gpu": 10} and seen.mixed == {"nvidia.com/mig-1g.10gb": 10}
    labels = seen.labels["single"]
    _check_against_gfd(labels, "single", r"nvidia.com/gpu\.(product|count|replicas|multiprocessors|slices|engines)")
    # internal/lm/mig-strategy_test.go's "single mig-enabled device returns mig labels", with this GPU's values
    d = b.model(0).device("1g.10gb")
    assert {k: v for k, v in labels.items() if not k.startswith("nvidia.com/gpu.engines")} == {
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/gpu.family": "hopper",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
        "nvidia.com/gpu.count": "10",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.memory": str(d.memory_mib),
        "nvidia.com/gpu.multiprocessors": str(d.sms),
        "nvidia.com/gpu.slices.gi": "1",
        "nvidia.com/gpu.slices.ci": "1",
    }


def test_single_strategy_refusals_are_labelled_mig_invalid():
    b = SimulatedBackend("A100-80GB:2")
    cases = {
        "have MIG enabled but no MIG devices": [(0, Layout.of({"7g.80gb": 1})), (1, Layout(mig_enabled=True))],
        "GPU(s) 1 have MIG disabled": [(0, Layout.of({"7g.80gb": 1})), (1, Layout(mig_enabled=False))],
        "2 names": [(0, Layout.of({"3g.40gb": 2})), (1, Layout.of({"7g.80gb": 1}))],
    }
    for why, per_gpu in cases.items():
        seen = kubernetes.view(b, per_gpu)
        assert seen.single is None and why in seen.single_reason
        labels = seen.labels["single"]
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-INVALID"
        assert (labels["nvidia.com/gpu.count"], labels["nvidia.com/gpu.replicas"]) == ("0", "0")
        assert (labels["nvidia.com/gpu.memory"], labels["nvidia.com/gpu.sharing-strategy"]) == ("0", "")
    whole = kubernetes.view(b, [(0, Layout(mig_enabled=False)), (1, Layout(mig_enabled=False))])
    assert whole.single == whole.mixed == {"nvidia.com/gpu": 2}
    assert whole.labels["single"]["nvidia.com/gpu.count"] == "2"


def test_media_extension_and_compute_instance_devices_get_their_own_resources():
    # go-nvlib's profile names with '+' made '.': a +me device is not its base profile's resource
    b = SimulatedBackend("A100-80GB")
    seen = kubernetes.view(b, [(0, Layout.of({"1g.10gb+me": 1, "1g.10gb": 2, "1c.3g.40gb": 3}))])
    assert seen.mixed == {"nvidia.com/mig-1g.10gb.me": 1, "nvidia.com/mig-1g.10gb": 2, "nvidia.com/mig-1c.3g.40gb": 3}
    labels = seen.labels["mixed"]
    assert labels["nvidia.com/mig-1g.10gb.me.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb.me"
    assert (labels["nvidia.com/mig-1c.3g.40gb.slices.gi"], labels["nvidia.com/mig-1c.3g.40gb.slices.ci"]) == ("3", "1")
    assert any("engines" in n for n in seen.notes)  # A100's engine counts are not in the catalog: said, not guessed


def test_export_k8s_gives_a_mig_manager_configmap_that_applies_this_layout():
    runner = CliRunner()
    env = {"MIGPOOL_SIMULATE": "A100-80GB:2", "COLUMNS": "80"}
    assert runner.invoke(cli.main, ["apply", "3g.40gb:1,1g.10gb:4", "--gpu", "0"], env=env).exit_code == 0
    out = json.loads(runner.invoke(cli.main, ["export", "--k8s", "--json", "-c", "train"], env=env).output)
    cm = yaml.safe_load(out["configmap"])
    assert (cm["apiVersion"], cm["kind"], sorted(cm["data"])) == ("v1", "ConfigMap", ["config.yaml"])
    assert out["node_label"] == {"nvidia.com/mig.config": "train"}
    b = SimulatedBackend("A100-80GB:2")
    wanted = migparted.machine_layout(migparted.loads(cm["data"]["config.yaml"], "train"), b)
    assert dict(wanted.for_gpu(0).counts) == {"3g.40gb": 1, "1g.10gb": 4}
    assert not wanted.for_gpu(1).mig_enabled
    text = runner.invoke(cli.main, ["export", "--k8s", "-c", "train", "--node-name", "gpu7"], env=env).output
    assert "kubectl label node gpu7 nvidia.com/mig.config=train --overwrite" in text
    assert "nvidia.com/mig-1g.10gb: 4" in text and "nvidia.com/gpu: 1" in text
    assert all(len(line) <= 80 for line in text.splitlines() if line.startswith("#"))
