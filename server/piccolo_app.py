"""The single Piccolo app; its migrations live in the top-level ``piccolo_migrations`` folder."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from server.tables import AiUsageLog, CallClaim, Conversation, Message, StreamRequest, User

APP_CONFIG = AppConfig(
    app_name="server",
    migrations_folder_path=str(Path(__file__).resolve().parent.parent / "piccolo_migrations"),
    table_classes=[User, Conversation, Message, AiUsageLog, StreamRequest, CallClaim],
    migration_dependencies=[],
    commands=[],
)
