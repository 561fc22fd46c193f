"""The cluster configurations under deploy/: Ray's own validation of the `ray up` configs, the KubeRay CRD's schema
for the RayCluster manifest, and the MIG layout each makes at boot, planned by migpool on the GPU it names."""

import copy
import gzip
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RAY_CONFIGS = {"aws": "A100-40GB", "gcp": "A100-40GB", "azure": "A100-80GB"}  # the GPU each config's nodes carry
SCHEMA = Path(__file__).parents[1] / "fixtures" / "kuberay" / "raycluster-v1.schema.json.gz"


def _apply_argv(command: str) -> list[str]:
    """`sudo "$(command -v migpool)" apply 3g.20gb ...` -> the migpool arguments."""
    words = shlex.split(command)
    return words[words.index("apply") :]


def _plans(argv: list[str], gpu: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "migpool.cli.commands", *argv, "--dry-run", "--simulate", gpu],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("name", sorted(RAY_CONFIGS))
def test_ray_up_configs_pass_rays_own_validation(name):
    pytest.importorskip("ray")
    from ray.autoscaler._private.util import prepare_config, validate_config  # Ray's `ray up` checks

    config = yaml.safe_load((ROOT / "deploy" / "ray" / f"{name}.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    broken = copy.deepcopy(config)
    broken["worker_start_ray_commands"].append({'ray start --resources=\'{"mig"': "1}'"})  # YAML's trap
    with pytest.raises(Exception, match="is not of type 'string'"):
        validate_config(prepare_config(broken))
    gpu_nodes = [t for t in config["available_node_types"].values() if t["resources"].get("mig")]
    assert gpu_nodes, "a node type offers the resource the pool selects nodes by"
    applies = [c for c in config["worker_setup_commands"] if " apply " in c]
    assert len(applies) == 1 and any("install-service" in c for c in config["worker_setup_commands"])
    assert "create" in _plans(_apply_argv(applies[0]), RAY_CONFIGS[name])  # a layout that fits that GPU


def test_kuberay_manifest_matches_the_raycluster_crd_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    manifest = yaml.safe_load((ROOT / "deploy" / "kuberay" / "raycluster.yaml").read_text())
    jsonschema.validate(manifest, schema)
    broken = copy.deepcopy(manifest)
    broken["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    init = manifest["spec"]["workerGroupSpecs"][0]["template"]["spec"]["initContainers"][0]
    assert init["securityContext"]["privileged"] is True  # MIG changes need root on the node
    assert "create" in _plans(_apply_argv(init["args"][0].split("&&")[-1]), "A100-40GB")
