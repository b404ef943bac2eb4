"""ModelManager: load, register, scale, describe, set-default and unregister models.

The one implementation behind the management REST API, the gRPC management service, the KServe
v2 repository extension and start-up loading. Answers use TorchServe's JSON shapes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marserve import __version__
from marserve.archive import ExtractedArchive, extract_archive, read_manifest
from marserve.errors import (
    Conflict,
    InvalidInput,
    MarserveError,
    MethodNotAllowed,
    ModelNotFound,
)
from marserve.handler_metadata import customized_metadata
from marserve.handlers.loader import api_handler
from marserve.management_params import Registration, check_runtime, paging
from marserve.registry import ModelHandle, ModelRegistry
from marserve.repository import ModelStore, model_name_from_archive
from marserve.settings import ModelConfig, ServerSettings, load_model_yaml, model_config
from marserve.sources import DownloadLimits, check_model_name, download, is_remote, local_archive
from marserve.workers.messages import LoadModel
from marserve.workers.pool import PoolConfig, WarmProcesses, WorkerPool

log = logging.getLogger("marserve.management")

MAX_WORKERS_PER_MODEL = 64


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model to load: its archive, and the snapshot entry it was named with (if any)."""

    path: Path
    config: ModelConfig | None = None
    name: str | None = None
    url: str | None = None  # as the user gave it, for describe's modelUrl


@dataclass(frozen=True, slots=True)
class Answer:
    """A management answer: HTTP status (200, or 202 when work continues) and JSON body."""

    status: int
    body: Any


class ModelManager:
    def __init__(
        self,
        settings: ServerSettings,
        store: ModelStore,
        registry: ModelRegistry,
        staging: Path,
        env: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.staging = staging
        self.env = env
        self.download_limits = DownloadLimits()
        self._worker_index = itertools.count()
        self._urls: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()
        self.warm: WarmProcesses | None = None  # pre-started workers, for start-up only
        self._threads = self._torch_threads(self.auto_workers)  # refined at start-up

    # start-up ------------------------------------------------------------------------------
    def startup_sources(self) -> list[ModelSource]:
        """The snapshot's models, then ``load_models`` entries not already named there."""
        sources = [
            ModelSource(
                self.store.resolve(cfg.mar_name or f"{cfg.name}.mar"), cfg, cfg.name, cfg.mar_name
            )
            for cfg in self.settings.models
        ]
        named = {cfg.name for cfg in self.settings.models}
        for entry in self.settings.load_models:
            if entry == "all":
                sources += [
                    ModelSource(path, url=path.name)
                    for path in self.store.archives()
                    if model_name_from_archive(path) not in named
                ]
                continue
            name, _, archive = entry.partition("=")
            if not archive:
                name, archive = "", name
            path = local_archive(archive, self.store)
            if (name or model_name_from_archive(path)) not in named:
                sources.append(ModelSource(path, None, name or None, archive))
        return sources

    async def load_startup_models(self) -> None:
        """Load the start-up models and wait until each can serve (a snapshot's ``minWorkers``
        live, or one worker; or its load failed): the server listens only then, as TorchServe
        does."""
        sources = self.startup_sources()
        planned = sum(
            cfg.min_workers if cfg else self.auto_workers for cfg in (s.config for s in sources)
        )
        self._threads = self._torch_threads(planned)
        handles = [await self.load(source) for source in sources]
        # A snapshot's minWorkers is the user's word: all of them. Models named by load_models
        # or --models get one worker per CPU by default, so they wait for one (it serves; the
        # others load behind it) and cold start does not grow with the machine's size.
        started = await asyncio.gather(
            *(
                h.pool.wait_started(
                    h.config.min_workers if s.config else 1, float(h.config.startup_timeout_s)
                )
                for h, s in zip(handles, sources, strict=True)
            )
        )
        for handle, ok in zip(handles, started, strict=True):
            if not ok:
                log.warning(
                    "model %s version %s is not ready at start-up: %s",
                    handle.name,
                    handle.version,
                    handle.pool.last_error or "its workers are still loading",
                )

    @property
    def auto_workers(self) -> int:
        return self.settings.default_workers_per_model or (os.cpu_count() or 1)

    def _torch_threads(self, total_workers: int) -> int:
        configured = self.env.get("OMP_NUM_THREADS", "")
        if configured.isdigit() and int(configured) > 0:
            return int(configured)
        return max(1, (os.cpu_count() or 1) // max(1, total_workers))

    # loading -------------------------------------------------------------------------------
    def _config(
        self,
        source: ModelSource,
        extracted: ExtractedArchive,
        overrides: Mapping[str, Any],
        auto_workers: int | None,
    ) -> ModelConfig:
        manifest = extracted.manifest
        yaml_config: dict[str, Any] | None = None
        if manifest.config_file:
            data = (extracted.path / manifest.config_file).read_bytes()
            yaml_config = load_model_yaml(data, f"{source.path.name}:{manifest.config_file}")
        name = source.name or (source.config.name if source.config else manifest.model_name)
        version = source.config.version if source.config else manifest.model_version
        return model_config(
            name,
            version,
            self.settings,
            yaml_config=yaml_config,
            api_overrides=overrides,
            auto_workers=(os.cpu_count() or 1) if auto_workers is None else auto_workers,
        )

    async def load(
        self,
        source: ModelSource,
        overrides: Mapping[str, Any] | None = None,
        *,
        handler: str | None = None,
        auto_workers: int | None = None,
    ) -> ModelHandle:
        """Extract the archive, work out its settings, start its workers, register it.

        ``handler`` overrides the manifest's (management API); ``auto_workers`` is the worker
        count when neither the model nor the server sets one (None: one per CPU)."""
        extracted = await asyncio.to_thread(extract_archive, source.path, self.staging)
        try:
            if handler is not None:
                try:
                    handler = api_handler(handler, extracted.path)
                except ValueError as exc:
                    raise InvalidInput(str(exc)) from None
            handle = self._handle(source, extracted, overrides or {}, handler, auto_workers)
            # a snapshot names its default version; otherwise the first registered one is
            first = handle.name not in self.registry.names()
            default = handle.config.default_version if source.config else first
            self.registry.add(handle, default=default)
        except BaseException:
            shutil.rmtree(extracted.path, ignore_errors=True)
            raise
        self._urls[(handle.name, handle.version)] = source.url or source.path.name
        handle.pool.start()
        log.info(
            "model %s version %s: starting %d worker(s)",
            handle.name,
            handle.version,
            handle.pool.target,
        )
        return handle

    def _handle(
        self,
        source: ModelSource,
        extracted: ExtractedArchive,
        overrides: Mapping[str, Any],
        handler: str | None,
        auto_workers: int | None,
    ) -> ModelHandle:
        manifest = extracted.manifest
        if not manifest.is_python:
            raise InvalidInput(f"Unsupported runtime {manifest.runtime!r}: marserve runs python")
        config = self._config(source, extracted, overrides, auto_workers)
        check_model_name(config.name)
        version = config.version or manifest.model_version or "1.0"
        check_model_name(version, "model version")
        deps_dir = None
        if self.settings.install_py_dep_per_model and manifest.requirements_file:
            deps_dir = str(extracted.path.parent / f"{extracted.path.name}-deps")
        load = LoadModel(
            model_name=config.name,
            model_version=version,
            model_dir=str(extracted.path),
            manifest=dict(manifest.raw),
            handler=handler or manifest.handler,
            batch_size=config.batch_size,
            worker_index=0,
            torch_threads=self._threads,
            model_yaml_config=dict(config.yaml_config),
            deps_dir=deps_dir,
            server_version=__version__,
        )
        pool = WorkerPool(
            load,
            PoolConfig(
                min_workers=config.min_workers,
                max_workers=config.max_workers,
                response_timeout_s=float(config.response_timeout_s),
                startup_timeout_s=float(config.startup_timeout_s),
            ),
            lambda: next(self._worker_index),
            self.warm,
        )
        return ModelHandle(
            name=config.name,
            version=version,
            config=config,
            manifest=manifest,
            model_dir=extracted.path,
            pool=pool,
            queue_limit=config.job_queue_size or self.settings.job_queue_size,
        )

    # the management API ------------------------------------------------------------------
    def _require_model_api(self, what: str) -> None:
        if not self.settings.enable_model_api:
            raise MethodNotAllowed(
                f"Model {what} is disabled: start marserve with --enable-model-api "
                "or set enable_model_api=true"
            )

    async def register(self, request: Registration, *, auto_workers: int = 0) -> Answer:
        """TorchServe's ``POST /models?url=...``: from the store or an allowed URL.

        As TorchServe, no workers start unless ``initial_workers``, the archive's
        ``minWorkers`` or the server's ``default_workers_per_model`` asks for them
        (``auto_workers`` otherwise). A synchronous registration whose workers cannot load
        answers 500 with the workers' error and leaves nothing registered.
        """
        self._require_model_api("registration")
        url, model_name = request.url, request.model_name
        if not url:
            raise InvalidInput("Parameter url is required")
        if model_name is not None:
            check_model_name(model_name)
        check_runtime(request.runtime)
        overrides = request.overrides()
        _check_counts(initial_workers=overrides["initial_workers"])
        if is_remote(url):
            path = await download(url, self.store, self.settings.allowed_urls, self.download_limits)
        else:
            path = local_archive(url, self.store)
        manifest = await asyncio.to_thread(read_manifest, path)
        name = model_name or manifest.model_name
        check_model_name(name)
        version = manifest.model_version or "1.0"
        async with self._lock:
            if self._has(name, version):
                raise Conflict(f"Model version {version} is already registered for model {name}")
            source = ModelSource(path, name=name, url=url)
            handle = await self.load(
                source, overrides, handler=request.handler, auto_workers=auto_workers
            )
        return await self._registered(handle, request.synchronous)

    async def _registered(self, handle: ModelHandle, synchronous: bool) -> Answer:
        name, target = handle.name, handle.pool.target
        said = f'Model "{name}" Version: {handle.version} registered'
        if target == 0:
            return Answer(
                200,
                {"status": f"{said} with 0 initial workers. Use scale workers API to add workers "
                 "for the model."},
            )  # fmt: skip
        if not synchronous:
            return Answer(202, {"status": f"{said}; starting {target} workers"})
        await handle.pool.wait_for_workers(target, handle.config.startup_timeout_s)
        workers = handle.pool.live_workers
        if workers == 0:
            error = handle.pool.last_error or "unknown error"
            await self._forget(handle)
            return Answer(500, {"status": f"Failed to start workers for model {name}: {error}"})
        return Answer(200, {"status": f"{said} with {workers} initial workers"})

    async def _forget(self, handle: ModelHandle) -> None:
        """Take a model whose workers never loaded out again (nothing half-registered)."""
        async with self._lock:
            if self._has(handle.name, handle.version):
                self.registry.remove(handle.name, handle.version)
        self._urls.pop((handle.name, handle.version), None)
        await handle.stop()
        shutil.rmtree(handle.model_dir, ignore_errors=True)

    def _has(self, name: str, version: str) -> bool:
        try:
            self.registry.get(name, version)
        except ModelNotFound:
            return False
        return True

    async def unregister(self, name: str, version: str | None = None) -> Answer:
        """``DELETE /models/{m}[/{v}]``: stop new requests, drain in-flight ones, stop workers."""
        self._require_model_api("unregistration")
        handle = self.registry.get(name, version)
        versions = self.registry.versions(name)
        if (
            version is not None
            and len(versions) > 1
            and (self.registry.default_version(name) == handle.version)
        ):
            raise InvalidInput(
                f"Cannot remove the default version {handle.version} of model "
                f"{name}: set another default first"
            )
        self.registry.remove(name, handle.version)
        self._urls.pop((name, handle.version), None)
        drained = await handle.drain(float(self.settings.unregister_model_timeout_s))
        await handle.stop()
        shutil.rmtree(handle.model_dir, ignore_errors=True)
        if not drained:
            raise MarserveError("Timed out while cleaning resources", http_status=408)
        return Answer(200, {"status": f'Model "{name}" unregistered'})

    async def scale(
        self,
        name: str,
        version: str | None,
        *,
        min_worker: int | None = None,
        max_worker: int | None = None,
        synchronous: bool = False,
    ) -> Answer:
        """``PUT /models/{m}[/{v}]?min_worker=&max_worker=``."""
        handle = self.registry.get(name, version)
        low = 1 if min_worker is None else min_worker  # TorchServe's defaults
        high = low if max_worker is None else max_worker
        if high < low:
            raise InvalidInput(f"max_worker ({high}) must not be below min_worker ({low})")
        _check_counts(min_worker=low, max_worker=high)
        await handle.pool.scale(low, high)
        if synchronous:
            target = handle.pool.target
            await handle.pool.wait_for_workers(target, handle.config.startup_timeout_s)
            if handle.pool.live_workers < min(target, 1):
                error = handle.pool.last_error or "unknown error"
                return Answer(500, {"status": f"Failed to start workers for model {name}: {error}"})
            return Answer(
                200,
                {
                    "status": f"Workers scaled to {handle.pool.live_workers} for "
                    f"model: {name}, version: {handle.version}"
                },
            )
        return Answer(202, {"status": "Processing worker updates..."})

    def set_default(self, name: str, version: str) -> Answer:
        handle = self.registry.get(name, version)
        self.registry.set_default(name, handle.version)
        return Answer(
            200,
            {
                "status": "Default version successfully updated for model "
                f'"{name}" to "{handle.version}"'
            },
        )

    def list_models(self, limit: int | None = None, next_page_token: int | None = None) -> Answer:
        """``GET /models``, paged as TorchServe pages it (see ``management_params.paging``)."""
        limit, next_page_token = paging(limit, next_page_token)
        names = self.registry.names()
        page = names[next_page_token : next_page_token + limit]
        body: dict[str, Any] = {
            "models": [
                {"modelName": name, "modelUrl": self._url_of(self.registry.get(name))}
                for name in page
            ]
        }
        if next_page_token + limit < len(names):
            body["nextPageToken"] = str(next_page_token + limit)
        return Answer(200, body)

    def describe(self, name: str, version: str | None = None) -> Answer:
        """``GET /models/{m}[/{v}|/all]``."""
        if version == "all":
            handles = self.registry.versions(name)
        else:
            handles = [self.registry.get(name, version)]
        return Answer(200, [self._describe(h) for h in handles])

    async def describe_customized(self, name: str, version: str | None = None) -> Answer:
        """``GET /models/{m}?customized=true``: also the handler's ``describe_handle()``
        (``customizedMetadata``), asked of a live worker of each version."""
        answer = self.describe(name, version)
        handles = (
            self.registry.versions(name) if version == "all" else [self.registry.get(name, version)]
        )
        for entry, handle in zip(answer.body, handles, strict=True):
            metadata = await customized_metadata(handle)
            if metadata is not None:
                entry["customizedMetadata"] = metadata
        return answer

    def _url_of(self, handle: ModelHandle) -> str:
        return self._urls.get((handle.name, handle.version), "")

    def _describe(self, handle: ModelHandle) -> dict[str, Any]:
        pool, config = handle.pool, handle.config
        return {
            "modelName": handle.name,
            "modelVersion": handle.version,
            "modelUrl": self._url_of(handle),
            "runtime": handle.manifest.runtime,
            "minWorkers": pool.config.min_workers,
            "maxWorkers": pool.config.max_workers,
            "currentWorkers": pool.target,
            "batchSize": config.batch_size,
            "maxBatchDelay": config.max_batch_delay_ms,
            "responseTimeout": config.response_timeout_s,
            "startupTimeout": config.startup_timeout_s,
            "isDefault": self.registry.default_version(handle.name) == handle.version,
            "status": "READY" if handle.ready else "UNAVAILABLE",
            "restarts": pool.restarts,
            "lastError": pool.last_error,
            "workers": pool.describe(),
            "jobQueueStatus": {
                "remainingCapacity": max(0, handle.queue_limit - handle.queue_depth),
                "pendingRequests": handle.queue_depth,
            },
        }

    # the KServe v2 repository extension ----------------------------------------------------
    def repository_index(self) -> list[dict[str, Any]]:
        entries = [
            {
                "name": h.name,
                "version": h.version,
                "state": "READY" if h.ready else "UNAVAILABLE",
                "reason": "",
            }
            for h in self.registry
        ]
        loaded = {h.name for h in self.registry}
        entries += [
            {
                "name": model_name_from_archive(p),
                "version": "",
                "state": "UNAVAILABLE",
                "reason": "unloaded",
            }
            for p in self.store.archives()
            if model_name_from_archive(p) not in loaded
        ]
        return entries

    async def repository_load(self, name: str) -> None:
        check_model_name(name)
        if name in self.registry.names():
            return
        archive = next(
            (p.name for p in self.store.archives() if model_name_from_archive(p) == name), None
        )
        if archive is None:
            raise ModelNotFound(f"Model {name} is not in the model store")
        registration = Registration(url=archive, model_name=name, synchronous=True)
        answer = await self.register(registration, auto_workers=self.auto_workers)
        if answer.status >= 400:
            raise MarserveError(answer.body["status"], http_status=answer.status)

    async def repository_unload(self, name: str) -> None:
        self._require_model_api("unregistration")
        versions = [h.version for h in self.registry.versions(name)]
        default = self.registry.default_version(name)
        for version in [*sorted(v for v in versions if v != default), default]:
            await self.unregister(name, version)

    async def stop(self) -> None:
        for handle in list(self.registry):
            await handle.stop()


def _check_counts(**values: int | None) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if value < 0 or value > (MAX_WORKERS_PER_MODEL if "worker" in key else 1 << 31):
            bound = MAX_WORKERS_PER_MODEL if "worker" in key else 1 << 31
            raise InvalidInput(f"{key}={value}: expected an integer from 0 to {bound}")
