"""Shared builders for the core unit tests: no I/O, explicit event times."""

from __future__ import annotations

import random
from typing import Any

from detectors.config import EVENT_TYPES, DetectorConfig
from detectors.detector import Detector, StepResult
from detectors.events import Event, EventParser
from detectors.session import SessionState
from detectors.signals import SIGNAL_INDEX

T0 = 1_700_000_000_000


def event(
    etype: str,
    t: int = 0,
    *,
    sid: str = "s",
    page: str | None = None,
    page_type: str | None = None,
    event_id: str | None = None,
    parser: EventParser | None = None,
    **props: Any,
) -> Event:
    """Parse one event at ``T0 + t`` (ms) through the real parser."""
    obj: dict[str, Any] = {"session_id": sid, "ts": T0 + t, "type": etype}
    if page is not None:
        obj["page"] = page
    if page_type is not None:
        obj["page_type"] = page_type
    if event_id is not None:
        obj["event_id"] = event_id
    if props:
        obj["props"] = props
    return (parser or EventParser(DetectorConfig())).parse(obj)


class Driver:
    """One session driven through a real :class:`Detector`."""

    def __init__(self, config: DetectorConfig | None = None, sid: str = "s") -> None:
        self.config = config or DetectorConfig()
        self.parser = EventParser(self.config)
        self.detector = Detector(self.config)
        self.sid = sid
        self.state: SessionState | None = None
        self.results: list[tuple[int, StepResult]] = []

    def send(self, etype: str, t: int, page: str | None = None, **props: Any) -> StepResult:
        ev = event(etype, t, sid=self.sid, page=page, parser=self.parser, **props)
        result = self.detector.process(self.state, ev)
        self.state = result.state
        self.results.append((t, result))
        return result

    def hit_times(self, name: str) -> list[int]:
        """Offsets (ms from T0) of the steps where signal ``name`` fired."""
        return [t for t, r in self.results for h in r.hits if h.name == name]

    def all_hits(self) -> list[str]:
        return [h.name for _, r in self.results for h in r.hits]

    def count(self, name: str) -> int:
        assert self.state is not None
        return self.state.signal_counts[SIGNAL_INDEX[name]]

    def alerts(self, kind: str | None = None) -> list[Any]:
        return [a for _, r in self.results for a in r.alerts if kind is None or a.kind == kind]


#: Pages of every type, and a few the classifier does not know.
PAGES = (
    "/", "/lp/spring", "/blog/care", "/category/shoes", "/search?q=x", "/products/1",
    "/products/2", "/compare", "/reviews/1", "/pricing", "/faq", "/shipping", "/returns",
    "/cart", "/checkout", "/checkout/step-2", "/order-confirmation", "/help", "/account",
    "/weird/path", "/products/1?colour=red#top",
)  # fmt: skip
#: Click targets: ordinary, ignored look-alikes, empty and over-long ones.
TARGETS = ("button#pay", "a.nav", "button.qty-plus", "p.text", "", "x" * 300, "td.day")
#: Prop values a client might send for any field, valid or not.
ODD_VALUES: tuple[Any, ...] = (None, True, False, "", "abc", -1, 0, 1e12, -1e12, [], {}, "3")


def random_events(seed: int, n: int = 800, sid: str = "s") -> list[Event]:
    """``n`` valid events of every type with props both sensible and odd,
    parsed through the real parser, with bursts of fast clicks and scrolls.
    Times mostly move forward (0-200 s apart) and sometimes step back up to
    25 s, within the allowed lateness, as a detector would apply them.
    Deterministic per ``seed``."""
    rng = random.Random(seed)
    parser = EventParser(DetectorConfig())
    types = sorted(EVENT_TYPES)
    weights = [8 if t in ("click", "scroll", "page_view") else 2 for t in types]
    t, newest, out = 0, 0, []
    etype = "page_view"
    for i in range(n):
        burst = etype in ("click", "scroll") and rng.random() < 0.6  # rage, thrash
        etype = etype if burst else rng.choices(types, weights)[0]
        props: dict[str, Any] = {}
        if rng.random() < 0.9:
            props = {
                "x": rng.choice([rng.uniform(0, 400), rng.choice(ODD_VALUES)]),
                "y": rng.uniform(0, 400),
                "target": rng.choice(TARGETS),
                # true (the probe saw nothing), false (the page reacted) or unknown
                "dead": rng.choices([True, False, None], [2, 1, 7])[0],
                "selection": rng.random() < 0.05,
                "scroll_pct": rng.choice([rng.uniform(-20, 120), rng.choice(ODD_VALUES)]),
                "field": rng.choice([f"f{rng.randrange(12)}", rng.choice(ODD_VALUES)]),
                "load_ms": rng.choice([rng.uniform(0, 9000), rng.choice(ODD_VALUES)]),
                "step": rng.choice([rng.randrange(1, 5), 2.5, "payment", "2", 1e9, None]),
            }
        step = 300 if burst else rng.choice([0, 100, 400, 2000, 30_000, 130_000, 200_000])
        t = t + rng.randrange(step + 1) if rng.random() > 0.05 else max(0, newest - 25_000)
        newest = max(newest, t)
        obj: dict[str, Any] = {"session_id": sid, "ts": T0 + t, "type": etype, "props": props}
        if etype == "page_view" or rng.random() < 0.3:
            obj["page"] = rng.choice(PAGES)
        obj["event_id"] = f"{sid}-{i}"
        out.append(parser.parse(obj))
    return out


def stored_state(sid: str, last_ts: int, **fields: Any) -> SessionState:
    """A session state as a store holds it: last seen at ``last_ts`` (epoch
    ms), started a second before, with ``fields`` set on top."""
    state = SessionState(sid, start_ts=last_ts - 1000, last_ts=last_ts, last_progress=last_ts)
    for name, value in fields.items():
        setattr(state, name, value)
    return state
