"""The seeds' kubectl commands, verbatim, with the pinned kubectl against a real controller."""

from __future__ import annotations

import subprocess
import time

import yaml

from marserve.controlplane.store import Store
from tests.e2e.controlplane.conftest import SAMPLES, Controller, kubectl_binary

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
HEADER = [
    "NAME",
    "URL",
    "READY",
    "PREV",
    "LATEST",
    "PREVROLLEDOUTREVISION",
    "LATESTREADYREVISION",
    "AGE",
]


def set_ready(ctl: Controller, ns: str, name: str) -> None:
    """What part 2's reconciler does: write status (URL, Ready) through the status subresource."""
    with ctl.client() as c:
        obj = c.get(ISVC.format(ns=ns, name=name)).json()
        obj["status"] = {
            "url": f"http://{name}.{ns}.example.com",
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "traffic": [
                        {
                            "latestRevision": True,
                            "percent": 100,
                            "revisionName": f"{name}-predictor-00001",
                        }
                    ]
                }
            },
        }
        assert c.put(ISVC.format(ns=ns, name=name) + "/status", json=obj).status_code == 200


def test_apply_get_table_and_status_url(controller: Controller) -> None:
    out = controller.kubectl("apply", "-f", "torchserve.yaml").stdout
    assert out.strip() == "inferenceservice.serving.kserve.io/torchserve created"
    again = controller.kubectl("apply", "-f", "torchserve.yaml").stdout
    assert again.strip() == "inferenceservice.serving.kserve.io/torchserve unchanged"
    table = controller.kubectl("get", "inferenceservice", "torchserve").stdout.splitlines()
    assert table[0].split() == HEADER
    assert table[1].split()[0] == "torchserve"
    set_ready(controller, "default", "torchserve")
    line = controller.sh(
        "SERVICE_HOSTNAME=$(kubectl get inferenceservice torchserve -o jsonpath='{.status.url}'"
        ' | cut -d "/" -f 3)\necho $SERVICE_HOSTNAME'
    )
    assert line.stdout.strip() == "torchserve.default.example.com", line.stderr
    row = controller.kubectl("get", "isvc", "torchserve").stdout.splitlines()[1].split()
    assert row[:5] == [
        "torchserve",
        "http://torchserve.default.example.com",
        "True",
        "100",
        "torchserve-predictor-00001",
    ]
    doc = yaml.safe_load(controller.kubectl("get", "isvc", "torchserve", "-o", "yaml").stdout)
    assert doc["spec"]["predictor"]["model"]["modelFormat"] == {"name": "pytorch"}
    assert doc["status"]["url"] == "http://torchserve.default.example.com"


def test_namespace_both_schemas_pods_and_logs(controller: Controller) -> None:
    out = controller.kubectl("create", "namespace", "kserve-test").stdout
    assert out.strip() == "namespace/kserve-test created"
    for sample in ("torchserve-old-schema.yaml", "torchserve-v2.yaml", "torchserve-gpu.yaml"):
        controller.kubectl("apply", "-f", sample, "-n", "kserve-test")
    old = yaml.safe_load(
        controller.kubectl("get", "isvc", "torchserve", "-n", "kserve-test", "-o", "yaml").stdout
    )
    assert "pytorch" not in old["spec"]["predictor"]
    assert old["spec"]["predictor"]["model"]["modelFormat"]["name"] == "pytorch"
    names = controller.kubectl("get", "inferenceservice", "-n", "kserve-test", "-o", "name")
    assert sorted(names.stdout.split()) == [
        "inferenceservice.serving.kserve.io/torchserve",
        "inferenceservice.serving.kserve.io/torchserve-gpu",
        "inferenceservice.serving.kserve.io/torchserve-mnist-v2",
    ]
    pod = "torchserve-predictor-00001-deployment-5d8f9c7b6d-x2k4q"
    store = Store(controller.home / "controlplane.db")
    try:
        store.create(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": "kserve-test"},
                "spec": {"containers": [{"name": "kserve-container"}, {"name": "queue-proxy"}]},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {"name": "kserve-container", "ready": True, "restartCount": 1},
                        {"name": "queue-proxy", "ready": True, "restartCount": 0},
                    ],
                },
            },
        )
    finally:
        store.close()
    logs = controller.home / "pods" / "kserve-test" / pod
    logs.mkdir(parents=True)
    (logs / "kserve-container.log").write_text("started\nmodel mnist loaded\n")
    table = controller.sh("kubectl get pods -n kserve-test").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:4] == [pod, "2/2", "Running", "1"]
    log = controller.kubectl("logs", pod, "-c", "kserve-container", "-n", "kserve-test").stdout
    assert log == "started\nmodel mnist loaded\n"
    tail = controller.kubectl("logs", pod, "-n", "kserve-test", "--tail=1").stdout
    assert tail == "model mnist loaded\n"


def test_ingress_commands(controller: Controller) -> None:
    port = controller.sh(
        "kubectl -n istio-system get service istio-ingressgateway -o "
        "jsonpath='{.spec.ports[?(@.name==\"http2\")].port}'"
    )
    with controller.client() as c:
        svc = c.get("/api/v1/namespaces/istio-system/services/istio-ingressgateway").json()
    assert port.stdout == str(svc["spec"]["ports"][0]["port"]) and int(port.stdout) > 0
    host = controller.sh(
        "kubectl -n istio-system get service istio-ingressgateway -o "
        "jsonpath='{.status.loadBalancer.ingress[0].ip}'"
    )
    assert host.stdout == "127.0.0.1"


def test_server_side_apply_conflicts_and_force(controller: Controller) -> None:
    controller.kubectl("apply", "--server-side", "-f", "torchserve-v2.yaml")
    changed = controller.home / "v2-changed.yaml"
    manifest = yaml.safe_load((SAMPLES / "torchserve-v2.yaml").read_text())
    manifest["spec"]["predictor"]["model"]["storageUri"] = "gs://elsewhere/v2"
    changed.write_text(yaml.safe_dump(manifest))
    clash = controller.kubectl(
        "apply", "--server-side", "--field-manager", "other", "-f", str(changed), check=False
    )
    assert clash.returncode != 0
    assert "conflict" in clash.stderr.lower() and ".spec.predictor.model.storageUri" in clash.stderr
    forced = controller.kubectl(
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        str(changed),
    )
    assert "serverside-applied" in forced.stdout
    got = yaml.safe_load(
        controller.kubectl(
            "get", "isvc", "torchserve-mnist-v2", "-o", "yaml", "--show-managed-fields"
        ).stdout
    )
    assert got["spec"]["predictor"]["model"]["storageUri"] == "gs://elsewhere/v2"
    assert {m["manager"] for m in got["metadata"]["managedFields"]} >= {"other"}


def test_patch_bumps_generation_and_strict_validation(controller: Controller) -> None:
    controller.kubectl("apply", "-f", "torchserve.yaml")
    before = yaml.safe_load(controller.kubectl("get", "isvc", "torchserve", "-o", "yaml").stdout)
    controller.kubectl(
        "patch",
        "isvc",
        "torchserve",
        "--type",
        "merge",
        "-p",
        '{"spec":{"predictor":{"minReplicas":2}}}',
    )
    after = yaml.safe_load(controller.kubectl("get", "isvc", "torchserve", "-o", "yaml").stdout)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["spec"]["predictor"]["minReplicas"] == 2
    bad = controller.home / "misspelt.yaml"
    bad.write_text(
        (SAMPLES / "torchserve-old-schema.yaml")
        .read_text()
        .replace("storageUri", "storageUrl")
        .replace("name: torchserve", "name: misspelt")
    )
    strict = controller.kubectl("apply", "--validate=strict", "-f", str(bad), check=False)
    assert strict.returncode != 0
    assert "spec.predictor.pytorch.storageUrl" in strict.stderr
    missing = controller.kubectl("get", "isvc", "misspelt", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_delete(controller: Controller) -> None:
    controller.kubectl("apply", "-f", "torchserve-gpu.yaml")
    out = controller.kubectl("delete", "-f", "torchserve-gpu.yaml").stdout
    assert 'inferenceservice.serving.kserve.io "torchserve-gpu" deleted' in out
    gone = controller.kubectl("get", "inferenceservice", "torchserve-gpu", check=False)
    assert gone.returncode == 1
    assert 'inferenceservices.serving.kserve.io "torchserve-gpu" not found' in gone.stderr


def test_edit_and_watch(controller: Controller) -> None:
    controller.kubectl("apply", "-f", "torchserve-canary.yaml", "-n", "kserve-test")
    env = controller.env()
    env["KUBE_EDITOR"] = "sed -i s/canaryTrafficPercent:\\ 20/canaryTrafficPercent:\\ 30/"
    edited = subprocess.run(
        [str(kubectl_binary()), "edit", "isvc", "torchserve", "-n", "kserve-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert edited.stdout.strip() == "inferenceservice.serving.kserve.io/torchserve edited", (
        edited.stderr
    )
    got = controller.kubectl(
        "get",
        "isvc",
        "torchserve",
        "-n",
        "kserve-test",
        "-o",
        "jsonpath={.spec.predictor.canaryTrafficPercent}",
    )
    assert got.stdout == "30"
    watcher = subprocess.Popen(
        [
            str(kubectl_binary()),
            "get",
            "isvc",
            "-n",
            "kserve-test",
            "-w",
            "--output-watch-events",
            "--request-timeout=60s",
        ],
        env=controller.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().split()[:2] == ["EVENT", "NAME"]
        assert watcher.stdout.readline().split()[:2] == ["ADDED", "torchserve"]
        controller.kubectl("label", "isvc", "torchserve", "-n", "kserve-test", "watched=yes")
        controller.kubectl("delete", "isvc", "torchserve-gpu", "-n", "kserve-test")
        seen = []
        while ("DELETED", "torchserve-gpu") not in seen:
            line = watcher.stdout.readline()
            assert line, f"the watch ended before the delete: {seen}"
            seen.append(tuple(line.split()[:2]))
        assert ("MODIFIED", "torchserve") in seen
    finally:
        watcher.kill()
        watcher.wait(10)
        if watcher.stdout is not None:
            watcher.stdout.close()


def test_wait_for_ready(controller: Controller) -> None:
    """kubectl wait uses client-go's streaming list (sendInitialEvents + the end bookmark)."""
    controller.kubectl("apply", "-f", "torchserve-v2.yaml")
    waiter = subprocess.Popen(
        [
            str(kubectl_binary()),
            "wait",
            "--for=condition=Ready",
            "isvc/torchserve-mnist-v2",
            "--timeout=60s",
        ],
        env=controller.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)  # the watch is open (waiting) before Ready is set; any order is correct
        assert waiter.poll() is None
        set_ready(controller, "default", "torchserve-mnist-v2")
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    assert out.strip() == "inferenceservice.serving.kserve.io/torchserve-mnist-v2 condition met"
