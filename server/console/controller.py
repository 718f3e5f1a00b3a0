"""The console's routes under ``/console``: sign-in and sign-out, the pages, the budget forms, CSV exports.

Every page but the sign-in form needs a session (``server.console.sessions``): without one a GET is redirected to
the sign-in form and anything else is 401. Every POST must come from the console itself: a browser's
``Sec-Fetch-Site`` other than ``same-origin`` (or ``none``, typed by the user), or an ``Origin`` whose host is not
this one, is refused (403) before anything else; and, once signed in, the form's ``csrf_token`` must be the
session's. Pages are never cached and may not be framed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from schemas import codec
from schemas.budgets import SetBudgetInput
from schemas.validation import InvalidInput
from server.budgets import service as budgets
from server.console import pages
from server.console.sessions import COOKIE_NAME, Admin, ConsoleSessions
from server.console.tables import Table, csv_of
from server.database import Database
from server.errors import NotFoundError, ServiceUnavailableError
from server.services import Services

__all__ = ("BASE", "SECURITY_HEADERS", "ConsoleController", "NotSignedIn", "Refused")

BASE: Final = "/console"
SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}
_SET_BUDGET: Final = codec.decoder(SetBudgetInput)

AnyRequest = Request[Any, Any, Any]
TablePage = Callable[[Database, pages.Window], Awaitable[dict[str, Any]]]


class NotSignedIn(Exception):
    """No valid session cookie came with the request."""


class Refused(Exception):
    """A state-changing request that did not come from a console page (CSRF)."""


def _services(request: AnyRequest) -> Services:
    services: Services = request.app.state["services"]
    return services


def _sessions(request: AnyRequest) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state["console_sessions"]
    return sessions


async def _admin(request: AnyRequest) -> Admin:
    admin = await _sessions(request).admin(request.cookies.get(COOKIE_NAME))
    if admin is None:
        raise NotSignedIn
    return admin


def _check_origin(request: AnyRequest) -> None:
    """Refuse a request another site made the browser send: by ``Sec-Fetch-Site``, else by ``Origin``."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(f"a {site} request")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Refused("a request from another origin")


async def _form(request: AnyRequest, admin: Admin | None) -> dict[str, str]:
    """The posted form, after the origin check and, when signed in, the CSRF token's."""
    _check_origin(request)
    form = await request.form()
    fields = {key: str(value) for key, value in form.items()}
    if admin is not None and not _sessions(request).csrf_valid(admin, fields.get("csrf_token")):
        raise Refused("a form without this session's token")
    return fields


def _query(request: AnyRequest) -> dict[str, str]:
    return {key: str(value) for key, value in request.query_params.items()}


def _page(
    request: AnyRequest, template: str, admin: Admin, context: dict[str, Any], window: pages.Window | None
) -> Template:
    return Template(
        template_name=template,
        context={
            "base": BASE,
            "admin": admin,
            "window": window,
            "request_path": request.url.path,
            "query": _query(request),
            **context,
        },
        headers=SECURITY_HEADERS,
    )


def _export(request: AnyRequest, tables: Mapping[str, Table]) -> Response[str] | None:
    """The CSV of the table ``?export=`` names, if any."""
    name = request.query_params.get("export")
    if name is None:
        return None
    table = tables.get(name)
    if table is None:
        raise InvalidInput("export", f"no table named {name!r} on this page")
    return Response(
        csv_of(table.rows, table.row_type),
        media_type="text/csv",  # Litestar adds "; charset=utf-8" to text types
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _arranged(request: AnyRequest, *tables: Table) -> None:
    query = _query(request)
    for table in tables:
        table.arrange(query)


def _error_page(request: AnyRequest, status_code: int, title: str, message: str) -> Response[Any]:
    return Template(
        template_name="error.html",
        context={"base": BASE, "title": title, "message": message, "status_code": status_code},
        headers=SECURITY_HEADERS,
        status_code=status_code,
    )


def _not_signed_in(request: AnyRequest, error: NotSignedIn) -> Response[Any]:
    if request.method == "GET":
        response: Response[Any] = Redirect(_sign_in_redirect(request), status_code=303)
    else:
        response = _error_page(request, 401, "Not signed in", "Sign in with an admin API key first.")
    if COOKIE_NAME in request.cookies:
        response.delete_cookie(COOKIE_NAME, path=BASE)
    return response


def _refused(request: AnyRequest, error: Refused) -> Response[Any]:
    return _error_page(request, 403, "Refused", f"This form was not sent from a console page ({error}).")


def _invalid(request: AnyRequest, error: InvalidInput) -> Response[Any]:
    return _error_page(request, 400, "Bad request", str(error))


def _not_found(request: AnyRequest, error: NotFoundError) -> Response[Any]:
    return _error_page(request, 404, "Not found", error.message)


def _unavailable(request: AnyRequest, error: ServiceUnavailableError) -> Response[Any]:
    return _error_page(request, 503, "Unavailable", error.message)


class ConsoleController(Controller):
    path = BASE
    include_in_schema = False
    exception_handlers = {  # noqa: RUF012  (Litestar reads the class attribute)
        NotSignedIn: _not_signed_in,
        Refused: _refused,
        InvalidInput: _invalid,
        NotFoundError: _not_found,
        ServiceUnavailableError: _unavailable,
    }

    # --- signing in and out -----------------------------------------------------------------------------------

    @get("/sign-in", name="console.sign_in")
    async def sign_in_form(self, request: AnyRequest) -> Template:
        return Template(
            template_name="sign_in.html",
            context={"base": BASE, "next": _safe_next(request.query_params.get("next")), "error": None},
            headers=SECURITY_HEADERS,
        )

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: AnyRequest) -> Response[Any]:
        fields = await _form(request, None)
        session = await _sessions(request).sign_in(fields.get("api_key", ""))
        if session is None:
            return Template(
                template_name="sign_in.html",
                context={
                    "base": BASE,
                    "next": _safe_next(fields.get("next")),
                    "error": "That is not an admin API key.",
                },
                headers=SECURITY_HEADERS,
                status_code=401,
            )
        response: Response[Any] = Redirect(_safe_next(fields.get("next")), status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            session.cookie,
            path=BASE,
            max_age=session.max_age_seconds,
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )
        return response

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        await _form(request, admin)
        await _sessions(request).sign_out(admin)
        response: Response[Any] = Redirect(f"{BASE}/sign-in", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=BASE)
        return response

    # --- pages ------------------------------------------------------------------------------------------------

    @get("/")
    async def overview(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        by = request.query_params.get("by", "model")
        context = await pages.overview_page(_services(request).db, window, by)
        exported = _export(request, {"buckets": context["buckets"]})
        if exported is not None:
            return exported
        _arranged(request, context["buckets"])
        return _page(request, "overview.html", admin, context, window)

    @get("/conversations")
    async def conversations(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        find = request.query_params.get("conversationId", "").strip()
        if find:
            try:
                conversation_id = uuid.UUID(find)
            except ValueError:
                raise InvalidInput("conversationId", f"{find!r} is not a conversation id") from None
            return Redirect(f"{BASE}/conversations/{conversation_id}?{window.query()}", status_code=303)
        context = await pages.conversations_page(_services(request).db, window, BASE)
        exported = _export(request, {"conversations": context["table"]})
        if exported is not None:
            return exported
        _arranged(request, context["table"])
        return _page(request, "conversations.html", admin, context, window)

    @get("/conversations/{conversation_id:uuid}")
    async def conversation(self, request: AnyRequest, conversation_id: FromPath[uuid.UUID]) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        context = await pages.conversation_page(
            _services(request).db, conversation_id, request.query_params.get("cursor") or None
        )
        tables = {name: context[name] for name in ("models", "procedures", "calls")}
        exported = _export(request, tables)
        if exported is not None:
            return exported
        _arranged(request, *tables.values())
        return _page(request, "conversation.html", admin, context, window)

    @get("/users")
    async def users(self, request: AnyRequest) -> Response[Any]:
        return await self._table_page(request, "users", pages.users_page)

    @get("/models")
    async def models(self, request: AnyRequest) -> Response[Any]:
        return await self._table_page(request, "models", pages.models_page)

    @get("/procedures")
    async def procedures(self, request: AnyRequest) -> Response[Any]:
        return await self._table_page(request, "procedures", pages.procedures_page)

    async def _table_page(self, request: AnyRequest, name: str, build: TablePage) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        context = await build(_services(request).db, window)
        exported = _export(request, {name: context["table"]})
        if exported is not None:
            return exported
        _arranged(request, context["table"])
        return _page(request, "table_page.html", admin, {**context, "page_name": name}, window)

    @get("/alerts")
    async def alerts(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        context = await pages.alerts_page(_services(request).db, request.query_params.get("cursor") or None)
        exported = _export(request, {"alerts": context["table"]})
        if exported is not None:
            return exported
        _arranged(request, context["table"])
        return _page(request, "table_page.html", admin, {**context, "page_name": "alerts"}, window)

    @get("/reprice-runs")
    async def reprice_runs(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        context = await pages.reprice_runs_page(_services(request).db, request.query_params.get("cursor") or None)
        exported = _export(request, {"runs": context["table"]})
        if exported is not None:
            return exported
        _arranged(request, context["table"])
        return _page(request, "table_page.html", admin, {**context, "page_name": "runs"}, window)

    # --- budgets ----------------------------------------------------------------------------------------------

    @get("/budgets")
    async def budget_list(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        window = pages.Window.from_query(_query(request))
        return await self._budgets(request, admin, window, error=None, form={}, status_code=200)

    async def _budgets(
        self,
        request: AnyRequest,
        admin: Admin,
        window: pages.Window,
        *,
        error: str | None,
        form: dict[str, str],
        status_code: int,
    ) -> Response[Any]:
        context = await pages.budgets_page(_services(request).db)
        exported = _export(request, {"budgets": context["table"]})
        if exported is not None:
            return exported
        _arranged(request, context["table"])
        editing = request.query_params.get("edit")
        if editing and not form:
            budget = next((b for b in context["table"].rows if str(b.budget_id) == editing), None)
            if budget is not None:
                form = {
                    "scope": budget.scope,
                    "subject_id": str(budget.subject_id or ""),
                    "period": budget.period,
                    "limit_usd": str(budget.limit_usd),
                    "hard": "on" if budget.hard else "",
                    "alert_thresholds": ", ".join(repr(t) for t in budget.alert_thresholds),
                }
        page = _page(request, "budgets.html", admin, {**context, "error": error, "form": form}, window)
        page.status_code = status_code
        return page

    @post("/budgets", status_code=303)
    async def set_budget(self, request: AnyRequest) -> Response[Any]:
        admin = await _admin(request)
        fields = await _form(request, admin)
        window = pages.Window.from_query(_query(request))
        try:
            data = _SET_BUDGET.decode(json.dumps(_budget_input(fields)))
            await budgets.set_budget(_services(request).db, data)
        except (msgspec.ValidationError, InvalidInput, NotFoundError, ValueError) as error:
            fields.setdefault("hard", "")  # an unchecked box is not posted
            message = error.message if isinstance(error, NotFoundError) else str(error)
            return await self._budgets(request, admin, window, error=message, form=fields, status_code=400)
        return Redirect(f"{BASE}/budgets?{window.query()}", status_code=303)

    @post("/budgets/{budget_id:uuid}/delete", status_code=303)
    async def delete_budget(self, request: AnyRequest, budget_id: FromPath[uuid.UUID]) -> Response[Any]:
        admin = await _admin(request)
        await _form(request, admin)
        window = pages.Window.from_query(_query(request))
        try:
            await budgets.delete_budget(_services(request).db, budget_id)
        except NotFoundError as error:
            return await self._budgets(request, admin, window, error=error.message, form={}, status_code=404)
        return Redirect(f"{BASE}/budgets?{window.query()}", status_code=303)


def _budget_input(fields: Mapping[str, str]) -> dict[str, Any]:
    """``admin.setBudget``'s input from the budget form (its JSON, so the procedure's own decoder validates it)."""
    thresholds = [part.strip() for part in fields.get("alert_thresholds", "").split(",") if part.strip()]
    data: dict[str, Any] = {
        "scope": fields.get("scope", ""),
        "period": fields.get("period", ""),
        "limitUsd": fields.get("limit_usd", "").strip(),
        "hard": fields.get("hard") == "on",
        "alertThresholds": [_number(part) for part in thresholds],
    }
    subject = fields.get("subject_id", "").strip()
    if subject and data["scope"] != "global":
        data["subjectId"] = subject
    return data


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInput("alertThresholds", f"alert thresholds are fractions such as 0.8, got {text!r}") from None


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if target and target.startswith(BASE) and not target.startswith("//") and "\\" not in target:
        return target
    return f"{BASE}/"


def _sign_in_redirect(request: AnyRequest) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{BASE}/sign-in?{urlencode({'next': target})}"
