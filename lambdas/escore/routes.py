"""Route matching, as API Gateway does it: the one matcher of the API handlers and the local runtime.

`match_route(routes, method, path)` resolves a concrete path against route templates (API Gateway
resource paths: `/posts/{post_id}`, and greedy `{proxy+}`): a `RouteMatch` with the route and its
URL-decoded path parameters, or a `RouteMiss` saying 404 (no route has this path) or 405 (the path
exists for other methods, listed in `allowed`). A literal segment beats a parameter, left to right:
with `/users/me` and `/users/{id}`, `/users/me` matches the former.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote


class RouteLike(Protocol):
    """What matching needs of a route (escore.topology.Route is one)."""

    @property
    def method(self) -> str: ...

    @property
    def resource(self) -> str: ...


R = TypeVar("R", bound=RouteLike)


@dataclass(frozen=True)
class RouteMatch(Generic[R]):
    route: R
    path_parameters: dict[str, str]  # URL-decoded, e.g. {"post_id": "..."}

    @property
    def resource(self) -> str:
        return self.route.resource


@dataclass(frozen=True)
class RouteMiss:
    status: int  # 404: no route has this path; 405: the path exists, not for this method
    allowed: tuple[str, ...] = ()  # for 405: the methods the path has, sorted

    @property
    def error(self) -> str:
        return "not_found" if self.status == 404 else "method_not_allowed"


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment != ""]


def match_template(template: str, path: str) -> dict[str, str] | None:
    """Path parameters if `path` fits `template`, else None. `{name}` is one segment; `{name+}` the rest."""
    wanted, given = _segments(template), _segments(path)
    params: dict[str, str] = {}
    for index, part in enumerate(wanted):
        if part.startswith("{") and part.endswith("+}"):
            rest = given[index:]
            if not rest:
                return None
            params[part[1:-2]] = unquote("/".join(rest))
            return params
        if index >= len(given):
            return None
        if part.startswith("{") and part.endswith("}"):
            params[part[1:-1]] = unquote(given[index])
        elif part != given[index]:
            return None
    return params if len(wanted) == len(given) else None


def match_route(routes: Iterable[R], method: str, path: str) -> RouteMatch[R] | RouteMiss:
    """Resolve `method path` (a path without query string) against the routes' templates."""
    method = method.upper()
    fits: list[tuple[tuple[int, ...], R, dict[str, str]]] = []
    for route in routes:
        params = match_template(route.resource, path)
        if params is not None:
            rank = tuple(0 if segment.startswith("{") else 1 for segment in _segments(route.resource))
            fits.append((rank, route, params))
    if not fits:
        return RouteMiss(404)
    for _, route, params in sorted(fits, key=lambda fit: fit[0], reverse=True):
        if route.method.upper() in (method, "ANY"):
            return RouteMatch(route, params)
    return RouteMiss(405, tuple(sorted({route.method.upper() for _, route, _ in fits})))
