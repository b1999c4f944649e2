"""Checks deploy/kubernetes offline; run by tests/deploy_manifests.rs.

1. Every Kubernetes object (plain files and both overlays, rendered) validates
   against the Kubernetes schemas bundled in kubernetes-validate, strictly
   (unknown fields are errors), for the oldest and the newest version covered.
2. Every custom resource is checked field by field (crd_schemas.py).
3. The pieces agree: probes, the drain timeout and the grace period, selectors
   and pod labels, names referred to across files, the image's user, the GPU
   request, and every metric a query or the routing names exists in a real
   scrape of tessera's /metrics (the file given with --metrics).
4. When kubectl is installed, `kubectl kustomize` renders each overlay as
   kustomize_lite does.

Usage: check_manifests.py ROOT --metrics SCRAPE.txt   (exit 1 with the errors)
       check_manifests.py ROOT --self-test            (broken copies must fail)
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

import crd_schemas
import kustomize_lite

# Oldest: the preStop sleep action is on by default from 1.30.
K8S_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
# The Containerfile's user.
IMAGE_UID = 10001


def objects(kube):
    """(where, object) for every object a user may apply: plain files outside
    base/ and overlays/, and each overlay rendered."""
    out = []
    for path in sorted(kube.rglob("*.yaml")):
        rel = path.relative_to(kube)
        if rel.parts[0] in ("base", "overlays"):
            continue
        out += [(f"{rel}#{i}", d) for i, d in enumerate(kustomize_lite.load(path))]
    for overlay in sorted((kube / "overlays").iterdir()):
        for d in kustomize_lite.build(overlay):
            out.append((f"overlays/{overlay.name}:{d['kind']}/{d['metadata']['name']}", d))
    return out


def schema_errors(where, doc):
    errors = crd_schemas.check_custom(doc, where)
    if errors is not None:
        return errors
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: {doc.get('apiVersion')} {doc.get('kind')} has no schema")
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where} (Kubernetes {version}): {e.message} at {list(e.path)}")
    return errors


def env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def deployment_errors(overlay, docs):
    """The pieces of one rendered overlay agree with each other and with tessera."""
    errors = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    (dep,) = by_kind["Deployment"].values()
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    e = env(c)
    err = lambda msg: errors.append(f"overlays/{overlay}: {msg}")

    port = int(e.get("TESSERA_PORT", 8000))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports.get("http") != port:
        err(f"container port http {ports.get('http')} is not TESSERA_PORT {port}")
    for probe, path in [("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")]:
        got = c.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") not in ("http", port):
            err(f"{probe} must GET {path} on the http port, not {got}")
    startup = c["startupProbe"]
    if startup["periodSeconds"] * startup["failureThreshold"] < 300:
        err("the startup probe must allow at least 5 minutes for loading a model")
    drain = float(e.get("TESSERA_SHUTDOWN_TIMEOUT", 30))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pre_stop + drain:
        err(f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {drain}")
    if pod["securityContext"].get("runAsUser") != IMAGE_UID or not pod["securityContext"].get("runAsNonRoot"):
        err(f"pods must run as the image's user {IMAGE_UID}, not root")
    keys = [x for x in c["env"] if x["name"] == "TESSERA_API_KEYS"]
    ref = keys[0]["valueFrom"]["secretKeyRef"] if keys else None
    secret = by_kind.get("Secret", {}).get(ref["name"]) if ref else None
    if not secret or ref["key"] not in secret.get("stringData", secret.get("data", {})):
        err("TESSERA_API_KEYS must come from a key of a Secret in the overlay")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    if not claims or claims[0] not in by_kind.get("PersistentVolumeClaim", {}) or mounts.get("models") != "/models":
        err("the model repository must be a PersistentVolumeClaim mounted at /models")
    if not e.get("TESSERA_MODEL", "").startswith("/models/"):
        err("TESSERA_MODEL must be on the model repository")
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(port) or annotations.get("prometheus.io/path") != "/metrics":
        err("the Prometheus annotations must name the http port and /metrics")
    for kind in ("Service", "PodDisruptionBudget"):
        for name, d in by_kind.get(kind, {}).items():
            sel = d["spec"]["selector"]
            sel = sel.get("matchLabels", sel)
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                err(f"{kind}/{name} selects {sel}, not the pods {labels}")
    gpus = c["resources"].get("limits", {}).get("nvidia.com/gpu")
    if (overlay == "gpu") != (gpus is not None):
        err(f"nvidia.com/gpu limit {gpus!r} in the {overlay} overlay")
    if overlay == "gpu" and e.get("TESSERA_DEVICE") != "cuda":
        err("the gpu overlay must run on cuda")
    return errors, dep, labels


def metric_names(scrape_text):
    return {
        line.split("{")[0].split(" ")[0]
        for line in scrape_text.splitlines()
        if line and not line.startswith("#")
    }


def cross_errors(docs, dep, labels, scraped):
    """Autoscaling, routing and monitoring point at the Deployment and read metrics tessera exports."""
    errors = []
    name = dep["metadata"]["name"]
    port = dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    queries = []
    for where, d in docs:
        kind, spec = d["kind"], d.get("spec", {})
        if kind in ("ScaledObject", "HorizontalPodAutoscaler"):
            if spec["scaleTargetRef"]["name"] != name:
                errors.append(f"{where}: scales {spec['scaleTargetRef']['name']}, not {name}")
        if kind == "ScaledObject":
            queries += [t.get("metadata", {}).get("query", "") for t in spec.get("triggers", [])]
        if kind == "HorizontalPodAutoscaler":
            queries += [m["pods"]["metric"]["name"] for m in spec["metrics"] if m["type"] == "Pods"]
        if kind == "ConfigMap":
            for text in d.get("data", {}).values():
                queries += [r["seriesQuery"] for r in yaml.safe_load(text).get("rules", [])]
        if kind == "InferencePool":
            sel = spec["selector"]["matchLabels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                errors.append(f"{where}: selects {sel}, not the pods {labels}")
            if spec["targetPorts"][0]["number"] != port:
                errors.append(f"{where}: targets port {spec['targetPorts'][0]['number']}, not {port}")
        if kind == "ServiceMonitor":
            sel = spec["selector"]["matchLabels"]
            if sel != {"app.kubernetes.io/name": name}:
                errors.append(f"{where}: selects {sel}, not the tessera Service")
    if not queries:
        errors.append("no autoscaling query found")
    # What the endpoint picker of the Gateway API Inference Extension reads.
    routing = ["vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"]
    for q in queries + routing:
        for metric in re.findall(r"\b(?:tessera_|vllm:)[a-z_:]+", q):
            if metric not in scraped:
                errors.append(f"{metric} (in {q!r}) is not in tessera's /metrics")
    return errors


def kubectl_errors(kube):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("check_manifests: kubectl not installed; overlays rendered by kustomize_lite only")
        return []
    errors = []
    key = lambda d: (d["kind"], d["metadata"]["name"])
    for overlay in sorted((kube / "overlays").iterdir()):
        out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
        if out.returncode != 0:
            errors.append(f"kubectl kustomize {overlay}: {out.stderr}")
            continue
        theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=key)
        if theirs != sorted(kustomize_lite.build(overlay), key=key):
            errors.append(f"overlays/{overlay.name}: kubectl kustomize renders it differently")
    return errors


def check(kube, scraped):
    docs = objects(kube)
    errors = []
    for where, d in docs:
        errors += schema_errors(where, d)
    for overlay in sorted(p.name for p in (kube / "overlays").iterdir()):
        rendered = [d for w, d in docs if w.startswith(f"overlays/{overlay}:")]
        errs, dep, labels = deployment_errors(overlay, rendered)
        errors += errs
    errors += cross_errors(docs, dep, labels, scraped)
    return errors, docs


def self_test(root, scraped):
    """Each broken copy of the manifests must be caught; returns what was not."""
    import tempfile

    breakages = {
        "deployment field typo": ("base/deployment.yaml", lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=40)),
        "grace period shorter than the drain": ("base/deployment.yaml", lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10)),
        "liveness on /ready": ("base/deployment.yaml", lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"].update(path="/ready")),
        "service selects nothing": ("base/service.yaml", lambda d: d["spec"]["selector"].update({"app.kubernetes.io/name": "other"})),
        "KEDA trigger without a query": ("autoscaling/keda-scaledobject.yaml", lambda d: d["spec"]["triggers"][0]["metadata"].pop("query")),
        "KEDA unknown field": ("autoscaling/keda-scaledobject.yaml", lambda d: d["spec"].update(maxReplicas=3)),
        "KEDA query on a metric tessera lacks": ("autoscaling/keda-scaledobject.yaml", lambda d: d["spec"]["triggers"][0]["metadata"].update(query="sum(tessera_queue_depth)")),
        "KServe container typo": ("kserve/cluster-serving-runtime.yaml", lambda d: d["spec"]["containers"][0].update(imag="x")),
        "KServe protocol": ("kserve/cluster-serving-runtime.yaml", lambda d: d["spec"].update(protocolVersions=["openai"])),
        "InferenceService without a format": ("kserve/inference-service.yaml", lambda d: d["spec"]["predictor"]["model"].pop("modelFormat")),
        "InferencePool with two ports": ("gateway/inference-pool.yaml", lambda d: d["kind"] == "InferencePool" and d["spec"]["targetPorts"].append({"number": 8001})),
        "InferencePool v1alpha2 field": ("gateway/inference-pool.yaml", lambda d: d["kind"] == "InferencePool" and d["spec"].update(targetPortNumber=8000)),
        "ServiceMonitor interval": ("monitoring/service-monitor.yaml", lambda d: d["spec"]["endpoints"][0].update(interval=15)),
        "gpu overlay without a GPU": ("overlays/gpu/deployment-patch.yaml", lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu")),
    }
    missed = []
    for what, (file, breaking) in breakages.items():
        with tempfile.TemporaryDirectory() as tmp:
            kube = Path(tmp) / "kubernetes"
            shutil.copytree(root / "deploy/kubernetes", kube)
            docs = kustomize_lite.load(kube / file)
            for d in docs:
                breaking(d)
            (kube / file).write_text(yaml.safe_dump_all(docs))
            errors, _ = check(kube, scraped)
            print(f"self-test: {what}: {errors[:1] or 'NOT CAUGHT'}")
            if not errors:
                missed.append(what)
    return missed


def main():
    root = Path(sys.argv[1])
    scraped = metric_names(Path(sys.argv[sys.argv.index("--metrics") + 1]).read_text())
    kube = root / "deploy/kubernetes"
    if "--self-test" in sys.argv:
        missed = self_test(root, scraped)
        if missed:
            print(f"check_manifests: not caught: {missed}")
            sys.exit(1)
        return
    errors, docs = check(kube, scraped)
    errors += kubectl_errors(kube)
    for e in errors:
        print(f"error: {e}")
    print(f"check_manifests: {len(docs)} objects, Kubernetes {K8S_VERSIONS}, {len(errors)} errors")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
