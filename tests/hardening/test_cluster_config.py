"""ray_cluster.yaml is a valid Ray cluster-launcher config (Ray's own preparation and schema validation), with a
CPU head, an autoscaling GPU group, the project installed by its setup commands, and no port open to the world."""

from __future__ import annotations

import copy
import re

import pytest
import tomllib
import yaml

from tests.conftest import REPO

CLUSTER_YAML = REPO / "ray_cluster.yaml"
CLOSED_PORTS = {6379, 8076, 8265, 10001, 52365}  # GCS, object manager, dashboard/jobs, client, dashboard agent


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = prepare_config(copy.deepcopy(raw))  # merges Ray's AWS defaults, as `ray up` does
    validate_config(cfg)  # Ray's JSON schema + its own consistency checks
    return cfg


def test_ray_accepts_the_config(prepared, raw):
    assert prepared["head_node_type"] == raw["head_node_type"]
    assert set(prepared["available_node_types"]) == set(raw["available_node_types"])
    # our commands are the ones used, not Ray's defaults (which bind the dashboard to 0.0.0.0)
    assert prepared["head_start_ray_commands"] == raw["head_start_ray_commands"]
    assert prepared["worker_start_ray_commands"] == raw["worker_start_ray_commands"]


def test_cpu_head_and_autoscaling_gpu_workers(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    assert not re.match(r"^(g|p)\d", head["node_config"]["InstanceType"])
    gpu = [t for name, t in types.items() if name != prepared["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu, "a GPU worker group"
    for t in gpu:
        assert t["min_workers"] == 0 and t["max_workers"] >= 1
        assert re.match(r"^(g|p)\d", t["node_config"]["InstanceType"])
    assert prepared["max_workers"] >= sum(t["max_workers"] for t in gpu)


def test_setup_installs_this_project_with_pinned_torch(prepared):
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in pins if d.startswith("torch=="))
    ray_pin = next(d for d in pins if d.startswith("ray["))
    mounts = prepared["file_mounts"]
    project = next(remote for remote, local in mounts.items() if local.rstrip("/") in (".", "./"))
    for kind in ("head_setup_commands", "worker_setup_commands"):
        cmds = "\n".join(prepared[kind])  # prepare_config prepends setup_commands
        assert f"pip install -q -e {project}" in cmds
        assert f'"{torch_pin}"' in cmds
    # the images carry the pinned Ray, so the project install does not replace it
    version = ray_pin.split("==")[1]
    assert f"rayproject/ray:{version}-" in prepared["docker"]["head_image"]
    assert f"rayproject/ray:{version}-" in prepared["docker"]["worker_image"]
    assert "-gpu" in prepared["docker"]["worker_image"]


def test_file_mounts_for_configs_and_models(prepared):
    locals_ = {local.rstrip("/") for local in prepared["file_mounts"].values()}
    assert {"./configs", "./models"} <= locals_
    assert (REPO / "configs").is_dir() and (REPO / "models").is_dir()


def test_dashboard_and_job_ports_are_never_open_to_the_world(prepared, raw):
    text = CLUSTER_YAML.read_text()
    commands = prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
    assert "0.0.0.0" not in "\n".join(commands)
    assert not re.search(r"^[^#]*0\.0\.0\.0", text, re.M)
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--ray-client-server-port" not in head_start
    for rule in prepared["provider"].get("security_group", {}).get("IpPermissions", []):
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        assert not ports & CLOSED_PORTS, rule
        assert rule.get("IpProtocol") != "-1" or not rule.get("IpRanges"), rule
    for _name, t in prepared["available_node_types"].items():
        assert "SecurityGroupIds" not in t["node_config"], "use the provider group, whose rules are checked here"


def test_token_auth_on_every_node(prepared):
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in prepared[kind] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), kind
    assert any(remote.endswith("/.ray/auth_token") for remote in prepared["file_mounts"])


def test_the_validation_used_here_does_reject_a_broken_config(raw):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["node_confg"] = broken["available_node_types"]["gpu_worker"].pop(
        "node_config")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
