"""The custom resources deploy/kubernetes uses, field by field, as their API
references document them: KEDA's ScaledObject (keda.sh/v1alpha1, Prometheus
scaler), KServe's ClusterServingRuntime (serving.kserve.io/v1alpha1) and
InferenceService (serving.kserve.io/v1beta1), the Gateway API Inference
Extension's InferencePool (inference.networking.k8s.io/v1), Gateway API's
HTTPRoute (gateway.networking.k8s.io/v1, the fields used) and the Prometheus
operator's ServiceMonitor (monitoring.coreos.com/v1).

Unknown fields are errors (the API servers prune or reject them, and a typo
would silently do nothing). Embedded Kubernetes types (a container, an HPA's
behavior, resources) are checked with the Kubernetes schemas by wrapping them
in a resource that holds them.
"""

import re

import kubernetes_validate

K8S_VERSION = "1.30"


class Schema:
    def check(self, value, path, errors):
        raise NotImplementedError


class Str(Schema):
    def __init__(self, enum=None, pattern=None):
        self.enum, self.pattern = enum, pattern

    def check(self, value, path, errors):
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
        elif self.enum and value not in self.enum:
            errors.append(f"{path}: {value!r} is not one of {self.enum}")
        elif self.pattern and not re.fullmatch(self.pattern, value):
            errors.append(f"{path}: {value!r} does not match {self.pattern}")


class Int(Schema):
    def __init__(self, minimum=None, maximum=None):
        self.minimum, self.maximum = minimum, maximum

    def check(self, value, path, errors):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {value!r}")
        elif (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            errors.append(f"{path}: {value} outside [{self.minimum}, {self.maximum}]")


class Bool(Schema):
    def check(self, value, path, errors):
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {value!r}")


class List(Schema):
    def __init__(self, item, min_items=0, max_items=None):
        self.item, self.min_items, self.max_items = item, min_items, max_items

    def check(self, value, path, errors):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {value!r}")
            return
        if len(value) < self.min_items or (self.max_items and len(value) > self.max_items):
            errors.append(f"{path}: {len(value)} items, allowed {self.min_items}..{self.max_items}")
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]", errors)


class Map(Schema):
    """An object with free keys and values of one schema (labels, metadata)."""

    def __init__(self, value=None, min_props=0, max_props=None):
        self.value, self.min_props, self.max_props = value or Str(), min_props, max_props

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {value!r}")
            return
        if len(value) < self.min_props or (self.max_props and len(value) > self.max_props):
            errors.append(f"{path}: {len(value)} entries, allowed {self.min_props}..{self.max_props}")
        for k, v in value.items():
            self.value.check(v, f"{path}.{k}", errors)


class Obj(Schema):
    """An object with exactly these fields; `required` must be present."""

    def __init__(self, fields, required=()):
        self.fields, self.required = fields, set(required)

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {value!r}")
            return
        for name in sorted(self.required - value.keys()):
            errors.append(f"{path}.{name}: required")
        for name, v in value.items():
            if name not in self.fields:
                errors.append(f"{path}.{name}: unknown field")
            else:
                self.fields[name].check(v, f"{path}.{name}", errors)


class Kube(Schema):
    """A Kubernetes type, checked by the Kubernetes schemas inside `wrap(value)`."""

    def __init__(self, wrap):
        self.wrap = wrap

    def check(self, value, path, errors):
        try:
            kubernetes_validate.validate(self.wrap(value), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{path}: {e.message}")


class Any(Schema):
    def check(self, value, path, errors):
        pass


def _pod(spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}


CONTAINER = Kube(lambda c: _pod({"containers": [c]}))
RESOURCES = Kube(lambda r: _pod({"containers": [{"name": "x", "resources": r}]}))
ENV = Kube(lambda e: _pod({"containers": [{"name": "x", "env": e}]}))
POD_SPEC_FIELD = {
    name: Kube(lambda v, name=name: _pod({"containers": [{"name": "x"}], name: v}))
    for name in ("volumes", "nodeSelector", "affinity", "tolerations", "imagePullSecrets")
}
HPA_BEHAVIOR = Kube(
    lambda b: {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1, "behavior": b},
    }
)
META = Obj(
    {"name": Str(), "namespace": Str(), "labels": Map(), "annotations": Map()},
    required=["name"],
)


def resource(api_version, kind, spec, spec_required=True):
    return Obj(
        {"apiVersion": Str(enum=[api_version]), "kind": Str(enum=[kind]), "metadata": META, "spec": spec},
        required=["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
    )


# KEDA: the Prometheus scaler's metadata keys, every value a string.
PROMETHEUS_METADATA = Obj(
    {k: Str() for k in (
        "serverAddress", "query", "threshold", "activationThreshold", "namespace",
        "customHeaders", "ignoreNullValues", "unsafeSsl", "queryParameters", "timeout",
    )},
    required=["serverAddress", "query", "threshold"],
)


class Trigger(Obj):
    """A KEDA trigger; a Prometheus trigger's metadata is checked key by key."""

    def check(self, value, path, errors):
        super().check(value, path, errors)
        if isinstance(value, dict) and value.get("type") == "prometheus":
            PROMETHEUS_METADATA.check(value.get("metadata"), f"{path}.metadata", errors)


SCALED_OBJECT = resource("keda.sh/v1alpha1", "ScaledObject", Obj({
    "scaleTargetRef": Obj(
        {"apiVersion": Str(), "kind": Str(), "name": Str(), "envSourceContainerName": Str()},
        required=["name"],
    ),
    "pollingInterval": Int(minimum=1),
    "cooldownPeriod": Int(minimum=0),
    "initialCooldownPeriod": Int(minimum=0),
    "idleReplicaCount": Int(minimum=0),
    "minReplicaCount": Int(minimum=0),
    "maxReplicaCount": Int(minimum=1),
    "fallback": Obj({"failureThreshold": Int(minimum=1), "replicas": Int(minimum=0)},
                    required=["failureThreshold", "replicas"]),
    "advanced": Obj({
        "restoreToOriginalReplicaCount": Bool(),
        "horizontalPodAutoscalerConfig": Obj({"name": Str(), "behavior": HPA_BEHAVIOR}),
        "scalingModifiers": Obj({"formula": Str(), "target": Str(), "activationTarget": Str(),
                                 "metricType": Str(enum=["AverageValue", "Value"])}),
    }),
    "triggers": List(Trigger({
        "type": Str(),
        "name": Str(),
        "metadata": Map(),
        "authenticationRef": Obj({"name": Str(), "kind": Str(enum=["TriggerAuthentication", "ClusterTriggerAuthentication"])},
                                 required=["name"]),
        "metricType": Str(enum=["AverageValue", "Value", "Utilization"]),
        "useCachedMetrics": Bool(),
    }, required=["type", "metadata"]), min_items=1),
}, required=["scaleTargetRef", "triggers"]))

# KServe: ServingRuntimeSpec (ClusterServingRuntime shares it).
MODEL_FORMAT = Obj({"name": Str(), "version": Str(), "autoSelect": Bool(), "priority": Int(minimum=1)},
                   required=["name"])
PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]
CLUSTER_SERVING_RUNTIME = resource("serving.kserve.io/v1alpha1", "ClusterServingRuntime", Obj({
    "supportedModelFormats": List(MODEL_FORMAT),
    "multiModel": Bool(),
    "disabled": Bool(),
    "protocolVersions": List(Str(enum=PROTOCOLS)),
    "annotations": Map(),
    "labels": Map(),
    "containers": List(CONTAINER, min_items=1),
    "grpcEndpoint": Str(),
    "grpcDataEndpoint": Str(),
    "httpDataEndpoint": Str(),
    "replicas": Int(minimum=0),
    "storageHelper": Obj({"disabled": Bool()}),
    "builtInAdapter": Any(),
    "workerSpec": Any(),
    **POD_SPEC_FIELD,
}, required=["containers"]))

# KServe: InferenceService, the predictor's fields this repository may use.
MODEL_SPEC = Obj({
    "modelFormat": Obj({"name": Str(), "version": Str()}, required=["name"]),
    "runtime": Str(),
    "storageUri": Str(),
    "protocolVersion": Str(enum=PROTOCOLS),
    "args": List(Str()),
    "env": ENV,
    "resources": RESOURCES,
}, required=["modelFormat"])
INFERENCE_SERVICE = resource("serving.kserve.io/v1beta1", "InferenceService", Obj({
    "predictor": Obj({
        "model": MODEL_SPEC,
        "minReplicas": Int(minimum=0),
        "maxReplicas": Int(minimum=0),
        "scaleTarget": Int(minimum=1),
        "scaleMetric": Str(enum=["cpu", "memory", "concurrency", "rps"]),
        "containerConcurrency": Int(minimum=0),
        "timeout": Int(minimum=0),
        "canaryTrafficPercent": Int(minimum=0, maximum=100),
        "serviceAccountName": Str(),
        "labels": Map(),
        "annotations": Map(),
        **POD_SPEC_FIELD,
    }),
    "transformer": Any(),
    "explainer": Any(),
}, required=["predictor"]))

# Gateway API Inference Extension: InferencePool v1.
PORT = Obj({"number": Int(minimum=1, maximum=65535)}, required=["number"])
LABEL_VALUE = Str(pattern=r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
INFERENCE_POOL = resource("inference.networking.k8s.io/v1", "InferencePool", Obj({
    "selector": Obj({"matchLabels": Map(LABEL_VALUE, min_props=1, max_props=64)}, required=["matchLabels"]),
    "targetPorts": List(PORT, min_items=1, max_items=1),
    "endpointPickerRef": Obj({
        "group": Str(pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        "kind": Str(pattern=r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?"),
        "name": Str(),
        "port": PORT,
        "failureMode": Str(enum=["FailOpen", "FailClose"]),
    }, required=["name"]),
}, required=["selector", "targetPorts", "endpointPickerRef"]))

# Gateway API: HTTPRoute, the fields a route to an InferencePool needs.
PARENT_REF = Obj({"group": Str(), "kind": Str(), "namespace": Str(), "name": Str(),
                  "sectionName": Str(), "port": Int(minimum=1, maximum=65535)}, required=["name"])
HTTP_ROUTE = resource("gateway.networking.k8s.io/v1", "HTTPRoute", Obj({
    "parentRefs": List(PARENT_REF),
    "hostnames": List(Str()),
    "rules": List(Obj({
        "name": Str(),
        "matches": List(Obj({
            "path": Obj({"type": Str(enum=["Exact", "PathPrefix", "RegularExpression"]), "value": Str()}),
            "headers": Any(),
            "queryParams": Any(),
            "method": Str(),
        })),
        "backendRefs": List(Obj({"group": Str(), "kind": Str(), "name": Str(), "namespace": Str(),
                                 "port": Int(minimum=1, maximum=65535), "weight": Int(minimum=0)},
                                required=["name"])),
        "filters": Any(),
        "timeouts": Obj({"request": Str(), "backendRequest": Str()}),
    }), max_items=16),
}))

# Prometheus operator: ServiceMonitor.
SERVICE_MONITOR = resource("monitoring.coreos.com/v1", "ServiceMonitor", Obj({
    "selector": Obj({"matchLabels": Map(), "matchExpressions": Any()}),
    "namespaceSelector": Obj({"any": Bool(), "matchNames": List(Str())}),
    "jobLabel": Str(),
    "endpoints": List(Obj({
        "port": Str(), "targetPort": Any(), "path": Str(), "scheme": Str(enum=["http", "https"]),
        "interval": Str(pattern=r"(\d+(ms|s|m|h))+"), "scrapeTimeout": Str(pattern=r"(\d+(ms|s|m|h))+"),
        "honorLabels": Bool(), "authorization": Any(), "tlsConfig": Any(),
        "relabelings": Any(), "metricRelabelings": Any(),
    })),
}, required=["selector", "endpoints"]))

CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): CLUSTER_SERVING_RUNTIME,
    ("serving.kserve.io/v1beta1", "InferenceService"): INFERENCE_SERVICE,
    ("inference.networking.k8s.io/v1", "InferencePool"): INFERENCE_POOL,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}


def check_custom(doc, where):
    """Errors of a custom resource, or None when its kind is not one of CUSTOM."""
    schema = CUSTOM.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return None
    errors = []
    schema.check(doc, where, errors)
    return errors
