"""One simulated session: the page visits, interactions and look-alikes a
persona's journey is built from (see :mod:`detectors.simulation.personas` for the
journeys and :mod:`detectors.simulation.simulator` for the arrivals).

Every persona also produces the harmless look-alikes that naive friction
rules fire on: quantity steppers, date pickers, carousels, triple-click text
selection, double clicks, a single typo in a form, ordinary reading scrolls
and the odd slow page. Times are event times in epoch ms; durations are
drawn in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from detectors.simulation.ground_truth import FrictionEpisode, HesitationEpisode, SessionTruth

CATEGORIES = ("shoes", "jackets", "bags", "watches", "lamps", "chairs")
CAMPAIGNS = ("spring-sale", "free-shipping", "new-arrivals", "brand-days")
SEARCH_TERMS = ("running shoes", "waterproof jacket", "leather bag", "smart watch", "desk lamp")
BLOG = ("how-to-choose-running-shoes", "jacket-size-guide", "care-for-leather", "watch-buying-101")


class SimulatedSession:
    """Builds one session's events; ``t`` is the running event time (ms).

    ``incident_active(ts)`` says whether the hotspot incident (checkout step
    2 broken for everyone) is on at ``ts``. The events are collected in
    ``events`` as ``(ts, event)``; what was injected goes to ``truth``.
    """

    def __init__(
        self, truth: SessionTruth, rng: random.Random, incident_active: Callable[[int], bool]
    ) -> None:
        self.incident_active = incident_active
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
            incident = self.incident_active(self.t) and step == 2
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
            FrictionEpisode(start, self.path, "checkout", step, reason, incident)
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
            HesitationEpisode(self.t, "evaluate", "lingers on policy and comparison pages")
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
