"""The simulator's personas: how many sessions each makes, how often it
buys, and the journey it plays.

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

A journey is a function ``(session, convert, visit) -> bought``: ``convert``
is the outcome drawn for the session, ``visit`` counts a researcher's earlier
visits.
"""

from __future__ import annotations

from collections.abc import Callable

from detectors.simulation.ground_truth import FrictionEpisode
from detectors.simulation.simulated_session import SEARCH_TERMS, SimulatedSession

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


def confident(s: SimulatedSession, convert: bool, visit: int) -> bool:
    s.entry()
    if s.page_type != "product":
        s.browse(s.rng.randint(1, 2), dwell=15)
    s.add_to_cart()
    return s.checkout(finish=convert)


def comparer(s: SimulatedSession, convert: bool, visit: int) -> bool:
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


def confused(s: SimulatedSession, convert: bool, visit: int) -> bool:
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


def frustrated(s: SimulatedSession, convert: bool, visit: int) -> bool:
    rng = s.rng
    s.entry()
    s.browse(rng.randint(1, 3), dwell=20)
    if s.page_type != "product":
        s.visit("product", f"/products/{s.product}", s.lognormal(20))
    if rng.random() < 0.25:  # the add-to-cart button is the broken part
        start = s.t
        s.truth.episodes.append(
            FrictionEpisode(
                start, s.path, "product", None, "add-to-cart button does nothing", False
            )
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


def bouncer(s: SimulatedSession, convert: bool, visit: int) -> bool:
    s.entry()
    if s.rng.random() < 0.3:
        s.browse(1, dwell=8)
    return False


def researcher(s: SimulatedSession, convert: bool, visit: int) -> bool:
    rng = s.rng
    s.entry()
    s.browse(rng.randint(1, 3), dwell=30)
    s.evaluate(rng.randint(1, 3), dwell=40)
    if convert and (visit >= 1 or rng.random() < 0.4):
        s.add_to_cart()
        return s.checkout(finish=True)
    return False


#: persona -> its journey.
JOURNEYS: dict[str, Callable[[SimulatedSession, bool, int], bool]] = {
    "confident": confident,
    "comparer": comparer,
    "confused": confused,
    "frustrated": frustrated,
    "bouncer": bouncer,
    "researcher": researcher,
}
