"""Discovery documents, pure: ``/api``, ``/apis``, a group, and a group version's resources."""

from __future__ import annotations

from typing import Any

from marserve.controlplane.resources import BY_GV, GROUP, ISVC_GV, SUBRESOURCES, VERSION

Doc = dict[str, Any]


def api_versions(address: str) -> Doc:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def api_group() -> Doc:
    version = {"groupVersion": ISVC_GV, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    }


def api_group_list() -> Doc:
    group = {k: v for k, v in api_group().items() if k not in ("kind", "apiVersion")}
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def resource_list(group_version: str) -> Doc | None:
    """The ``APIResourceList`` of a group version, ``None`` when it is not served."""
    served = BY_GV.get(group_version)
    if served is None:
        return None
    resources: list[Doc] = []
    for res in served.values():
        entry: Doc = {
            "name": res.plural,
            "singularName": res.singular,
            "namespaced": res.namespaced,
            "kind": res.kind,
            "verbs": list(res.verbs),
        }
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.categories:
            entry["categories"] = list(res.categories)
        resources.append(entry)
        for (gv, name), verbs in SUBRESOURCES.items():
            if gv == group_version and name.startswith(f"{res.plural}/"):
                resources.append(
                    {
                        "name": name,
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "kind": "Status" if not name.endswith("/log") else "Pod",
                        "verbs": list(verbs),
                    }
                )
    for entry in resources:
        if entry["name"] == "inferenceservices/status":
            entry["kind"] = "InferenceService"
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
