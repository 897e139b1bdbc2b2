"""What a request cost: tokens times the config's price table (`prices:`), in the table's
currency. One function, so that the ledger and the budgets can never disagree."""

from __future__ import annotations

from collections.abc import Mapping

from tidegate.events import Usage
from tidegate.settings import Price

PER_TOKENS = 1_000_000


def price_for(
    prices: Mapping[str, Price], model: str, deployment: str | None = None
) -> Price | None:
    """The price of a deployment's key if listed, else of the client-facing model, else None."""
    if deployment is not None and deployment in prices:
        return prices[deployment]
    return prices.get(model)


def cost(price: Price | None, usage: Usage) -> float:
    """The cost of `usage` at `price` (0.0 without a price). Cache reads and writes are billed
    at their own prices when set, else at the input price; `input_tokens` includes them."""
    if price is None:
        return 0.0
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    plain_input = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
    total = (
        plain_input * price.input
        + usage.cache_read_tokens * read
        + usage.cache_write_tokens * write
        + usage.output_tokens * price.output
    )
    return total / PER_TOKENS
