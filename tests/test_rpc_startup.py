"""Broken wiring between the registry and the controllers fails at start-up, loudly, naming the culprit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from litestar import Litestar

from schemas import system
from schemas.registry import Access, Registry, subscription
from schemas.router import APP_REGISTRY
from schemas.system import ClockEvent, ClockInput, HealthOutput, WhoAmIOutput
from server.app import CONTROLLERS
from server.procedures.system import SystemController
from server.rpc import CallContext, ProcedureController, RpcConfig, Tracked, implements, rpc_router, tracked
from tests.rpc_testing import SYSTEM_PROCEDURES, InMemoryAuthenticator

SYSTEM_REGISTRY = Registry(SYSTEM_PROCEDURES)


def mount(*controllers: type[ProcedureController], registry: Registry = SYSTEM_REGISTRY) -> None:
    rpc_router(list(controllers), registry, InMemoryAuthenticator(), RpcConfig())


class HealthOnly(ProcedureController):
    namespace = "system"

    @implements(system.HEALTH)
    async def health(self, ctx: CallContext[object], input: None) -> HealthOutput:
        return HealthOutput(status="ok", version="1", database="ok")


def test_the_app_registry_mounts_on_the_app_controllers() -> None:
    mount(*CONTROLLERS, registry=APP_REGISTRY)


def test_procedure_without_handler_fails() -> None:
    with pytest.raises(RuntimeError, match=r"procedures without a handler: system\.whoami, system\.clock"):
        mount(HealthOnly)


def test_procedure_with_two_handlers_in_two_controllers_fails() -> None:
    with pytest.raises(RuntimeError, match=r"'system\.health' has two handlers: SystemController\.health and"):
        mount(SystemController, HealthOnly)


def test_procedure_with_two_handlers_in_one_controller_fails() -> None:
    with pytest.raises(TypeError, match=r"'system\.health' has two handlers in .*Twice: health and again"):

        class Twice(ProcedureController):
            namespace = "system"

            @implements(system.HEALTH)
            async def health(self, ctx: CallContext[object], input: None) -> HealthOutput:
                raise NotImplementedError

            @implements(system.HEALTH)
            async def again(self, ctx: CallContext[object], input: None) -> HealthOutput:
                raise NotImplementedError


def test_handler_outside_the_registry_fails() -> None:
    with pytest.raises(RuntimeError, match=r"HealthOnly\.health implements 'system\.health', which is not in the"):
        mount(HealthOnly, registry=Registry((system.WHOAMI,)))


def test_handler_outside_its_namespace_fails() -> None:
    with pytest.raises(TypeError, match=r"outside the controller's namespace 'chat'"):

        class Elsewhere(ProcedureController):
            namespace = "chat"

            @implements(system.HEALTH)
            async def health(self, ctx: CallContext[object], input: None) -> HealthOutput:
                raise NotImplementedError


def test_controller_without_namespace_fails() -> None:
    with pytest.raises(TypeError, match="must set `namespace`"):

        class Nameless(ProcedureController):
            pass


def test_wrong_input_type_fails() -> None:
    class WrongInput(ProcedureController):
        namespace = "system"

        @implements(system.HEALTH)  # type: ignore[arg-type]
        async def health(self, ctx: CallContext[object], input: ClockInput) -> HealthOutput:
            raise NotImplementedError

    with pytest.raises(RuntimeError, match=r"WrongInput\.health .* `input` must be annotated None, not ClockInput"):
        mount(WrongInput, registry=Registry((system.HEALTH,)))


def test_wrong_output_type_fails() -> None:
    class WrongOutput(ProcedureController):
        namespace = "system"

        @implements(system.WHOAMI)  # type: ignore[arg-type]
        async def whoami(self, ctx: CallContext[object], input: None) -> HealthOutput:
            raise NotImplementedError

    with pytest.raises(RuntimeError, match="must return WhoAmIOutput, not HealthOutput"):
        mount(WrongOutput, registry=Registry((system.WHOAMI,)))


def test_context_must_be_a_call_context() -> None:
    class WrongContext(ProcedureController):
        namespace = "system"

        @implements(system.WHOAMI)  # type: ignore[arg-type]
        async def whoami(self, ctx: object, input: None) -> WhoAmIOutput:
            raise NotImplementedError

    with pytest.raises(RuntimeError, match=r"`ctx` must be annotated CallContext\[\.\.\.\]"):
        mount(WrongContext, registry=Registry((system.WHOAMI,)))


def test_subscription_must_be_an_async_generator_of_its_events() -> None:
    class NotAGenerator(ProcedureController):
        namespace = "system"

        @implements(system.CLOCK)
        async def clock(self, ctx: CallContext[object], input: ClockInput) -> ClockEvent:  # type: ignore[type-var]
            raise NotImplementedError

    with pytest.raises(RuntimeError, match="a subscription handler must be an async generator"):
        mount(NotAGenerator, registry=Registry((system.CLOCK,)))

    class WrongEvents(ProcedureController):
        namespace = "system"

        @implements(system.CLOCK)  # type: ignore[arg-type]
        async def clock(self, ctx: CallContext[object], input: ClockInput) -> AsyncIterator[HealthOutput]:
            yield HealthOutput(status="ok", version="1", database="ok")

    with pytest.raises(RuntimeError, match=r"must return AsyncIterator\[Tracked\[ClockEvent\]\] \(its input takes"):
        mount(WrongEvents, registry=Registry((system.CLOCK,)))


def test_resumable_subscription_must_yield_tracked_events() -> None:
    class Untracked(ProcedureController):
        namespace = "system"

        @implements(system.CLOCK)
        async def clock(self, ctx: CallContext[object], input: ClockInput) -> AsyncIterator[ClockEvent]:
            yield ClockEvent(seq=1, at=datetime.now(UTC))

    with pytest.raises(RuntimeError, match=r"not AsyncIterator\[ClockEvent\]"):
        mount(Untracked, registry=Registry((system.CLOCK,)))


TICKS = subscription("system.ticks", None, ClockEvent, Access.PUBLIC, "A subscription that cannot resume.")


def test_subscription_without_last_event_id_yields_plain_events() -> None:
    assert system.CLOCK.resumable
    assert not TICKS.resumable

    class Plain(ProcedureController):
        namespace = "system"

        @implements(TICKS)
        async def ticks(self, ctx: CallContext[object], input: None) -> AsyncIterator[ClockEvent]:
            yield ClockEvent(seq=1, at=datetime.now(UTC))

    mount(Plain, registry=Registry((TICKS,)))

    class Tracking(ProcedureController):
        namespace = "system"

        @implements(TICKS)
        async def ticks(self, ctx: CallContext[object], input: None) -> AsyncIterator[Tracked[ClockEvent]]:
            yield tracked("1", ClockEvent(seq=1, at=datetime.now(UTC)))

    with pytest.raises(RuntimeError, match=r"must return AsyncIterator\[ClockEvent\] \(its input has no lastEventId\)"):
        mount(Tracking, registry=Registry((TICKS,)))


def test_controller_mounted_without_rpc_router_fails() -> None:
    with pytest.raises(RuntimeError, match=r"must be mounted with server\.rpc\.rpc_router"):
        Litestar(route_handlers=[SystemController])
