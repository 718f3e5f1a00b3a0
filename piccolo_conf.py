"""Piccolo's configuration: the engine over asyncpg and the one app, ``server``."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from server.database import engine_config

DB = PostgresEngine(config=engine_config())

APP_REGISTRY = AppRegistry(apps=["server.piccolo_app"])
