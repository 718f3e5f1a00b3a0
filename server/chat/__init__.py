"""The chat domain: sending messages, running actions and summarising e-mail through the LLM core."""

from server.chat.service import ChatService

__all__ = ["ChatService"]
