"""The service under Ray Serve: the same FastAPI app in several replicas behind Ray's HTTP proxy.

Each replica builds the app itself (``create_app``), so it runs the lifespan once, loads its own
models and opens the service database like a uvicorn worker does. Replicas share the service
database (PostgreSQL by URL on a cluster; a SQLite file on one machine) and the cases folder, which
every node must mount at the same path.

The secret never travels with the deployment: each replica reads ``HEROES_SECRET_KEY`` (or the
secret file) on its node. An embedded Ray started here passes the environment on to its workers.

    heroes serve --root CASES --ray --replicas 4              # embedded Ray on this machine
    HEROES_RAY__ADDRESS=auto heroes serve --root CASES --ray  # join a running cluster
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI

from heroes.config import Settings
from heroes.serving.settings import ServeSettings

APP_NAME = "heroes"


class HeroesReplica:
    """One replica: keeps the settings (without the secret) and builds the app on its node."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def __serve_build_asgi_app__(self) -> FastAPI:
        from heroes.serving.app import create_app

        return create_app(ServeSettings(**self.settings))


def build(settings: ServeSettings, replicas: int, num_cpus: float = 1.0) -> Any:
    """The Ray Serve application: ``replicas`` copies of the app, ``num_cpus`` each."""
    from ray import serve

    ingress = serve.ingress()(HeroesReplica)
    deployment = serve.deployment(
        ingress,
        name="heroes",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
    )
    shared = settings.model_dump(mode="json", exclude={"secret_key"})
    return deployment.bind(shared)


def start(
    settings: ServeSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 2,
    num_cpus: float = 1.0,
    core: Settings | None = None,
) -> None:
    """Start (or join) Ray, then deploy the app with its HTTP proxy on ``host:port``."""
    import ray
    from ray import serve

    settings.secret()  # refuse before anything starts
    core = core or Settings()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        if core.ray.address:
            env = {
                k: v
                for k, v in os.environ.items()
                if k.startswith("HEROES_SERVE_") and k != "HEROES_SERVE_SECRET_KEY"
            }
            ray.init(
                address=core.ray.address,
                runtime_env={"env_vars": env} if env else None,
                logging_level="WARNING",
            )
        else:
            from heroes.pipeline.raypass import ray_temp_dir

            assert settings.root is not None
            tmp = ray_temp_dir(settings.root, core)
            tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
            ray.init(
                num_cpus=core.ray.cpus or os.cpu_count() or 1,
                include_dashboard=False,
                _temp_dir=str(tmp),
                logging_level="WARNING",
            )
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(settings, replicas, num_cpus), name=APP_NAME, route_prefix="/")


def run(
    *, host: str, port: int, replicas: int, settings: ServeSettings, num_cpus: float = 1.0
) -> None:
    """``heroes serve --ray``: deploy, then wait until interrupted and take the app down."""
    from ray import serve

    start(settings, host=host, port=port, replicas=replicas, num_cpus=num_cpus)
    print(f"heroes under Ray Serve: http://{host}:{port} ({replicas} replicas); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()
