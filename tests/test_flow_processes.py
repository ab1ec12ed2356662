"""``kairos flow run`` runs the feature flow and, beside it, the learning flow as a process of its
own: the learners are not in the feature flow, and the learning process never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from flows.dataflow import build_flow, build_learning_flow
from kairos.config import Settings

ROOT = Path(__file__).resolve().parents[1]
LEARNER_STEPS = {"bandit_learner", "user_learners", "market_model", "attribution"}


def step_ids(flow) -> set[str]:
    ids: set[str] = set()
    pending = list(flow.substeps)
    while pending:
        step = pending.pop()
        ids.add(step.step_id.rsplit(".", 1)[-1])
        pending.extend(step.substeps)
    return ids


def test_the_feature_flow_holds_no_learner_and_the_learning_flow_holds_them_all(tmp_path):
    settings = Settings(home=tmp_path, feast_project="two_flows", learners=True)
    features, learning = step_ids(build_flow(settings)), step_ids(build_learning_flow(settings))
    assert not features & LEARNER_STEPS
    assert {"online_features", "offline_features", "catalog", "deadletters"} <= features
    assert learning >= LEARNER_STEPS
    assert "deadletters" not in learning  # the feature flow records them, once


def learning_children(parent: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "flows.learning_process" in " ".join(c.cmdline())]


def test_the_learning_process_runs_beside_the_flow_and_dies_with_it(tmp_path):
    env = {**os.environ, "KAIROS_HOME": str(tmp_path), "KAIROS_FEAST_PROJECT": "two_procs", "KAIROS_LEARNERS": "1",
           "KAIROS_PROFILE": "local"}
    flow = subprocess.Popen([sys.executable, "-m", "kairos.cli", "flow", "run", "--follow", "--progress", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            assert flow.poll() is None, flow.stderr.read()[-3000:] if flow.stderr else ""
            children = learning_children(flow.pid)
            time.sleep(0.2)
        assert len(children) == 1, "no learning process beside the feature flow"
        learner = children[0]
        assert learner.nice() > psutil.Process().nice()  # features first when they share the CPU
        flow.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
        flow.wait(timeout=30)
        gone, alive = psutil.wait_procs([learner], timeout=10)
        assert not alive, "the learning process outlived its parent"
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
