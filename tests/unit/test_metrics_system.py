"""Host gauges: CPU, memory, disk by TorchServe's names; GPU gauges only where nvidia-smi is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from marserve.observability.system_metrics import GpuSample, SystemMetrics, parse_nvidia_smi


def gauges(system: SystemMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    registry.register(system)
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in registry.collect():
        assert family.type == "gauge"
        found[family.name] = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    return found


def test_parse_nvidia_smi_rows() -> None:
    text = "0, 37, 1024, 4096\n1, [N/A], 0, 8192\nsomething else\n2, 100, 8192, 8192\n"
    assert parse_nvidia_smi(text) == [
        GpuSample("0", 37.0, 1024.0, 4096.0),
        GpuSample("2", 100.0, 8192.0, 8192.0),
    ]
    assert GpuSample("0", 0, 1, 4).memory_utilization == 25.0
    assert GpuSample("0", 0, 0, 0).memory_utilization == 0.0


def test_host_gauges_carry_torchserve_names_and_labels() -> None:
    system = SystemMetrics("h", find_nvidia_smi=False)
    found = gauges(system)
    host = (("Hostname", "h"), ("Level", "Host"))
    for name in ("CPUUtilization", "MemoryUsed", "MemoryAvailable", "MemoryUtilization",
                 "DiskUsage", "DiskAvailable", "DiskUtilization"):  # fmt: skip
        assert list(found[name]) == [host], name
    assert 0 <= found["MemoryUtilization"][host] <= 100
    assert 0 <= found["DiskUtilization"][host] <= 100
    assert found["MemoryUsed"][host] > 0 and found["DiskAvailable"][host] > 0
    assert not any(name.startswith("GPU") for name in found)
    assert not any(name.startswith("GPU") for name in system.families)


def test_gpu_gauges_come_from_nvidia_smi_and_are_cached(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        f"#!/bin/sh\necho x >> {calls}\necho '0, 37, 1024, 4096'\necho '1, 5, 0, 8192'\n"
    )
    fake.chmod(0o755)
    now = [0.0]
    system = SystemMetrics("h", nvidia_smi=str(fake), gpu_ttl_s=15.0, clock=lambda: now[0])
    assert gauges(system)["GPUUtilization"] == {}  # not read yet: families, no samples
    asyncio.run(system.refresh())
    asyncio.run(system.refresh())  # within the TTL: no second run
    found = gauges(system)
    gpu0 = (("DeviceId", "0"), ("Hostname", "h"), ("Level", "Host"))
    assert found["GPUUtilization"][gpu0] == 37.0
    assert found["GPUMemoryUsed"][gpu0] == 1024.0
    assert found["GPUMemoryUtilization"][gpu0] == 25.0
    assert len(found["GPUUtilization"]) == 2
    assert calls.read_text().count("x") == 1
    now[0] = 16.0
    asyncio.run(system.refresh())
    assert calls.read_text().count("x") == 2


def test_a_failing_nvidia_smi_gives_no_gpu_samples(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(0o755)
    system = SystemMetrics("h", nvidia_smi=str(fake))
    asyncio.run(system.refresh())
    assert gauges(system)["GPUUtilization"] == {}
    gone = SystemMetrics("h", nvidia_smi=str(tmp_path / "missing"))
    asyncio.run(gone.refresh())
    assert gauges(gone)["GPUUtilization"] == {}
