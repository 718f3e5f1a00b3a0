"""The admin console: server-rendered pages at ``/console`` over the same query helpers as the ``admin.*``
procedures, signed in with an admin API key. Templates and static files ship inside this package (no build step, no
network); the spend chart is SVG drawn on the server (``chart``)."""

from server.console.app import console_handlers, console_template_config
from server.console.sessions import ConsoleSessions

__all__ = ("ConsoleSessions", "console_handlers", "console_template_config")
