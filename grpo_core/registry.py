"""Named registries for plug points (rewards, advantage estimators, loss aggregations,
optimizers, schedules): a plain dict plus a decorator that fills it."""
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def make_registry(kind: str) -> tuple[dict[str, Callable], Callable[[str], Callable[[F], F]]]:
    """(table, register): `@register("name")` adds a function to `table`, once per name."""
    table: dict[str, Callable] = {}

    def register(name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in table:
                raise ValueError(f"{kind} {name!r} is registered twice")
            table[name] = fn
            return fn

        return add

    return table, register
