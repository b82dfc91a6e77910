"""Deterministic traffic simulator with ground truth.

Sessions arrive as a Poisson process and follow one of six personas:

* ``confident``: knows what to buy; few pages, quick checkout.
* ``comparer``: loops between products, comparisons and reviews.
* ``confused``: searches again and again, lingers on FAQ and policy pages,
  scrolls back and forth; a *hesitation* episode is recorded when the
  lingering starts.
* ``frustrated``: a buyer who hits a broken step (a dead button, a failing
  payment form, a script error, a very slow page); the *friction* episode is
  recorded at the first broken interaction.
* ``bouncer``: one or two pages, then gone.
* ``researcher``: a returning visitor (same user id) over several visits.

Journeys are non-linear: skips (landing straight on a product), loops,
backtracks and repeat visits. Every persona also produces the harmless
look-alikes that naive friction rules fire on: quantity steppers, date
pickers, carousels, triple-click text selection, double clicks, a single
typo in a form, ordinary reading scrolls and the odd slow page.

Whether a session converts is drawn first, from the persona's rate. A
latent *doubt* in [0, 1] then shapes the behaviour: converters draw it from
Beta(2, 5) (mean 0.29), the others from Beta(5, 2) (mean 0.71). More doubt
means more comparison and policy pages, longer dwell, more quick returns and
more second looks at shipping and returns after reaching the basket (Baymard
Institute's checkout studies: extra costs and returns policy are the top
reasons to abandon). This is the simulator's assumption that doubt shows in
behaviour, which is the product's premise; whether it holds for a real site
is what ``evaluate --labels`` on real outcomes checks.

A *hotspot incident* can be switched on: for a stretch of the simulated
time, checkout step 2 (payment) is broken for everyone who reaches it.

Output is in event-time order. The same seed gives the same bytes.
Conversion rates per persona are assumptions of this simulator, stated in
:data:`PERSONAS`; real outcomes come from ``evaluate --labels``.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: persona -> (share of sessions, conversion probability). Shares follow
#: typical e-commerce traffic: about 40% bounces (Contentsquare 2023
#: benchmark: 47% average bounce rate) and an overall conversion of about
#: 15%, close to the UCI Online Shoppers data (15.5%).
PERSONAS: dict[str, tuple[float, float]] = {
    "confident": (0.09, 0.85),
    "comparer": (0.20, 0.35),
    "confused": (0.06, 0.08),
    "frustrated": (0.04, 0.15),
    "bouncer": (0.43, 0.0),
    "researcher": (0.18, 0.30),
}

CATEGORIES = ("shoes", "jackets", "bags", "watches", "lamps", "chairs")
CAMPAIGNS = ("spring-sale", "free-shipping", "new-arrivals", "brand-days")
SEARCH_TERMS = ("running shoes", "waterproof jacket", "leather bag", "smart watch", "desk lamp")
BLOG = ("how-to-choose-running-shoes", "jacket-size-guide", "care-for-leather", "watch-buying-101")


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings. ``arrival_rate`` is new sessions per second of
    simulated time; ``incident`` breaks checkout step 2 between the given
    fractions of the simulated span."""

    sessions: int = 10_000
    seed: int = 7
    start_ts: int = 1_767_261_600_000  # 2026-01-01T10:00:00Z
    arrival_rate: float = 2.0
    incident: bool = True
    incident_window: tuple[float, float] = (0.45, 0.60)
    personas: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(PERSONAS))


@dataclass
class SessionTruth:
    """Ground truth of one simulated session."""

    session_id: str
    persona: str
    converted: bool
    user: str | None
    start_ts: int
    end_ts: int = 0
    episodes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": "session",
            "session_id": self.session_id,
            "persona": self.persona,
            "converted": self.converted,
            "user": self.user,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "episodes": self.episodes,
        }


class _Session:
    """Builds one session's events; ``t`` is the running event time (ms)."""

    def __init__(self, sim: Simulator, truth: SessionTruth, rng: random.Random) -> None:
        self.sim = sim
        self.truth = truth
        self.rng = rng
        self.t = truth.start_ts
        self.n = 0
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.user_id = truth.user
        self.product = rng.randint(1, 400)
        self.page_type: str | None = None
        self.path = "/"
        self.doubt = 0.5

    def doubtful(self, base: float) -> bool:
        """True with a probability that grows with doubt: ``base`` at average
        doubt (0.5), twice ``base`` at full doubt, zero at none."""
        return self.rng.random() < base * 2.0 * self.doubt

    # --------------------------------------------------------------- emitting
    def emit(self, etype: str, props: dict[str, Any] | None = None, **extra: Any) -> None:
        self.n += 1
        event: dict[str, Any] = {
            "session_id": self.truth.session_id,
            "ts": self.t,
            "type": etype,
            "event_id": f"{self.truth.session_id}-{self.n}",
            "page": self.path,
        }
        # a third of the events leave page_type out, so inference is exercised
        if self.page_type is not None and self.n % 3:
            event["page_type"] = self.page_type
        if self.user_id is not None:
            event["user_id"] = self.user_id
        if props:
            event["props"] = props
        event.update(extra)
        self.events.append((self.t, event))

    def wait(self, seconds: float) -> None:
        self.t += max(1, int(seconds * 1000))

    def lognormal(self, median_s: float, sigma: float = 0.5) -> float:
        return median_s * math.exp(self.rng.gauss(0.0, sigma))

    # ---------------------------------------------------------------- visits
    def visit(
        self,
        page_type: str,
        path: str,
        dwell_s: float,
        *,
        hesitant: bool = False,
        load_ms: float | None = None,
        step: int | None = None,
    ) -> None:
        """A page view followed by interactions spread over ``dwell_s``."""
        rng = self.rng
        self.page_type, self.path = page_type, path
        if load_ms is None:
            load_ms = self.lognormal(900, 0.45)
            if rng.random() < 0.01:  # the odd slow page, for everyone
                load_ms = rng.uniform(3200, 4500)
        props: dict[str, Any] = {"load_ms": int(load_ms)}
        if step is not None:
            props["step"] = step
        self.emit("page_view", props)
        end = self.t + int(dwell_s * 1000)
        pct = 0.0
        steps = max(1, int(dwell_s / (6.0 if not hesitant else 4.0)))
        for _ in range(steps):
            if self.t >= end:
                break
            self.wait(rng.uniform(0.6, 1.4) * dwell_s / (steps + 1))
            roll = rng.random()
            if hesitant and roll < 0.35:
                # back and forth through the page, slowly
                pct = max(0.0, pct - rng.uniform(10, 30))
                self.emit("scroll", {"scroll_pct": round(pct, 1)})
                self.wait(rng.uniform(2.5, 6.0))
                pct = min(100.0, pct + rng.uniform(10, 30))
                self.emit("scroll", {"scroll_pct": round(pct, 1)})
            elif roll < 0.75:
                if rng.random() < 0.12 and pct > 10:
                    pct -= rng.uniform(3, 10)  # an ordinary glance back up
                else:
                    pct = min(100.0, pct + rng.uniform(8, 25))
                self.emit("scroll", {"scroll_pct": round(pct, 1)})
            elif roll < 0.93:
                self.click_something()
            else:
                self.emit("visibility", {"state": rng.choice(("hidden", "visible"))})
        self.t = max(self.t, end)
        self.harmless_noise(page_type)

    def click_something(self) -> None:
        rng = self.rng
        target = rng.choice(("a.nav-link", "img.product-image", "button.tab", "a.breadcrumb"))
        self.emit(
            "click",
            {"x": rng.randint(20, 1200), "y": rng.randint(80, 900), "target": target},
        )

    def harmless_noise(self, page_type: str) -> None:
        """Fast repeated clicks that are not frustration."""
        rng = self.rng
        roll = rng.random()
        x, y = rng.randint(100, 1100), rng.randint(100, 800)
        if page_type == "cart" and roll < 0.35:
            for _ in range(rng.randint(3, 5)):  # quantity stepper
                self.emit("click", {"x": x, "y": y, "target": "button.qty-plus"})
                self.wait(rng.uniform(0.15, 0.35))
        elif page_type == "product" and roll < 0.15:
            for _ in range(rng.randint(3, 5)):  # image carousel
                self.emit("click", {"x": x, "y": y, "target": "button.carousel-next"})
                self.wait(rng.uniform(0.2, 0.45))
        elif page_type == "product" and roll < 0.25:
            for i in range(3):  # triple-click to select the description
                self.emit(
                    "click",
                    {"x": x + i, "y": y, "target": "p.description", "selection": i == 2},
                )
                self.wait(0.09)
        elif page_type == "checkout" and roll < 0.4:
            for _ in range(rng.randint(3, 6)):  # delivery date picker
                tgt = rng.choice(("td.datepicker-day", "button.datepicker-next"))
                self.emit("click", {"x": x, "y": y, "target": tgt})
                self.wait(rng.uniform(0.2, 0.5))
        elif roll < 0.08:
            for _ in range(2):  # a double click
                self.emit("click", {"x": x, "y": y, "target": "div.card"})
                self.wait(0.12)

    # --------------------------------------------------------------- helpers
    def entry(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            self.visit("home", "/", self.lognormal(12))
        elif roll < 0.6:
            self.visit("landing", f"/lp/{rng.choice(CAMPAIGNS)}", self.lognormal(15))
        elif roll < 0.7:
            self.visit("content", f"/blog/{rng.choice(BLOG)}", self.lognormal(45))
        else:  # skip straight to a product from an ad or a search engine
            self.visit("product", f"/products/{self.product}", self.lognormal(30))

    def browse(self, pages: int, dwell: float = 25.0) -> None:
        rng = self.rng
        for _ in range(pages):
            roll = rng.random()
            if roll < 0.25:
                self.visit(
                    "category", f"/category/{rng.choice(CATEGORIES)}", self.lognormal(dwell * 0.6)
                )
            elif roll < 0.4:
                self.emit("search", {"query_len": rng.randint(4, 20)})
                self.visit(
                    "search", f"/search?q={rng.choice(SEARCH_TERMS)}", self.lognormal(dwell * 0.5)
                )
            else:
                self.product = rng.randint(1, 400)
                if self.doubtful(0.15):  # not what they wanted: straight back
                    self.visit("product", f"/products/{self.product}", rng.uniform(1.5, 4.5))
                    self.visit("category", f"/category/{rng.choice(CATEGORIES)}", self.lognormal(8))
                    continue
                self.visit("product", f"/products/{self.product}", self.lognormal(dwell))

    def evaluate(self, pages: int, dwell: float = 35.0) -> None:
        rng = self.rng
        for _ in range(pages):
            kind = rng.choice(
                ("compare", "reviews", "reviews", "pricing", "shipping", "returns", "faq")
            )
            path = {
                "compare": f"/compare?ids={self.product},{rng.randint(1, 400)}",
                "reviews": f"/products/{self.product}/reviews",
            }.get(kind, f"/{kind}")
            self.visit(kind, path, self.lognormal(dwell * (0.6 + self.doubt)))
            if rng.random() < 0.4:  # back to the product: a loop, not a funnel
                self.visit("product", f"/products/{self.product}", self.lognormal(dwell * 0.5))

    def fill_form(self, fields: tuple[str, ...], typo: bool = False) -> None:
        rng = self.rng
        for name in fields:
            self.emit("form_focus", {"field": name})
            self.wait(self.lognormal(2.5, 0.4))
            self.emit("form_input", {"field": name})
            self.wait(self.lognormal(1.2, 0.4))
        if typo:
            self.emit("form_error", {"field": fields[-1], "error": "invalid_format"})
            self.wait(rng.uniform(2, 5))
            self.emit("form_focus", {"field": fields[-1]})
            self.emit("form_input", {"field": fields[-1]})
            self.wait(rng.uniform(1, 3))

    def add_to_cart(self) -> None:
        self.emit("click", {"x": 900, "y": 420, "target": "button.add-to-cart"})
        self.wait(0.3)
        self.emit("add_to_cart", {"sku": f"sku-{self.product}", "value": self.rng.randint(20, 300)})
        self.wait(self.lognormal(3))

    def checkout(self, finish: bool, broken_step: int | None = None) -> bool:
        """Cart and checkout; returns True when the purchase happened."""
        rng = self.rng
        self.visit("cart", "/cart", self.lognormal(20 * (0.6 + self.doubt)))
        if self.doubtful(0.3):  # a second look at the costs and the policy
            kind = rng.choice(("shipping", "returns", "pricing"))
            self.visit(kind, f"/{kind}", self.lognormal(30 * (0.5 + self.doubt)))
            if self.doubtful(0.25):
                self.emit("remove_from_cart", {"sku": f"sku-{self.product}"})
            self.visit("cart", "/cart", self.lognormal(15))
        for step, fields in (
            (1, ("email", "address", "zip")),
            (2, ("card_number", "expiry", "cvc")),
            (3, ()),
        ):
            if not finish and rng.random() < 0.45:
                return False  # ordinary abandonment, no friction involved
            self.visit("checkout", f"/checkout/step-{step}", self.lognormal(8), step=step)
            incident = self.sim.incident_active(self.t) and step == 2
            if broken_step == step or incident:
                recovered = self.friction_episode(step, incident)
                if not recovered:
                    return False
            elif fields:
                self.fill_form(fields, typo=rng.random() < 0.15)
                self.emit("form_submit", {"form": f"checkout-{step}"})
            self.emit("checkout_step", {"step": step})
            self.wait(self.lognormal(2))
        if not finish:
            return False
        self.emit("purchase", {"value": rng.randint(20, 600), "currency": "EUR"})
        self.wait(1.5)
        self.visit("confirmation", "/checkout/confirmation", self.lognormal(10))
        return True

    def friction_episode(self, step: int, incident: bool) -> bool:
        """A broken checkout step; returns True when the visitor got through."""
        rng = self.rng
        start = self.t
        reason = (
            "payment button does nothing"
            if incident
            else rng.choice(
                (
                    "payment button does nothing",
                    "card form keeps rejecting input",
                    "script error on submit",
                )
            )
        )
        self.truth.episodes.append(
            {
                "kind": "friction",
                "start_ts": start,
                "page": self.path,
                "page_type": "checkout",
                "step": step,
                "reason": reason,
                "incident": incident,
            }
        )
        x, y = 880, 640
        rounds = rng.randint(2, 4)
        for _ in range(rounds):
            if reason == "card form keeps rejecting input":
                self.emit("form_focus", {"field": "card_number"})
                self.wait(self.lognormal(3, 0.3))
                self.emit("form_input", {"field": "card_number"})
                self.wait(0.5)
                self.emit("click", {"x": x, "y": y, "target": "button#pay"})
                self.wait(0.4)
                self.emit("form_error", {"field": "card_number", "error": "declined_format"})
            elif reason == "script error on submit":
                self.emit("click", {"x": x, "y": y, "target": "button#pay"})
                self.wait(rng.uniform(0.1, 0.6))
                self.emit("error", {"error": "TypeError in checkout.js"})
            else:
                for _ in range(rng.randint(3, 5)):  # rage at a dead button
                    self.emit(
                        "click",
                        {
                            "x": x + rng.randint(-6, 6),
                            "y": y + rng.randint(-6, 6),
                            "target": "button#pay",
                            "dead": True,
                        },
                    )
                    self.wait(rng.uniform(0.15, 0.45))
            self.wait(self.lognormal(6, 0.5))
        if rng.random() < 0.35:  # looks for help
            self.visit("faq", "/faq", self.lognormal(25))
            self.visit("checkout", f"/checkout/step-{step}", self.lognormal(8), step=step)
        return rng.random() < 0.15

    def hesitate(self) -> None:
        """A long, lingering stretch in the evaluate stage."""
        rng = self.rng
        self.truth.episodes.append(
            {
                "kind": "hesitation",
                "start_ts": self.t,
                "page_type": "evaluate",
                "reason": "lingers on policy and comparison pages",
            }
        )
        for _ in range(rng.randint(2, 4)):
            kind = rng.choice(("faq", "shipping", "returns", "compare", "reviews"))
            path = f"/products/{self.product}/reviews" if kind == "reviews" else f"/{kind}"
            self.visit(kind, path, self.lognormal(150, 0.4), hesitant=True)
            if rng.random() < 0.5:
                self.emit("search", {"query_len": rng.randint(4, 30)})
                self.visit("search", f"/search?q={rng.choice(SEARCH_TERMS)}", self.lognormal(20))

    def leave(self) -> None:
        if self.rng.random() < 0.6:  # beacon on page hide; otherwise silence
            self.wait(self.rng.uniform(0.5, 3))
            self.emit("exit")


class Simulator:
    """Generates events in event-time order and records ground truth.

    >>> sim = Simulator(SimConfig(sessions=50, seed=1))
    >>> events = list(sim.events())
    >>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    True
    >>> [e["event_id"] for e in events[:3]] == [
    ...     e["event_id"] for e in list(Simulator(SimConfig(sessions=50, seed=1)).events())[:3]]
    True
    """

    def __init__(self, config: SimConfig, keep_truth: bool = True) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.keep_truth = keep_truth  # off for endless live traffic
        self.truth: dict[str, SessionTruth] = {}
        span_ms = config.sessions / config.arrival_rate * 1000.0
        lo, hi = config.incident_window
        self.incident_start = config.start_ts + int(span_ms * lo)
        self.incident_end = config.start_ts + int(span_ms * hi)
        names = list(config.personas)
        self._names = names
        self._weights = [config.personas[n][0] for n in names]

    def incident_active(self, ts: int) -> bool:
        c = self.config
        return c.incident and self.incident_start <= ts < self.incident_end

    def incidents(self) -> list[dict[str, Any]]:
        """Ground truth of the hotspot incident (empty when switched off)."""
        if not self.config.incident:
            return []
        return [
            {
                "record": "incident",
                "key": "checkout/2",
                "start_ts": self.incident_start,
                "end_ts": self.incident_end,
                "reason": "payment button broken for everyone",
            }
        ]

    def span(self) -> dict[str, Any]:
        """The simulated span: new arrivals stop at ``arrivals_end_ts``
        (returning visits may start later)."""
        c = self.config
        return {
            "record": "simulation",
            "seed": c.seed,
            "sessions": c.sessions,
            "start_ts": c.start_ts,
            "arrivals_end_ts": c.start_ts + int(c.sessions / c.arrival_rate * 1000.0),
        }

    def events(self) -> Iterator[dict[str, Any]]:
        """All events of all sessions, merged in event-time order.

        Arrivals are drawn lazily, so memory holds only the sessions in
        flight, whatever ``sessions`` is.
        """
        cfg = self.config
        rng = self.rng
        revisits: list[tuple[int, int, str | None, int]] = []  # (ts, seq, user, visit)
        pending: list[tuple[int, int, dict[str, Any]]] = []
        arrivals = 0
        next_arrival = float(cfg.start_ts) + rng.expovariate(cfg.arrival_rate) * 1000.0
        seq = 0
        eseq = 0
        while True:
            candidates = []
            if arrivals < cfg.sessions:
                candidates.append(int(next_arrival))
            if revisits:
                candidates.append(revisits[0][0])
            if not candidates and not pending:
                return
            start = min(candidates) if candidates else None
            if pending and (start is None or pending[0][0] < start):
                yield heapq.heappop(pending)[2]
                continue
            assert start is not None
            if revisits and revisits[0][0] == start:
                _, _, user, visit = heapq.heappop(revisits)
                persona = "researcher"
            else:
                persona = rng.choices(self._names, self._weights)[0]
                user, visit = None, 0
                arrivals += 1
                next_arrival += rng.expovariate(cfg.arrival_rate) * 1000.0
            session = self._session(start, persona, user, visit, seq)
            seq += 1
            for ts, event in session.events:
                heapq.heappush(pending, (ts, eseq, event))
                eseq += 1
            comes_back = persona == "researcher" and visit < 3 and not session.truth.converted
            if comes_back and session.rng.random() < 0.6:  # returns after a break
                gap = int(session.rng.uniform(35, 120) * 60_000)
                heapq.heappush(revisits, (session.t + gap, seq, session.user_id, visit + 1))
                seq += 1

    def _session(
        self, start: int, persona: str, user: str | None, visit: int, seq: int
    ) -> _Session:
        rng = random.Random(f"{self.config.seed}:{seq}")
        sid = f"{rng.getrandbits(64):016x}"
        if user is None and (persona == "researcher" or rng.random() < 0.5):
            user = f"user-{rng.getrandbits(40):010x}@example.com"
        converted = rng.random() < self.config.personas[persona][1]
        truth = SessionTruth(sid, persona, False, user, start)
        s = _Session(self, truth, rng)
        s.doubt = rng.betavariate(2, 5) if converted else rng.betavariate(5, 2)
        bought = getattr(self, f"_{persona}")(s, converted, visit)
        truth.converted = bool(bought)
        if not bought:
            s.leave()
        truth.end_ts = s.t
        if self.keep_truth:
            self.truth[sid] = truth
        return s

    # ---------------------------------------------------------------- personas
    @staticmethod
    def _confident(s: _Session, convert: bool, visit: int) -> bool:
        s.entry()
        if s.page_type != "product":
            s.browse(s.rng.randint(1, 2), dwell=15)
        s.add_to_cart()
        return s.checkout(finish=convert)

    @staticmethod
    def _comparer(s: _Session, convert: bool, visit: int) -> bool:
        rng = s.rng
        s.entry()
        for _ in range(1 + rng.randint(1, 2) + int(2 * s.doubt)):
            s.browse(rng.randint(1, 3))
            s.evaluate(rng.randint(1, 2))
        if convert or rng.random() < 0.5:
            s.add_to_cart()
            if s.doubtful(0.3):  # one more look at the terms before paying
                s.evaluate(1, dwell=20)
            return s.checkout(finish=convert)
        return False

    @staticmethod
    def _confused(s: _Session, convert: bool, visit: int) -> bool:
        rng = s.rng
        s.entry()
        for _ in range(rng.randint(2, 4)):
            s.emit("search", {"query_len": rng.randint(3, 30)})
            s.visit("search", f"/search?q={rng.choice(SEARCH_TERMS)}", s.lognormal(15))
            if rng.random() < 0.5:  # straight back: the result was not it
                s.visit("product", f"/products/{rng.randint(1, 400)}", rng.uniform(1.5, 4))
                s.visit("search", f"/search?q={rng.choice(SEARCH_TERMS)}", s.lognormal(10))
        s.browse(rng.randint(1, 2))
        s.hesitate()
        if convert:
            s.add_to_cart()
            return s.checkout(finish=True)
        if rng.random() < 0.3:
            s.visit("support", "/support", s.lognormal(40))
        return False

    @staticmethod
    def _frustrated(s: _Session, convert: bool, visit: int) -> bool:
        rng = s.rng
        s.entry()
        s.browse(rng.randint(1, 3), dwell=20)
        if s.page_type != "product":
            s.visit("product", f"/products/{s.product}", s.lognormal(20))
        if rng.random() < 0.25:  # the add-to-cart button is the broken part
            start = s.t
            s.truth.episodes.append(
                {
                    "kind": "friction",
                    "start_ts": start,
                    "page": s.path,
                    "page_type": "product",
                    "step": None,
                    "reason": "add-to-cart button does nothing",
                    "incident": False,
                }
            )
            for _ in range(rng.randint(2, 3)):
                for _ in range(rng.randint(3, 5)):
                    s.emit(
                        "click",
                        {
                            "x": 900 + rng.randint(-5, 5),
                            "y": 420 + rng.randint(-5, 5),
                            "target": "button.add-to-cart",
                            "dead": True,
                        },
                    )
                    s.wait(rng.uniform(0.15, 0.4))
                s.wait(s.lognormal(5))
            s.visit(
                "product",
                f"/products/{s.product}",
                s.lognormal(10),
                load_ms=rng.uniform(4000, 9000),
            )
            if not convert:
                s.visit("support", "/support", s.lognormal(30))
                return False
            s.add_to_cart()
            return s.checkout(finish=True)
        s.add_to_cart()
        # whether they get through is decided inside the friction episode
        return s.checkout(finish=True, broken_step=rng.choice((2, 2, 3)))

    @staticmethod
    def _bouncer(s: _Session, convert: bool, visit: int) -> bool:
        s.entry()
        if s.rng.random() < 0.3:
            s.browse(1, dwell=8)
        return False

    @staticmethod
    def _researcher(s: _Session, convert: bool, visit: int) -> bool:
        rng = s.rng
        s.entry()
        s.browse(rng.randint(1, 3), dwell=30)
        s.evaluate(rng.randint(1, 3), dwell=40)
        if convert and (visit >= 1 or rng.random() < 0.4):
            s.add_to_cart()
            return s.checkout(finish=True)
        return False


def write_jsonl(path: str, sim: Simulator) -> int:
    """Write events to ``path`` and the ground truth to ``<stem>.truth.jsonl``;
    return the number of events."""
    n = 0
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with open(path, "w", encoding="utf-8") as out:
        buf: list[str] = []
        for event in sim.events():
            buf.append(dumps(event))
            n += 1
            if len(buf) >= 4096:
                out.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            out.write("\n".join(buf) + "\n")
    with open(truth_path(path), "w", encoding="utf-8") as out:
        out.write(dumps(sim.span()) + "\n")
        for record in sim.incidents():
            out.write(dumps(record) + "\n")
        for truth in sim.truth.values():
            out.write(dumps(truth.to_dict()) + "\n")
    return n


def truth_path(events_path: str) -> str:
    """``events.jsonl`` -> ``events.truth.jsonl``."""
    stem = events_path[:-6] if events_path.endswith(".jsonl") else events_path
    return stem + ".truth.jsonl"
