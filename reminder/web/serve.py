"""Serving the answers web with uvicorn: one configuration for `reminder web` and tests."""

from __future__ import annotations

import os

import uvicorn

from reminder.rules import Rules
from reminder.settings import Config
from reminder.store.db import Store
from reminder.web.app import create_app


def server(config: Config, store: Store, planning: Rules) -> uvicorn.Server:
    web = config.settings.web
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config, store, planning),
            host=web.host,
            port=web.port,
            log_level=os.environ.get("REMINDER_LOG_LEVEL", "warning").lower(),
            access_log=False,  # the URLs are capability links: never written to a log
            proxy_headers=True,  # the client's address from a reverse proxy on loopback
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
    )
