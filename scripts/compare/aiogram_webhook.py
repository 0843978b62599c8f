"""aiogram 3 in webhook mode with its defaults, under the flood workload.

The comparison for docs/webhooks.md: aiogram's SimpleRequestHandler answers each
request at once and handles the update in the background (handle_in_background=True,
its default), which is `handle_as_tasks` again. Each handler touches W KiB and holds it
for T ms, like the flood demo's. The process exits after N updates were handled, or
after 5 s without one, and prints one JSON line: handled, drain_s (first request to last
handled), peak_rss_bytes (VmHWM).

    python3 scripts/compare/aiogram_webhook.py --listen 127.0.0.1:8081 --updates 20000 \
        --work-kib 256 --work-ms 200 [--secret S]
"""

import argparse
import asyncio
import json
import os
import sys
import time

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web


def vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:8081")
    p.add_argument("--updates", type=int, default=20000)
    p.add_argument("--work-kib", type=int, default=256)
    p.add_argument("--work-ms", type=int, default=200)
    p.add_argument("--secret", default=os.environ.get("TELEGRAM_WEBHOOK_SECRET"))
    a = p.parse_args()

    bot = Bot("123456:aiogram-compare-token")
    dp = Dispatcher()
    state = {"handled": 0, "first": None, "last": time.monotonic()}
    done = asyncio.Event()

    # Every update, whatever its kind, runs the work: an outer middleware on the update
    # observer (a handler on `dp.update` would never run: the dispatcher's own one, which
    # routes to `message`, `callback_query`, ... handlers, comes first).
    @dp.update.outer_middleware()
    async def handle(handler, update: Update, data) -> None:
        if state["first"] is None:
            state["first"] = time.monotonic()
        buf = bytearray(a.work_kib * 1024)
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        await asyncio.sleep(a.work_ms / 1000)
        del buf
        state["handled"] += 1
        state["last"] = time.monotonic()
        if state["handled"] >= a.updates:
            done.set()
        return await handler(update, data)

    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=a.secret).register(app, path="/")
    runner = web.AppRunner(app)
    await runner.setup()
    host, port = a.listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    print(json.dumps({"event": "listening", "addr": a.listen}), flush=True)

    started = time.monotonic()
    last_report = started
    while not done.is_set():
        if time.monotonic() - last_report >= 1:
            last_report = time.monotonic()
            print(json.dumps({"event": "progress", "handled": state["handled"], "tasks": len(asyncio.all_tasks())}), file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(done.wait(), timeout=0.5)
        except asyncio.TimeoutError:
            pass
        idle_since = state["last"] if state["first"] is not None else started
        if time.monotonic() - idle_since > 5 and state["first"] is not None:
            break
    first = state["first"] or started
    print(json.dumps({
        "framework": "aiogram " + __import__("aiogram").__version__,
        "handled": state["handled"],
        "drain_s": state["last"] - first,
        "peak_rss_bytes": vm_hwm(),
    }), flush=True)
    await runner.cleanup()
    await bot.session.close()


if __name__ == "__main__":
    asyncio.run(main())
