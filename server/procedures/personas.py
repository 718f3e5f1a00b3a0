"""The ``personas`` namespace. Thin: the logic lives in ``PersonaService``."""

from __future__ import annotations

from schemas import personas
from schemas.personas import GeneratePersonasInput, GeneratePersonasOutput
from server.personas.service import SEQUENTIAL_MODEL_CALLS
from server.rpc import CallContext, ProcedureController, implements
from server.services import Services

__all__ = ("PersonasController",)


class PersonasController(ProcedureController):
    namespace = "personas"

    @implements(personas.GENERATE, deduplicate=True, model_calls=SEQUENTIAL_MODEL_CALLS, signed_urls=True)
    async def generate(self, ctx: CallContext[Services], input: GeneratePersonasInput) -> GeneratePersonasOutput:
        return await ctx.services.personas.generate(ctx.user.user_id, input)
