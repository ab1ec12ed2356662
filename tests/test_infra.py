"""infra/: the compose file and Kubernetes manifests parse and hang together; run-flow.sh starts
the flow as a Bytewax cluster with its share of the recovery partitions.

No Docker engine or Kubernetes runs on the machines Kairos is built on, so the manifests are checked
for what can be checked without them: YAML syntax, names and selectors that must agree, settings
that exist. run-flow.sh is run for real (it only needs Python and Bytewax), as a two-process cluster.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from kairos.config import Settings
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
RUN_FLOW = INFRA / "run-flow.sh"
YAML_FILES = sorted([*INFRA.glob("*.yml"), *INFRA.glob("*.yaml"), *(INFRA / "k8s").glob("*.yaml")])
#: Settings the MongoDB adapter and the Redis Cluster need from kairos/config.py (see infra/README.md).
PENDING_SETTINGS = {"KAIROS_EVENT_STORE", "KAIROS_MONGO_URL", "KAIROS_MONGO_DB", "KAIROS_REDIS_TYPE"}


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict]:
    return [doc for path in sorted((INFRA / "k8s").glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in load_all(path)]


def known_variables() -> set[str]:
    settings = {f"KAIROS_{f.name.upper()}" for f in fields(Settings)}
    script = set(re.findall(r"\bKAIROS_[A-Z_]+", RUN_FLOW.read_text()))
    return settings | script | PENDING_SETTINGS


def test_every_yaml_file_parses():
    assert len(YAML_FILES) >= 7
    for path in YAML_FILES:
        docs = load_all(path)
        assert docs, path
        assert all(isinstance(doc, dict) for doc in docs), path


def test_compose_runs_a_replica_set_redis_the_flow_and_the_api():
    compose = load_all(INFRA / "docker-compose.yml")[0]
    services = compose["services"]
    assert set(services) == {"mongo", "mongo-init", "redis", "flow", "learners", "api"}
    assert services["mongo"]["image"] == "mongo:7" and "--replSet" in services["mongo"]["command"]
    assert "rs.initiate" in " ".join(services["mongo-init"]["command"])
    for name in ("flow", "learners", "api"):
        env = services[name]["environment"]
        assert env["KAIROS_EVENT_STORE"] == "mongo" and env["KAIROS_PROFILE"] == "redis"
        assert env["KAIROS_MONGO_URL"].startswith("mongodb://mongo:27017") and "replicaSet=rs0" in env["KAIROS_MONGO_URL"]
        assert env["KAIROS_REDIS_URL"] == "redis:6379"
        assert set(env) <= known_variables(), set(env) - known_variables()
        assert services[name]["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
    assert services["flow"]["command"] == ["/app/infra/run-flow.sh"]
    # The learners run as a flow of their own, with their own recovery volume.
    learners = services["learners"]
    assert learners["command"] == ["/app/infra/run-flow.sh"]
    assert learners["environment"]["KAIROS_FLOW_IMPORT"] == "flows.dataflow:learning_flow_from_env()"
    assert "KAIROS_FLOW_IMPORT" not in services["flow"]["environment"]  # the feature flow
    assert {v.split(":")[0] for v in learners["volumes"]} & {v.split(":")[0] for v in services["flow"]["volumes"]} \
        == {"kairos-home"}
    assert services["flow"]["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}
    assert services["api"]["command"][:3] == ["uvicorn", "serving.app:create_app", "--factory"]
    assert (ROOT / services["flow"]["build"]["dockerfile"]).exists()
    assert "COPY infra/run-flow.sh" in (INFRA / "Dockerfile").read_text()


def test_kubernetes_objects_agree_with_each_other():
    objects = k8s_objects()
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    kustomization = load_all(INFRA / "k8s" / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (INFRA / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "kairos", obj["metadata"]["name"]

    # Every workload's pods are found by a Service whose selector matches their labels.
    services = [o for o in objects if o["kind"] == "Service"]
    for kind, name, replicas in (("StatefulSet", "mongo", 3), ("StatefulSet", "redis-cluster", 6),
                                 ("StatefulSet", "kairos-flow", 2), ("StatefulSet", "kairos-learners", 1),
                                 ("Deployment", "kairos-api", 2)):
        workload = by_kind_name[(kind, name)]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert workload["spec"]["replicas"] == replicas
        assert any(s["spec"]["selector"].items() <= labels.items() for s in services), name
        if kind == "StatefulSet":
            service = by_kind_name[("Service", workload["spec"]["serviceName"])]
            assert service["spec"]["clusterIP"] == "None", f"{name} needs a headless service"

    # The Bytewax cluster: as many processes as pods, each with a recovery volume.
    flow = by_kind_name[("StatefulSet", "kairos-flow")]
    container = flow["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["KAIROS_FLOW_PROCESSES"]) == flow["spec"]["replicas"]
    assert int(env["KAIROS_RECOVERY_PARTITIONS"]) >= flow["spec"]["replicas"]
    assert env["KAIROS_FLOW_SERVICE"] == flow["spec"]["serviceName"]
    assert flow["spec"]["podManagementPolicy"] == "Parallel"
    recovery = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert recovery["recovery"] == env["KAIROS_RECOVERY_DIR"]
    assert [t["metadata"]["name"] for t in flow["spec"]["volumeClaimTemplates"]] == ["recovery"]
    assert container["command"] == ["/app/infra/run-flow.sh"]
    learners = by_kind_name[("StatefulSet", "kairos-learners")]["spec"]["template"]["spec"]["containers"][0]
    learners_env = {e["name"]: e.get("value") for e in learners["env"]}
    assert learners_env["KAIROS_FLOW_IMPORT"] == "flows.dataflow:learning_flow_from_env()"
    assert "KAIROS_FLOW_IMPORT" not in env and set(learners_env) <= known_variables()

    config = by_kind_name[("ConfigMap", "kairos-config")]["data"]
    assert set(config) - {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} <= known_variables()
    assert set(env) <= known_variables()
    assert "replicaSet=rs0" in config["KAIROS_MONGO_URL"]
    assert all(f"mongo-{i}.mongo:27017" in config["KAIROS_MONGO_URL"] for i in range(3))

    # Init jobs: rs.initiate with every member; the Redis cluster with one replica per primary.
    mongo_init = " ".join(by_kind_name[("Job", "mongo-init")]["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "rs.initiate" in mongo_init and all(f"mongo-{i}.mongo:27017" in mongo_init for i in range(3))
    redis_create = " ".join(
        by_kind_name[("Job", "redis-cluster-create")]["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--cluster create" in redis_create and "--cluster-replicas 1" in redis_create

    hpa = by_kind_name[("HorizontalPodAutoscaler", "kairos-api")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kairos-api"}
    api = by_kind_name[("Deployment", "kairos-api")]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["resources"]["requests"]["cpu"]  # the HPA's CPU target needs a request


# --------------------------------------------------------------------------------------------
# run-flow.sh
# --------------------------------------------------------------------------------------------


def run_flow_script(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    # `python` on the PATH is this interpreter, as in the image.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(["sh", str(RUN_FLOW)], cwd=ROOT, env={**os.environ, "PATH": path, **env},
                          capture_output=True, text=True, timeout=timeout)


def partitions_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_run_flow_keeps_this_process_share_of_partitions_and_builds_the_cluster_command(tmp_path):
    recovery = tmp_path / "recovery"
    env = {"KAIROS_FLOW_DRY_RUN": "1", "KAIROS_RECOVERY_DIR": str(recovery), "KAIROS_RECOVERY_PARTITIONS": "6",
           "KAIROS_FLOW_PROCESSES": "3", "KAIROS_FLOW_PROCESS_ID": "1", "KAIROS_FLOW_SERVICE": "kairos-flow",
           "KAIROS_FLOW_STATEFULSET": "kairos-flow"}
    done = run_flow_script(env)
    assert done.returncode == 0, done.stderr
    assert partitions_in(recovery) == ["part-1.sqlite3", "part-4.sqlite3"]
    addresses = ";".join(f"kairos-flow-{i}.kairos-flow:2101" for i in range(3))
    assert done.stdout.strip() == (f"python -m bytewax.run flows.dataflow:flow_from_env() -r {recovery} -s 10 -b 0 "
                                   f"-i 1 -a {addresses}")
    # A restart keeps what is there (the snapshots live in those files).
    (recovery / "part-1.sqlite3").write_bytes(b"snapshots")
    assert run_flow_script(env).returncode == 0
    assert (recovery / "part-1.sqlite3").read_bytes() == b"snapshots"

    single = run_flow_script({"KAIROS_FLOW_DRY_RUN": "1", "KAIROS_RECOVERY_DIR": str(tmp_path / "one")})
    assert single.stdout.strip().endswith("-s 10 -b 0") and partitions_in(tmp_path / "one") == [
        f"part-{i}.sqlite3" for i in range(4)]


def test_run_flow_refuses_impossible_layouts(tmp_path):
    base = {"KAIROS_FLOW_DRY_RUN": "1", "KAIROS_FLOW_PROCESSES": "2", "KAIROS_FLOW_SERVICE": "kairos-flow"}
    wrong_id = run_flow_script({**base, "KAIROS_FLOW_PROCESS_ID": "2", "KAIROS_RECOVERY_DIR": str(tmp_path / "a")})
    assert wrong_id.returncode == 2 and "not below KAIROS_FLOW_PROCESSES=2" in wrong_id.stderr
    no_id = run_flow_script({**base, "KAIROS_FLOW_PROCESS_ID": "x", "KAIROS_RECOVERY_DIR": str(tmp_path / "b")})
    assert no_id.returncode == 2 and "cannot tell the process id" in no_id.stderr
    too_few = run_flow_script({**base, "KAIROS_FLOW_PROCESS_ID": "1", "KAIROS_RECOVERY_PARTITIONS": "1",
                               "KAIROS_RECOVERY_DIR": str(tmp_path / "c")})
    assert too_few.returncode == 2 and "got no recovery partition" in too_few.stderr
    assert not list((tmp_path / "c").iterdir())  # nothing half-made left behind


def tiny_flow():
    """A small stateful flow for the cluster test (the Kairos flow's own multi-process run is
    tests/test_scale_out.py): running sums of 0..39 by residue, printed."""
    import bytewax.operators as op
    from bytewax.connectors.stdio import StdOutSink
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource

    flow = Dataflow("infra_tiny")
    numbers = op.key_on("by_residue", op.input("numbers", flow, TestingSource(range(40))), lambda n: str(n % 4))
    sums = op.stateful_map("sum", numbers, lambda total, n: ((total or 0) + n, (total or 0) + n))
    op.output("print", sums, StdOutSink())
    return flow


def run_cluster(tmp_path: Path) -> list[str]:
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    procs = []
    for process_id in range(2):
        env = {**os.environ, "PATH": path, "KAIROS_FLOW_PROCESSES": "2", "KAIROS_FLOW_PROCESS_ID": str(process_id),
               "KAIROS_FLOW_ADDRESSES": addresses, "KAIROS_RECOVERY_DIR": str(tmp_path / f"recovery-{process_id}"),
               "KAIROS_SNAPSHOT_INTERVAL_S": "1", "KAIROS_FLOW_IMPORT": "tests.test_infra:tiny_flow()"}
        procs.append(subprocess.Popen(["sh", str(RUN_FLOW)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        lines += [line for line in out.splitlines() if line.startswith("(")]  # not Bytewax's "retrying" notes
    return lines


def test_run_flow_runs_a_two_process_cluster_with_partitions_spread_over_their_volumes(tmp_path):
    """Two real Bytewax processes, each with its own recovery folder holding half the partitions."""
    first = run_cluster(tmp_path)
    assert len(first) == 40
    for residue in range(4):  # each key's last sum is all its numbers: state stayed with its key
        assert str((str(residue), sum(range(residue, 40, 4)))) in first
    shares = [partitions_in(tmp_path / f"recovery-{i}") for i in range(2)]
    assert shares == [["part-0.sqlite3", "part-2.sqlite3"], ["part-1.sqlite3", "part-3.sqlite3"]]
    snapshots = 0
    for i, share in enumerate(shares):
        for name in share:
            with sqlite3.connect(tmp_path / f"recovery-{i}" / name) as db:
                snapshots += db.execute("SELECT COUNT(*) FROM snaps").fetchone()[0]
    assert snapshots > 0
    # Restarted, the cluster finds its state across both folders and resumes after the input's end.
    assert run_cluster(tmp_path) == []


@pytest.mark.parametrize("path", ["Dockerfile", "Dockerfile.dockerignore", "README.md", "run-flow.sh"])
def test_infra_files_exist(path):
    assert (INFRA / path).is_file()
