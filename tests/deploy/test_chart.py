"""The Helm chart, with the real Helm engine (the `helm-python-sdk` package embeds it): it
lints clean, renders for the default values and every values file in helm/supernet/ci/,
and every rendered manifest validates against the Kubernetes API schemas
(`kubernetes-validate`, strict: unknown fields are errors). The two custom resources have
no schema there, so they are checked against the fields of their CRDs (KEDA's
ScaledObject, the Prometheus Operator's ServiceMonitor) kept in crd_schemas.json."""
import json
import re
from pathlib import Path

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm/supernet"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
# The oldest Kubernetes the chart supports (Chart.yaml: kubeVersion) and the newest schemas.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
CRD_SCHEMAS = json.loads((Path(__file__).parent / "crd_schemas.json").read_text())


def render(values):
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="sn", namespace="llm", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs, out


def kinds(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def test_lint_is_clean():
    report = helm_python.lint(str(CHART), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES], ids=lambda p: p.name if p else "default")
def test_every_manifest_validates_against_the_kubernetes_schemas(values_file):
    docs, _ = render(load(values_file) if values_file else {})
    assert len(docs) >= 10
    for doc in docs:
        api = f'{doc["apiVersion"]}/{doc["kind"]}'
        if api in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[api])
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_default_values_run_redis_with_aof_and_every_role():
    docs, out = render({})
    k = kinds(docs)
    redis = k[("StatefulSet", "sn-supernet-redis")]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendfsync") + 1] == "always" and args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert k[("Deployment", "sn-supernet-coordinator")]["spec"]["replicas"] == 2
    assert ("HorizontalPodAutoscaler", "sn-supernet-front") in k
    assert {n for kind, n in k if kind == "PodDisruptionBudget"} == {"sn-supernet-front", "sn-supernet-coordinator", "sn-supernet-worker"}
    secret = k[("Secret", "sn-supernet")]
    assert set(secret["data"]) == {"redis-password", "admin-key"}
    worker = k[("Deployment", "sn-supernet-worker")]["spec"]["template"]["spec"]
    assert worker["initContainers"][0]["name"] == "fetch-model"
    assert "nvidia.com/gpu" not in worker["containers"][0]["resources"].get("limits", {})
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["SUPERNET_REDIS"]["value"] == "redis://:$(REDIS_PASSWORD)@sn-supernet-redis:6379/0"
    # The init container runs the repository's own fetch script.
    config = yaml.safe_load(out["supernet/templates/configmap.yaml"])
    assert config["data"]["fetch-model.sh"].strip() == (CHART / "files/fetch-model.sh").read_text().strip()
    notes = out["supernet/templates/NOTES.txt"]
    assert '"model":"SmolLM2-135M-Instruct"' in notes and "/admin/v1/commands" in notes


def test_external_redis_values():
    docs, _ = render(load(CHART / "ci/external-redis-values.yaml"))
    k = kinds(docs)
    assert not any(kind == "StatefulSet" for kind, _ in k)
    front = k[("Deployment", "sn-supernet-front")]["spec"]["template"]["spec"]["containers"][0]
    redis = next(e for e in front["env"] if e["name"] == "SUPERNET_REDIS")
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "url"}
    assert "redis-password" not in k[("Secret", "sn-supernet")]["data"]
    assert k[("Ingress", "sn-supernet-front")]["spec"]["tls"][0]["secretName"] == "llm-example-tls"
    assert {n for kind, n in k if kind == "ServiceMonitor"} == {"sn-supernet-front", "sn-supernet-coordinator", "sn-supernet-worker"}
    assert "--config" in front["args"]


def test_gpu_workers_with_keda_values():
    docs, _ = render(load(CHART / "ci/gpu-keda-values.yaml"))
    k = kinds(docs)
    worker = k[("Deployment", "sn-supernet-worker")]
    assert "replicas" not in worker["spec"], "KEDA owns the worker count"
    pod = worker["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["volumes"][0]["hostPath"]["path"] == "/var/lib/supernet/models"
    scaled = k[("ScaledObject", "sn-supernet-worker")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sn-supernet-worker"
    assert "coordinator_queue_depth" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    hpa = k[("HorizontalPodAutoscaler", "sn-supernet-front")]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]


@pytest.mark.parametrize("bad", [{"worker": {"kind": "Job"}}, {"admin": {"key": "too-short"}}, {"front": {"replicas": "two"}}, {"wroker": {}},
                                 {"model": {"file": "../etc/passwd"}}])
def test_the_schema_refuses_bad_values(bad):
    with pytest.raises(helm_python.HelmValuesError):
        render(bad)


@pytest.mark.parametrize("bad, message", [({"worker": {"kind": "DaemonSet", "keda": {"enabled": True}}}, "needs worker.kind: Deployment"),
                                          ({"redis": {"deploy": False}}, "set redis.external.url")])
def test_impossible_combinations_fail_with_a_reason(bad, message):
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(bad)


# Maps passed to Kubernetes as they are: listed as one value.
FREE_FORM = {"resources", "nodeSelector", "affinity", "annotations", "labels", "podSecurityContext", "securityContext"}


def leaves(values, prefix=""):
    """Every value's dotted path (maps are walked, except free-form ones; lists and scalars
    are leaves)."""
    for key, v in values.items():
        path = f"{prefix}{key}"
        if isinstance(v, dict) and v and key not in FREE_FORM:
            yield from leaves(v, path + ".")
        else:
            yield path


def test_the_chart_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    values = set(leaves(load(CHART / "values.yaml")))
    assert values - listed == set(), "values missing from helm/supernet/README.md"
    assert listed - values == set(), "README lists values that do not exist"
