"""Event loop selection: uvloop when installed (about twice asyncio's speed per frame)."""

from __future__ import annotations

import asyncio


def install_uvloop() -> bool:
    """Make new event loops uvloop loops; False when uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
