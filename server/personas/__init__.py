"""``personas.generate``: personas from lead data, one picture each, the whole set cached per user and input."""

from server.personas.service import PersonaService

__all__ = ("PersonaService",)
