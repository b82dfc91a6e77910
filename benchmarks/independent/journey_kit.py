"""Writing one visitor's session: a clock, the events so far and the truth episodes.

The persona scripts (``shop_personas``, ``travel_personas``, ``b2b_personas``) drive a
:class:`Visit` page by page; it turns "read this page for a while", "fill these fields" or
"leave for another tab" into contract events with epoch-millisecond times. Timings follow
``PERSONAS.md``: Weibull dwell (Liu, White and Dumais, SIGIR 2010), log-normal loads and think
times. Stdlib only; all randomness comes from the :class:`random.Random` handed in.

>>> import random
>>> v = Visit(random.Random(1), "s1", 1_767_225_600_000, mobile=False)
>>> load_ms = v.view("/p/blue-kettle-101", "product")
>>> v.read(30.0, ["button#add-to-bag"])
>>> v.events[0]["type"], v.events[0]["page_type"], v.now > 1_767_225_600_000
('page_view', 'product', True)
>>> v.leave()
>>> all(a["ts"] < b["ts"] for a, b in zip(v.events, v.events[1:]))
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]

#: Longest silence written inside one session, in seconds: under the detector's 30 minute
#: session timeout, so a session is never split by the generator itself.
MAX_SILENCE_S = 25 * 60


class Visit:
    """One session being written.

    Parameters
    ----------
    rng
        The session's own random source (seeded by the caller).
    session_id
        Contract ``session_id``.
    start_ms
        Arrival time, epoch milliseconds.
    mobile
        Phone visitor: shorter dwell, slower loads, narrow viewport, more scroll events.
    goal
        The site's goal event type (``purchase``, or ``form_submit`` for lead generation).
    """

    def __init__(
        self,
        rng: random.Random,
        session_id: str,
        start_ms: int,
        mobile: bool,
        goal: str = "purchase",
    ) -> None:
        self.rng = rng
        self.goal = goal
        self.session_id = session_id
        self.now = start_ms
        self.mobile = mobile
        self.events: list[Event] = []
        self.episodes: list[dict[str, Any]] = []
        self.page = ""
        self.page_type = ""
        self.converted = False
        self.departed = False
        self._open: dict[str, dict[str, Any]] = {}

    # -- time -------------------------------------------------------------------------------

    def dwell(self, scale_s: float, shape: float = 0.9, low: float = 2.0) -> float:
        """A page dwell in seconds: Weibull(scale, shape), x0.7 on mobile, in [low, 20 min]."""
        scale = scale_s * (0.7 if self.mobile else 1.0)
        return min(max(self.rng.weibullvariate(scale, shape), low), 20 * 60.0)

    def think(self, median_s: float = 4.0) -> float:
        """Think time between two actions in seconds: log-normal, sigma 0.7."""
        return min(self.rng.lognormvariate(math.log(median_s), 0.7), 180.0)

    def wait(self, seconds: float) -> None:
        """Advance the clock without sending anything (at least 1 ms, at most 25 min)."""
        self.now += max(1, int(min(seconds, MAX_SILENCE_S) * 1000))

    def load_ms(self, slow: bool = False) -> int:
        """A page load time in ms: log-normal around 1.6 s (2.6 s mobile), or 7-25 s when slow."""
        if slow:
            return int(self.rng.uniform(7_000, 25_000))
        median = 2_600 if self.mobile else 1_600
        return int(min(self.rng.lognormvariate(math.log(median), 0.5), 30_000))

    # -- events -----------------------------------------------------------------------------

    def emit(self, etype: str, **props: Any) -> Event:
        """Send one event now, on the current page; the clock moves on by 1 ms."""
        event: Event = {
            "session_id": self.session_id,
            "ts": self.now,
            "type": etype,
            "event_id": f"{self.session_id}:{len(self.events)}",
        }
        if self.page:
            event["page"] = self.page
            event["page_type"] = self.page_type
        if props:
            event["props"] = props
        self.events.append(event)
        if etype == self.goal:
            self.converted = True
        self.now += 1
        return event

    def view(self, page: str, page_type: str, slow: bool = False) -> int:
        """Open a page: a ``page_view`` with ``load_ms``; the clock passes the load time.

        Returns the load time in ms.
        """
        self.page, self.page_type = page, page_type
        load = self.load_ms(slow)
        self.emit("page_view", load_ms=load)
        self.wait(load / 1000.0)
        return load

    def _xy(self) -> dict[str, int]:
        width, height = (390, 840) if self.mobile else (1440, 900)
        return {"x": self.rng.randrange(8, width - 8), "y": self.rng.randrange(60, height)}

    def click(self, target: str, dead: bool = False) -> None:
        """One click on ``target`` (a CSS-like selector of this site)."""
        if dead:
            self.emit("click", target=target, dead=True, **self._xy())
        else:
            self.emit("click", target=target, **self._xy())

    def rage(self, target: str) -> None:
        """A rage-click burst: 4-8 clicks 90-300 ms apart within a few px of one spot."""
        spot = self._xy()
        for _ in range(self.rng.randint(4, 8)):
            jitter = {k: v + self.rng.randint(-6, 6) for k, v in spot.items()}
            self.emit("click", target=target, dead=True, **jitter)
            self.now += self.rng.randint(90, 300)

    def read(
        self,
        seconds: float,
        targets: list[str] | tuple[str, ...] = (),
        clicks: int | None = None,
        scroll: bool = True,
    ) -> None:
        """Spend ``seconds`` on the current page: scrolls at growing depth and a few clicks.

        Events are spread over the dwell at random times; the clock ends at the dwell's end.
        ``clicks`` defaults to 0-2 (on ``targets``); mobile sends more scroll events.
        """
        end = self.now + int(seconds * 1000)
        n_scrolls = self.rng.randint(0, 6 if self.mobile else 3) if scroll else 0
        n_clicks = (self.rng.randint(0, 2) if clicks is None else clicks) if targets else 0
        kinds = ["scroll"] * n_scrolls + ["click"] * n_clicks
        self.rng.shuffle(kinds)
        depth_cap = min(100.0, 20 + seconds * 2.5)
        depths = iter(sorted(int(self.rng.uniform(10, depth_cap)) for _ in range(n_scrolls)))
        start = self.now
        times = sorted(start + int(self.rng.uniform(0.05, 0.95) * (end - start)) for _ in kinds)
        for at, kind in zip(times, kinds, strict=True):
            self.now = max(self.now, at)
            if kind == "scroll":
                self.emit("scroll", scroll_pct=next(depths))
            else:
                self.click(self.rng.choice(list(targets)))
        self.now = max(self.now, end)

    def search(self, query_results: int) -> None:
        """A site search that returned ``query_results`` hits (typed, so a think first)."""
        self.wait(self.think(3.0))
        self.emit("search", value=query_results, target="input#site-search")

    def fill(
        self,
        fields: list[str] | tuple[str, ...],
        step: int | str = 1,
        autofill: bool = False,
        errors: dict[str, str] | None = None,
        site_fault: bool = False,
    ) -> None:
        """Fill a form: focus and input per field; ``errors`` maps field -> error text.

        A field in ``errors`` gets a ``form_error`` after its input (the visitor then re-types
        it, which is another input). Typing takes 2-15 s per field, 0.3-1 s with autofill.
        ``site_fault``: the errors are the site's doing, so the first starts a friction episode.
        """
        for field in fields:
            self.emit("form_focus", field=field, step=step)
            self.wait(self.rng.uniform(0.3, 1.0) if autofill else self.think(5.0))
            self.emit("form_input", field=field, step=step)
            if errors and field in errors:
                self.wait(self.rng.uniform(0.3, 1.5))
                if site_fault:
                    self.begin("friction")
                self.emit("form_error", field=field, step=step, error=errors[field])
                self.wait(self.think(6.0))
                self.emit("form_input", field=field, step=step)
            self.wait(self.rng.uniform(0.3, 2.0))

    def away(self, seconds: float) -> None:
        """Another tab for ``seconds``: ``visibility`` hidden, silence, visible."""
        self.emit("visibility", state="hidden")
        self.wait(seconds)
        self.emit("visibility", state="visible")

    # -- episodes and the end ---------------------------------------------------------------

    def begin(self, kind: str) -> None:
        """Start a truth episode (``hesitation`` or ``friction``) now, unless one is open."""
        if kind not in self._open:
            self._open[kind] = {"kind": kind, "start_ts": self.now, "end_ts": self.now}

    def end(self, kind: str) -> None:
        """Close the open episode of ``kind`` now (the visitor moved past it)."""
        episode = self._open.pop(kind, None)
        if episode is not None:
            episode["end_ts"] = self.now
            self.episodes.append(episode)

    def leave(self, exit_event: bool | None = None) -> None:
        """Depart now: close open episodes at this moment, maybe send ``exit``.

        ``exit_event`` None draws it: 45% on desktop, 20% on mobile (PERSONAS.md).
        """
        if self.departed:
            return
        if exit_event is None:
            exit_event = self.rng.random() < (0.2 if self.mobile else 0.45)
        if exit_event:
            self.emit("exit")
        for kind in list(self._open):
            self.end(kind)
        self.departed = True

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.rng.random() < p


#: A persona's script: plays one session on the Visit it is given.
Script = Callable[[Visit], None]


class Persona:
    """A kind of visitor: its share of traffic, device mix and the script that plays it.

    ``may_hesitate`` / ``may_frustrate`` say whether the script can write a hesitation or
    friction episode (PERSONAS.md); whether a given session has one is in its truth.
    """

    def __init__(
        self,
        name: str,
        share: float,
        mobile: float,
        script: Script,
        may_hesitate: bool = False,
        may_frustrate: bool = False,
    ) -> None:
        self.name = name
        self.share = share
        self.mobile = mobile
        self.script = script
        self.may_hesitate = may_hesitate
        self.may_frustrate = may_frustrate

    def __repr__(self) -> str:
        return f"Persona({self.name!r}, share={self.share})"
