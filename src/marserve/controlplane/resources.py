"""The resources the API serves: kinds, scope, verbs and short names (the discovery facts)."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
ISVC_GV = f"{GROUP}/{VERSION}"
ISVC = f"inferenceservices.{GROUP}"
READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class Resource:
    """One served resource; ``key`` is its name in the store."""

    plural: str
    singular: str
    kind: str
    group_version: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        group = self.group_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural

    @property
    def writable(self) -> bool:
        return "create" in self.verbs


INFERENCESERVICES = Resource(
    "inferenceservices",
    "inferenceservice",
    "InferenceService",
    ISVC_GV,
    True,
    WRITE,
    ("isvc",),
    ("all", "kserve"),
)
CORE = (
    Resource("namespaces", "namespace", "Namespace", "v1", False, WRITE, ("ns",)),
    Resource("pods", "pod", "Pod", "v1", True, READ, ("po",), ("all",)),
    Resource("services", "service", "Service", "v1", True, READ, ("svc",), ("all",)),
    Resource("events", "event", "Event", "v1", True, READ, ("ev",)),
)
BY_GV: dict[str, dict[str, Resource]] = {
    "v1": {r.plural: r for r in CORE},
    ISVC_GV: {"inferenceservices": INFERENCESERVICES},
}
SUBRESOURCES: dict[tuple[str, str], tuple[str, ...]] = {
    (ISVC_GV, "inferenceservices/status"): ("get", "patch", "update"),
    ("v1", "pods/log"): ("get",),
    ("v1", "namespaces/status"): ("get",),
}


def lookup(group_version: str, plural: str) -> Resource | None:
    return BY_GV.get(group_version, {}).get(plural)
