"""An OpenADR 2.0b VTN on loopback: ``openleadr``'s own server, as a grid operator runs one."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from openleadr import OpenADRServer


class Vtn:
    """The VTN's record of what VENs did: registrations, answers to events, telemetry received."""

    def __init__(self, port: int, poll_s: float = 0.25) -> None:
        self.url = f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"
        self.registered: list[str] = []
        self.answers: dict[str, str] = {}
        self.telemetry: list[float] = []
        self.server = OpenADRServer(
            vtn_id="TESTVTN",
            http_port=port,
            requested_poll_freq=timedelta(seconds=poll_s),
            show_fingerprint=False,
        )
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._reports)

    async def _register(self, info: dict[str, Any]) -> tuple[str, str]:
        self.registered.append(str(info["ven_name"]))
        return f"ven-{len(self.registered)}", f"reg-{len(self.registered)}"

    async def _reports(self, report: dict[str, Any]) -> list[Any]:
        def collect(data: list[tuple[datetime, float]]) -> None:
            self.telemetry.extend(value for _, value in data)

        return [(d["r_id"], collect, timedelta(seconds=0.5)) for d in report["report_descriptions"]]

    def answered(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.answers[event_id] = opt_type

    def add_event(self, ven_id: str, event_id: str, **kwargs: Any) -> None:
        self.server.add_event(ven_id=ven_id, event_id=event_id, callback=self.answered, **kwargs)


@contextmanager
def vtn_in_thread(port: int) -> Iterator[Vtn]:
    """A VTN serving on its own event loop in a thread, for a VEN in another process."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Vtn] = {}

    async def start() -> None:
        box["vtn"] = Vtn(port)
        await box["vtn"].server.run()
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield box["vtn"]
    finally:
        asyncio.run_coroutine_threadsafe(box["vtn"].server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
