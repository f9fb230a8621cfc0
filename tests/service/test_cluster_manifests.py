"""The KubeRay RayJob and the Slurm template that run a study on Kubernetes and Slurm.

Neither runs here (no Kubernetes, no Slurm): the RayJob is validated against the RayJob
CRD's OpenAPI schema of KubeRay v1.7.0 where ``KUBERAY_CRD`` names that file
(``ray-operator/config/crd/bases/ray.io_rayjobs.yaml`` of the KubeRay repository, which
this project does not ship), and both are checked against what kd-search runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kd_search.study_file import resolve_study_file

ROOT = Path(__file__).resolve().parents[2]
RAYJOB = ROOT / "docker" / "kuberay" / "rayjob.yaml"
SBATCH = ROOT / "docker" / "slurm" / "kd-search.sbatch"


def pinned(package: str) -> str:
    pins = (ROOT / "docker" / "requirements.txt").read_text()
    return re.search(rf"^{package}(?:\[[^\]]*\])?==(\S+)", pins, re.M).group(1)


def test_rayjob_runs_a_shipped_study_on_the_image_and_its_ray():
    job = yaml.safe_load(RAYJOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    command = job["spec"]["entrypoint"].split()
    assert command[:2] == ["kd-search", "launch"] and resolve_study_file(command[2]).is_file()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == pinned("ray")
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0", "num-gpus": "0"}  # trials run on the workers
    for pod in [head["template"], *(group["template"] for group in cluster["workerGroupSpecs"])]:
        container = pod["spec"]["containers"][0]
        assert container["image"].endswith("/kd-search:0.1.0")
        env = {e["name"]: e for e in container["env"]}
        assert "valueFrom" in env["PGPASSWORD"] and "@" in env["KD_SEARCH_STORAGE"]["value"]
        assert ":" not in env["KD_SEARCH_STORAGE"]["value"].split("//")[1].split("@")[0]  # no password in the URL
        assert {"name": "runs", "mountPath": "/runs"} in container["volumeMounts"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_rayjob_validates_against_the_kuberay_crd_schema():
    crd_file = os.environ.get("KUBERAY_CRD")
    if not crd_file:
        pytest.skip("KUBERAY_CRD is not set: the path of ray.io_rayjobs.yaml of KubeRay v1.7.0 "
                    "(ray-operator/config/crd/bases/), which kd-search does not ship")
    import jsonschema

    crd = yaml.safe_load(Path(crd_file).read_text())
    assert crd["spec"]["names"]["kind"] == "RayJob"
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1")
    job = yaml.safe_load(RAYJOB.read_text())
    jsonschema.Draft7Validator(schema).validate(job)
    # The schema is strict enough to catch a misspelt field.
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"] = "num-cpus=0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(job)


def test_slurm_template_is_bash_that_joins_its_own_ray_cluster():
    out = subprocess.run([shutil.which("bash") or "/bin/bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    script = SBATCH.read_text()
    assert "kd-search launch \"$study\" --ray-address \"$head_ip:$port\"" in script
    assert "#SBATCH --gpus-per-task=1" in script and "PGPASSWORD" in script
