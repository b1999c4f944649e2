"""The part of kustomize that deploy/kubernetes uses, so that its overlays can be
rendered and checked without kubectl: resources (files and directories),
labels (metadata only), images, and strategic-merge patches (maps merged,
lists of named items merged by name, new ones first, other lists
replaced). When kubectl is
there, check_manifests.py compares this with `kubectl kustomize`.
"""

import copy
from pathlib import Path

import yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch):
    """A strategic merge patch of `patch` into `base` (both plain YAML data)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    named = lambda items: isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)
    if named(base) and named(patch):
        out, new = [copy.deepcopy(i) for i in base], []
        for item in patch:
            match = next((n for n, b in enumerate(out) if b["name"] == item["name"]), None)
            if match is None:
                new.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        # kustomize puts the patch's new items first.
        return new + out
    return copy.deepcopy(patch)


def _containers(doc):
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec)
    return pod.get("containers", []) + pod.get("initContainers", [])


def build(directory):
    """The objects `kustomize build directory` prints, in resource order."""
    directory = Path(directory)
    k = load(directory / "kustomization.yaml")[0]
    known = {"apiVersion", "kind", "resources", "labels", "images", "patches"}
    unknown = set(k) - known
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: {sorted(unknown)} not supported here")
    docs = []
    for r in k.get("resources", []):
        path = directory / r
        docs += build(path) if path.is_dir() else load(path)
    for p in k.get("patches", []):
        (patch,) = load(directory / p["path"])
        targets = [
            i for i, d in enumerate(docs)
            if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]
        ]
        if len(targets) != 1:
            raise ValueError(f"{p['path']}: patches {len(targets)} objects, not 1")
        docs[targets[0]] = merge(docs[targets[0]], patch)
    for label in k.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise ValueError("labels on selectors or templates are not supported here")
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in k.get("images", []):
        for d in docs:
            for c in _containers(d):
                name = c.get("image", "").split(":")[0]
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return docs
