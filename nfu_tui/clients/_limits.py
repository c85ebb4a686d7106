"""A cap on HTTP response bodies, shared by both clients.

httpx reads a whole body into memory. :func:`body_cap` is a response event hook that
refuses a body announced (``Content-Length``) or streamed beyond ``limit`` bytes, so a
broken or hostile server cannot make nfu-tui allocate gigabytes: the request fails
with the client's own error type instead, after at most ``limit`` bytes were read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from nfu_tui.errors import NfuError


def _mib(limit: int) -> str:
    return f"{limit / (1 << 20):g} MiB"


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, fail: Callable[[], NfuError]) -> None:
        self._inner, self._limit, self._fail = inner, limit, fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise self._fail()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def body_cap(
    limit: int, error: Callable[[str], NfuError], service: str
) -> Callable[[httpx.Response], Awaitable[None]]:
    """A response hook: bodies over ``limit`` bytes raise ``error(message)``."""

    async def hook(response: httpx.Response) -> None:
        request = response.request
        message = (f"{service}'s answer to {request.method} {request.url.path} is larger than {_mib(limit)}; "
                   "refused (nfu-tui reads at most that much)")
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            await response.aclose()
            raise error(message)
        response.stream = _CappedStream(response.stream, limit, lambda: error(message))  # type: ignore[arg-type]

    return hook
