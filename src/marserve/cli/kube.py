"""``marserve apply/get/describe/delete/logs``: thin commands over the controller's API that
print what kubectl prints; they start the controller in the background when none runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from marserve.cli.controller import marserve_home

Obj = dict[str, Any]


@contextmanager
def _client() -> Iterator[Any]:
    from marserve.controlplane.kubeclient import ApiFailure, connect

    try:
        client = connect(marserve_home())
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield client
    except ApiFailure as err:
        click.echo(f"Error from server ({err.reason}): {err.message}", err=True)
        sys.exit(1)
    finally:
        client.close()


def _resource(name: str) -> Any:
    from marserve.controlplane.resources import BY_GV

    for served in BY_GV.values():
        for res in served.values():
            if name.lower() in (res.plural, res.singular, res.key, *res.short_names):
                return res
    raise click.ClickException(f'the server doesn\'t have a resource type "{name}"')


def _label(res: Any) -> str:
    group = res.group_version.rpartition("/")[0]
    return f"{res.singular}.{group}" if group else res.singular


def _documents(source: str) -> list[tuple[int, Any]]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        return [(i, d) for i, d in enumerate(yaml.safe_load_all(text)) if d is not None]
    except yaml.YAMLError as exc:
        raise click.ClickException(f"error parsing {source}: {exc}") from None


def _with_last_applied(doc: Obj, namespace: str | None) -> Obj:
    """The manifest with kubectl's last-applied annotation, byte for byte as kubectl writes it,
    so kubectl and marserve can take turns on one object."""
    from marserve.controlplane.printing import LAST_APPLIED

    modified: Obj = json.loads(json.dumps(doc))
    if namespace is not None:
        modified["metadata"]["namespace"] = namespace
    annotations = modified["metadata"].setdefault("annotations", {})
    annotations.pop(LAST_APPLIED, None)
    record = json.dumps(modified, sort_keys=True, separators=(",", ":")) + "\n"
    annotations[LAST_APPLIED] = record
    return modified


def _send(client: Any, res: Any, ns: str, name: str, modified: Obj, current: Obj | None) -> str:
    """Create, or merge-patch what changed (three-way, as kubectl); the word kubectl prints."""
    from marserve.controlplane.kubeclient import path_for
    from marserve.controlplane.patch import three_way_merge
    from marserve.controlplane.printing import LAST_APPLIED

    query = {"fieldManager": "marserve-client-side-apply", "fieldValidation": "Strict"}
    if current is None:
        client.request("POST", path_for(res, ns), params=query, json=modified)
        return "created"
    last = (current["metadata"].get("annotations") or {}).get(LAST_APPLIED)
    patch = three_way_merge(json.loads(last) if last else {}, modified, current)
    if not patch:
        return "unchanged"
    headers = {"Content-Type": "application/merge-patch+json"}
    client.request(
        "PATCH", path_for(res, ns, name), params=query, content=json.dumps(patch), headers=headers
    )
    return "configured"


def _apply_one(client: Any, doc: Any, namespace: str | None, source: str) -> bool:
    from marserve.controlplane.kubeclient import ApiFailure, path_for, resource_of

    res = resource_of(doc) if isinstance(doc, dict) else None
    if res is None:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        version = doc.get("apiVersion") if isinstance(doc, dict) else None
        click.echo(
            f'error: resource mapping not found from "{source}": no matches for kind '
            f'"{kind}" in version "{version}"',
            err=True,
        )
        return False
    meta = doc.setdefault("metadata", {}) if isinstance(doc.get("metadata"), dict) else {}
    name, ns = str(meta.get("name", "")), namespace or meta.get("namespace") or client.namespace
    modified = _with_last_applied(doc, ns if res.namespaced else None)
    try:
        current = client.request("GET", path_for(res, ns, name)) if name else None
    except ApiFailure as err:
        if err.code != 404:
            raise
        current = None
    try:
        outcome = _send(client, res, ns, name, modified, current)
    except ApiFailure as err:
        verb = "creating" if current is None else "patching"
        click.echo(
            f'Error from server ({err.reason}): error when {verb} "{source}": {err.message}',
            err=True,
        )
        return False
    click.echo(f"{_label(res)}/{name} {outcome}")
    return True


@click.command()
@click.option("-f", "--filename", "source", required=True, help="A YAML file, or - for stdin.")
@click.option("-n", "--namespace", default=None)
def apply(source: str, namespace: str | None) -> None:
    """Create or update the InferenceServices (and Namespaces) of FILE, as `kubectl apply`."""
    docs = _documents(source)
    with _client() as client:
        ok = all([_apply_one(client, doc, namespace, source) for _, doc in docs])
    if not ok:
        sys.exit(1)


@click.command()
@click.argument("resource")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", type=click.Choice(["yaml", "json", "wide", "name"]), default=None)
@click.option("-l", "--selector", default=None, help="A label selector (a=b, a in (x,y), !c).")
def get(
    resource: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str | None,
    selector: str | None,
) -> None:
    """List or show objects, as `kubectl get` prints them."""
    from marserve.controlplane.kubeclient import TABLE, path_for
    from marserve.controlplane.printing import as_list, strip, table_text, to_json, to_yaml

    res = _resource(resource)
    with _client() as client:
        ns = "" if all_namespaces and not name else (namespace or client.namespace)
        path = path_for(res, ns, name) if ns or not res.namespaced else path_for(res, "", name)
        if all_namespaces and res.namespaced and not name:
            path = path.replace("/namespaces//", "/")
        params = {"labelSelector": selector} if selector else {}
        if output in (None, "wide"):
            table = client.request("GET", path, params=params, headers={"Accept": TABLE})
            if not table.get("rows"):
                where = "" if all_namespaces or not res.namespaced else f" in {ns} namespace"
                click.echo(f"No resources found{where}.", err=True)
                return
            many = all_namespaces and res.namespaced and not name
            click.echo(table_text(table, wide=output == "wide", namespaces=many), nl=False)
            return
        doc = client.request("GET", path, params=params)
        items = [doc] if name else doc.get("items", [])
        if output == "name":
            click.echo("".join(f"{_label(res)}/{o['metadata']['name']}\n" for o in items), nl=False)
            return
        shown = strip(doc) if name else as_list([strip(o) for o in items])
        click.echo(to_yaml(shown) if output == "yaml" else to_json(shown), nl=False)


@click.command()
@click.argument("resource")
@click.argument("name")
@click.option("-n", "--namespace", default=None)
def describe(resource: str, name: str, namespace: str | None) -> None:
    """Show one object and its events, as `kubectl describe` does."""
    from marserve.controlplane.kubeclient import path_for
    from marserve.controlplane.printing import describe as render
    from marserve.controlplane.tables import describe_age

    res = _resource(resource)
    with _client() as client:
        ns = namespace or client.namespace
        obj = client.request("GET", path_for(res, ns, name))
        uid = obj["metadata"].get("uid", "")
        selector = (
            f"involvedObject.name={name},involvedObject.namespace={ns},involvedObject.uid={uid}"
        )
        events_res = _resource("events")
        found = client.request("GET", path_for(events_res, ns), params={"fieldSelector": selector})
        now = datetime.now(UTC)
        events = [{**e, "age": describe_age(e, now)} for e in found.get("items", [])]
        click.echo(render(obj, events), nl=False)


@click.command()
@click.argument("resource")
@click.argument("name")
@click.option("-n", "--namespace", default=None)
def delete(resource: str, name: str, namespace: str | None) -> None:
    """Delete one object, as `kubectl delete` does."""
    from marserve.controlplane.kubeclient import path_for

    res = _resource(resource)
    with _client() as client:
        ns = namespace or client.namespace
        client.request("DELETE", path_for(res, ns, name))
        where = f" from {ns} namespace" if res.namespaced else ""
        click.echo(f'{_label(res)} "{name}" deleted{where}')


def _pod_for(client: Any, ns: str, name: str) -> str:
    """``name`` itself when it is a pod, else the first pod of the InferenceService ``name``."""
    from marserve.controlplane.kubeclient import ApiFailure, path_for

    pods = _resource("pods")
    try:
        client.request("GET", path_for(pods, ns, name))
        return name
    except ApiFailure as err:
        if err.code != 404:
            raise
    found = client.request(
        "GET",
        path_for(pods, ns),
        params={"labelSelector": f"serving.kserve.io/inferenceservice={name}"},
    )
    items = sorted(o["metadata"]["name"] for o in found.get("items", []))
    if not items:
        raise ApiFailure(404, "NotFound", f'pods "{name}" not found')
    return str(items[0])


@click.command()
@click.argument("name")
@click.option("-n", "--namespace", default=None)
@click.option("-c", "--container", default="kserve-container", show_default=True)
@click.option("-f", "--follow", is_flag=True)
@click.option("--tail", type=int, default=None)
def logs(name: str, namespace: str | None, container: str, follow: bool, tail: int | None) -> None:
    """Print a pod's container log (NAME: a pod, or an InferenceService's first pod)."""
    from marserve.controlplane.kubeclient import path_for

    with _client() as client:
        ns = namespace or client.namespace
        pod = _pod_for(client, ns, name)
        params = {"container": container}
        if follow:
            params["follow"] = "true"
        if tail is not None:
            params["tailLines"] = str(tail)
        out = sys.stdout.buffer
        for chunk in client.stream(path_for(_resource("pods"), ns, pod) + "/log", params):
            out.write(chunk)
            out.flush()
