"""Money leaves the service exact and without padding: the database's NUMERIC(38, 18) zeros are dropped."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.money import tidy
from tests.conftest import app_database


@pytest.mark.parametrize(
    ("stored", "wire"),
    [
        ("0.003250000000000000", "0.00325"),
        ("0E-18", "0"),
        ("100.000000000000000000", "100"),
        ("12.5", "12.5"),
        ("0.000000050000000000", "5E-8"),
    ],
)
def test_tidy_drops_only_zeros(stored: str, wire: str) -> None:
    assert str(tidy(Decimal(stored))) == wire
    assert tidy(Decimal(stored)) == Decimal(stored)


async def test_numeric_columns_read_back_tidy_and_exact(database_pool: None) -> None:
    [row] = await app_database().fetch(
        "SELECT 0.00325::numeric(38, 18) AS cost, 0::numeric(38, 18) AS zero, $1::numeric(38, 18) AS param",
        Decimal("0.00000005"),
    )
    assert (str(row["cost"]), str(row["zero"]), row["param"]) == ("0.00325", "0", Decimal("0.00000005"))
