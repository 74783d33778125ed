"""Starting, finding and stopping the service's named actors on a Ray cluster."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from facenet_ray.config import NAMESPACE, Settings

SERVICE_ACTORS = ("coordinator", "distributor", "catalog")


def server_id_of(node_id: str) -> str:
    """A new server's id: the first 12 hex digits of its Ray node id (short enough for URLs).
    It stays the server's id when Ray restarts (see CoordinatorActor.update_server_list)."""
    return node_id[:12]


def shard_name(server_id: str) -> str:
    return f"shard-{server_id}"


def actor(name: str) -> ray.actor.ActorHandle:
    return ray.get_actor(name, namespace=NAMESPACE)


def pinned(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


class LagMonitor:
    """Measures how late an asyncio loop wakes up: the seed's "execution loop" lag, in ms."""

    def __init__(self, period_s: float = 0.05, window: int = 100) -> None:
        self.period_s = period_s
        self.samples: list[float] = []
        self.window = window

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period_s)
            late_ms = max(0.0, (time.perf_counter() - start - self.period_s) * 1000)
            self.samples.append(late_ms)
            del self.samples[: -self.window]

    def current_ms(self) -> float:
        """The worst lag over the recent window (about five seconds)."""
        return round(max(self.samples, default=0.0), 3)


def freeze_startup_objects() -> None:
    """Keep full garbage collections short in a process whose event loop must stay responsive.

    Everything alive after start-up (modules, Ray, Serve, FastAPI, pydantic) moves out of the
    collector's reach; each full pass then looks at the objects made since.
    Measured in the gateway replica: a full pass took 106 ms and showed as an 80 ms getLag
    spike, even with the service idle.
    """
    gc.collect()
    gc.freeze()


def start_service(settings: Settings) -> None:
    """Create (or find) the catalog, distributor and coordinator on this (the head) node.

    Actors are detached so that `facenet-ray up --detach` can return; each is named, so a
    second call finds the running ones instead of starting duplicates.
    """
    from facenet_ray.auth import ensure_admin_key
    from facenet_ray.catalog import Catalog
    from facenet_ray.coordinator import CoordinatorActor
    from facenet_ray.distributor import DistributorActor

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    head = pinned(ray.get_runtime_context().get_node_id())
    common = dict(
        namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=head, max_restarts=-1, num_cpus=0,
    )
    catalog = ray.remote(Catalog).options(
        name="catalog", max_task_retries=-1, **common
    ).remote(str(settings.catalog_path))
    ensure_admin_key(_SyncCatalog(catalog), settings)
    distributor = DistributorActor.options(name="distributor", **common).remote(settings)
    coordinator = CoordinatorActor.options(name="coordinator", **common).remote(settings)
    ray.get([distributor.ready.remote(), coordinator.start.remote()])


def stop_service() -> None:
    """Kill the service's actors and its shards (their files on disk stay)."""
    names = list(SERVICE_ACTORS)
    names += [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
              if a["namespace"] == NAMESPACE and a["name"].startswith(shard_name(""))]
    for name in names:
        try:
            ray.kill(actor(name), no_restart=True)
        except ValueError:
            pass


class _SyncCatalog:
    """Blocking calls to the catalog actor, for code that runs before any event loop."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle

    def __getattr__(self, method: str):
        remote = getattr(self.handle, method)
        return lambda *a, **kw: ray.get(remote.remote(*a, **kw))


def admin_key_path(settings: Settings) -> Path:
    return settings.data_dir / "admin.key"
