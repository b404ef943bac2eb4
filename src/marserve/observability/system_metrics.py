"""Host gauges by TorchServe's names: CPU, memory and disk, and GPUs when nvidia-smi exists.

CPU and memory need psutil (skipped without it); disk uses the standard library. GPU gauges are
exported only when an ``nvidia-smi`` executable is found: its answer is cached and refreshed at
most every ``gpu_ttl_s`` seconds, off the event loop, so a scrape never waits on a slow driver.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

log = logging.getLogger("marserve.metrics")

_MB = 1024.0 * 1024.0
_GB = _MB * 1024.0
# name -> (unit as TorchServe writes it, label names)
HOST_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "CPUUtilization": ("Percent", ("Level", "Hostname")),
    "MemoryUsed": ("Megabytes", ("Level", "Hostname")),
    "MemoryAvailable": ("Megabytes", ("Level", "Hostname")),
    "MemoryUtilization": ("Percent", ("Level", "Hostname")),
    "DiskUsage": ("Gigabytes", ("Level", "Hostname")),
    "DiskUtilization": ("Percent", ("Level", "Hostname")),
    "DiskAvailable": ("Gigabytes", ("Level", "Hostname")),
}
GPU_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "GPUMemoryUtilization": ("Percent", ("Level", "DeviceId", "Hostname")),
    "GPUMemoryUsed": ("Megabytes", ("Level", "DeviceId", "Hostname")),
    "GPUUtilization": ("Percent", ("Level", "DeviceId", "Hostname")),
}
NVIDIA_SMI_QUERY = (
    "--query-gpu=index,utilization.gpu,memory.used,memory.total",
    "--format=csv,noheader,nounits",
)


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: str
    utilization: float  # percent
    memory_used_mb: float
    memory_total_mb: float

    @property
    def memory_utilization(self) -> float:
        return 100.0 * self.memory_used_mb / self.memory_total_mb if self.memory_total_mb else 0.0


def parse_nvidia_smi(text: str) -> list[GpuSample]:
    """Rows of ``index, utilization.gpu, memory.used, memory.total`` (csv, no units)."""
    samples = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not fields[0].isdigit():
            continue
        try:
            numbers = [float(f) for f in fields[1:]]
        except ValueError:  # "[N/A]" on some boards
            continue
        samples.append(GpuSample(fields[0], *numbers))
    return samples


def _psutil() -> Any:
    try:
        return importlib.import_module("psutil")
    except ImportError:  # pragma: no cover - psutil is installed wherever marserve is tested
        return None


class SystemMetrics:
    """A Prometheus collector of host gauges, labelled ``Level="Host"`` as in TorchServe."""

    def __init__(
        self,
        hostname: str,
        *,
        disk_path: str = "/",
        nvidia_smi: str | None = None,
        find_nvidia_smi: bool = True,
        gpu_ttl_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hostname = hostname
        self.disk_path = disk_path
        self.nvidia_smi = nvidia_smi or (shutil.which("nvidia-smi") if find_nvidia_smi else None)
        self.gpu_ttl_s = gpu_ttl_s
        self._clock = clock
        self._gpus: list[GpuSample] = []
        self._gpus_at: float | None = None
        self._psutil = _psutil()
        if self._psutil is not None:
            self._psutil.cpu_percent(interval=None)  # the first reading only starts the clock

    @property
    def families(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Every family this collector can export here (GPU ones only with nvidia-smi)."""
        return {**HOST_FAMILIES, **(GPU_FAMILIES if self.nvidia_smi else {})}

    async def refresh(self) -> None:
        """Re-read the GPUs when the cached reading is older than ``gpu_ttl_s``."""
        now = self._clock()
        if self.nvidia_smi is None or (
            self._gpus_at is not None and now - self._gpus_at < self.gpu_ttl_s
        ):
            return
        self._gpus_at = now
        self._gpus = await self._query_gpus(self.nvidia_smi)

    @staticmethod
    async def _query_gpus(executable: str) -> list[GpuSample]:
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                *NVIDIA_SMI_QUERY,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("nvidia-smi could not be started: %s", exc)
            return []
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 5.0)
        except TimeoutError:
            process.kill()
            await process.wait()
            log.warning("nvidia-smi did not answer within 5s")
            return []
        return parse_nvidia_smi(out.decode("utf-8", "replace")) if process.returncode == 0 else []

    def _gauge(self, name: str) -> GaugeMetricFamily:
        unit, labels = self.families[name]
        doc = f"Torchserve prometheus gauge metric with unit: {unit}"
        return GaugeMetricFamily(name, doc, labels=list(labels))

    def _host_values(self) -> dict[str, float]:
        values: dict[str, float] = {}
        disk = shutil.disk_usage(self.disk_path)
        values["DiskUsage"] = disk.used / _GB
        values["DiskAvailable"] = disk.free / _GB
        values["DiskUtilization"] = 100.0 * disk.used / disk.total if disk.total else 0.0
        if self._psutil is not None:
            memory = self._psutil.virtual_memory()
            values["CPUUtilization"] = float(self._psutil.cpu_percent(interval=None))
            values["MemoryUsed"] = memory.used / _MB
            values["MemoryAvailable"] = memory.available / _MB
            values["MemoryUtilization"] = float(memory.percent)
        return values

    def collect(self) -> Iterator[Metric]:
        host = ["Host", self.hostname]
        for name, value in self._host_values().items():
            gauge = self._gauge(name)
            gauge.add_metric(host, value)
            yield gauge
        if self.nvidia_smi is None:
            return
        readings: dict[str, Callable[[GpuSample], float]] = {
            "GPUUtilization": lambda g: g.utilization,
            "GPUMemoryUsed": lambda g: g.memory_used_mb,
            "GPUMemoryUtilization": lambda g: g.memory_utilization,
        }
        for name, read in readings.items():
            gauge = self._gauge(name)
            for gpu in self._gpus:
                gauge.add_metric(["Host", gpu.index, self.hostname], read(gpu))
            yield gauge
