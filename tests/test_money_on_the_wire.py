"""Every amount leaves the service in one spelling, read from the raw HTTP body (the Python client would parse it).

One gpt-4o-mini input token costs $0.00000015: the smallest amounts are where ``Decimal``'s own ``str`` switches to
exponent form (``1.5E-7``), so they go through every path that reports money — the chat call report, the
conversation's totals, the model distribution, the admin rows and aggregates.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from server.simulator import RunningSimulator, ScriptedResponse, ScriptedUsage
from server.users import NewUser, create_user
from tests.conftest import ServedApp

ONE_TOKEN: str = "0.00000015"
MONEY: re.Pattern[str] = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")


def _amounts(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every ``...Usd`` string in a JSON value (and the strings inside ``...Usd`` objects), with where it was."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key.endswith(("Usd", "UsdPerMillionTokens")):
                if isinstance(item, str):
                    found.append((where, item))
                elif isinstance(item, dict):
                    found.extend((f"{where}.{k}", v) for k, v in item.items() if isinstance(v, str))
            else:
                found.extend(_amounts(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_amounts(item, f"{path}[{index}]"))
    return found


async def _get(http: httpx.AsyncClient, path: str, key: str, input: dict[str, Any] | None = None) -> Any:
    params = {"input": json.dumps(input)} if input is not None else {}
    response = await http.get(f"/trpc/{path}", params=params, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["result"]["data"]


async def test_one_token_costs_a_plain_decimal_string_everywhere(
    app_server: ServedApp, sim: RunningSimulator, alice: NewUser
) -> None:
    root = await create_user("root", is_admin=True)
    sim.state.enqueue(ScriptedResponse(provider="openai", usage=ScriptedUsage(prompt=1, completion=0)))
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        response = await http.post(
            "/trpc/chat.sendMessage",
            json={"message": "hi", "model": "gpt-4o-mini"},
            headers={"authorization": f"Bearer {alice.api_key}"},
        )
        assert response.status_code == 200, response.text
        sent = response.json()["result"]["data"]
        assert f'"costUsd":"{ONE_TOKEN}"' in response.text
        assert f'"totalCostUsd":"{ONE_TOKEN}"' in response.text
        conversation_id = sent["conversationId"]

        reads = {
            "chat.sendMessage": sent,
            "chat.getConversation": await _get(
                http, "chat.getConversation", alice.api_key, {"conversationId": conversation_id}
            ),
            "chat.listConversations": await _get(http, "chat.listConversations", alice.api_key),
            "admin.getConversationCost": await _get(
                http, "admin.getConversationCost", root.api_key, {"conversationId": conversation_id}
            ),
            "admin.usageByModel": await _get(http, "admin.usageByModel", root.api_key),
            "admin.usageByProcedure": await _get(http, "admin.usageByProcedure", root.api_key),
            "admin.topConversationsByCost": await _get(http, "admin.topConversationsByCost", root.api_key),
        }

    for procedure, data in reads.items():
        amounts = _amounts(data)
        assert amounts, f"{procedure} reports no amount"
        bad = [(where, text) for where, text in amounts if not MONEY.match(text)]
        assert not bad, f"{procedure}: {bad}"
        assert ONE_TOKEN in {text for _, text in amounts}, f"{procedure}: {amounts}"
    [row] = reads["admin.getConversationCost"]["rows"]
    assert row["costsUsd"] == {
        "input": ONE_TOKEN,
        "cacheRead": "0",
        "cacheWrite5m": "0",
        "cacheWrite1h": "0",
        "output": "0",
        "outputImage": "0",
    }
    assert row["ratesUsdPerMillionTokens"]["input"] == "0.15"
    assert row["ratesUsdPerMillionTokens"]["output"] == "0.6"
    assert row["ratesUsdPerMillionTokens"]["outputImage"] == "0.6"
