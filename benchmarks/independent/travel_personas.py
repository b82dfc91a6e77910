"""Travel personas (goal ``purchase``): the scripts of the ``travel`` table in PERSONAS.md.

A hotel-booking site: ``/results?dest=..`` (search), ``/hotel/<id>`` (product) with
``/guest-reviews``, ``/price-breakdown`` (pricing) and ``/cancellation`` (returns) under it,
``/shortlist`` (compare), ``/trip-summary`` (cart), ``/book/<id>/{travellers,extras,pay}``.
"""

from __future__ import annotations

from journey_kit import Persona, Visit

CITIES = ("lisbon", "kyoto", "reykjavik", "marrakech", "oaxaca", "tallinn", "hobart")
RESULT_TARGETS = (
    "a.result-card",
    "button.filter-stars",
    "input#price-slider",
    "button.map-toggle",
    "select#sort-by",
)
HOTEL_TARGETS = (
    "div.gallery button.next",
    "a.amenities",
    "button.room-type",
    "div.date-picker",
    "a.map-link",
)
TRAVELLERS = ("first_name", "last_name", "email", "phone", "nationality", "arrival_time")
CARD = ("card_holder", "card_number", "card_expiry", "card_cvc")


def results(v: Visit, slow: bool = False) -> None:
    """A search with new dates, its results page read for a while."""
    v.view(f"/results?dest={v.rng.choice(CITIES)}&n={v.rng.randint(1, 14)}", "search", slow=slow)
    v.search(v.rng.randint(0, 400) if v.chance(0.9) else 0)
    v.read(v.dwell(35.0, 0.8), RESULT_TARGETS, clicks=v.rng.randint(0, 3))


def hotel(v: Visit, hid: int, scale: float = 50.0) -> None:
    v.view(f"/hotel/{hid}", "product")
    v.read(v.dwell(scale, 0.8), HOTEL_TARGETS)


def sub_page(v: Visit, hid: int, name: str, page_type: str, seconds: float) -> None:
    """A page under an offer: guest-reviews, price-breakdown or cancellation."""
    v.view(f"/hotel/{hid}/{name}", page_type)
    v.read(seconds, ("button.expand", "a.show-more"))


def shortlist(v: Visit, scale: float = 60.0) -> None:
    v.view("/shortlist", "compare")
    v.read(v.dwell(scale), ("a.shortlist-item", "button.shortlist-remove"))


def select_room(v: Visit, hid: int) -> None:
    v.click("button.room-select")
    v.emit("add_to_cart", value=round(v.rng.uniform(90, 2400), 2))
    v.view("/trip-summary", "cart")
    v.read(v.dwell(25.0), ("a.edit-dates",), clicks=0)


def travellers(v: Visit, hid: int, fields: tuple[str, ...] = TRAVELLERS) -> None:
    v.view(f"/book/{hid}/travellers", "checkout")
    v.emit("checkout_step", step=1)
    v.fill(fields, 1, autofill=v.chance(0.4))


def pay_and_book(v: Visit, hid: int) -> None:
    """Extras, payment form, ``purchase``, confirmation page, leave."""
    v.view(f"/book/{hid}/extras", "checkout")
    v.emit("checkout_step", step=2)
    v.read(v.dwell(20.0), ("label.breakfast", "label.late-checkout", "button#skip-extras"), 1)
    v.view(f"/book/{hid}/pay", "checkout")
    v.emit("checkout_step", step=3)
    v.fill(CARD, 3)
    v.click("button#confirm-booking")
    v.wait(v.rng.uniform(2.0, 8.0))
    v.emit("purchase", value=round(v.rng.uniform(90, 2400), 2))
    v.view(f"/book/{hid}/confirmed", "confirmation")
    v.read(v.dwell(20.0), ("a#add-to-calendar",), clicks=v.rng.randint(0, 1))
    v.leave()


def book(v: Visit, hid: int) -> None:
    select_room(v, hid)
    travellers(v, hid)
    pay_and_book(v, hid)


def hid_of(v: Visit) -> int:
    return v.rng.randint(10_000, 99_999)


def dreamer(v: Visit) -> None:
    v.view("/", "home")
    v.read(v.dwell(10.0), ("a.inspiration-tile",), clicks=1)
    for _ in range(v.rng.randint(1, 3)):
        v.view(f"/inspiration/{v.rng.choice(CITIES)}", "content")
        v.read(v.dwell(70.0, 0.9), ("a.inline-hotel",))
    if v.chance(0.5):
        v.view(f"/deals/{v.rng.choice(('city-breaks', 'last-minute'))}", "landing")
        v.read(v.dwell(25.0), ("a.deal-card",), clicks=1)
    hid = hid_of(v)
    for _ in range(v.rng.randint(1, 2)):
        results(v)
        for _ in range(v.rng.randint(0, 2)):
            hid = hid_of(v)
            hotel(v, hid, 40.0)
    if v.chance(0.005):
        return book(v, hid)
    v.leave()


def comparer(v: Visit) -> None:
    offers: list[int] = []
    views = v.rng.randint(6, 20)
    gaps = v.rng.randint(2, 5)
    searches = v.rng.randint(2, 5)
    for search_no in range(searches):
        results(v)
        for _ in range(max(1, views // searches)):
            if offers and v.chance(0.35):  # pogo-stick back to an offer seen before
                hid = v.rng.choice(offers)
            else:
                hid = hid_of(v)
                offers.append(hid)
            hotel(v, hid)
            if v.chance(0.4):
                sub_page(v, hid, "guest-reviews", "reviews", v.dwell(60.0))
            if v.chance(0.15):
                sub_page(v, hid, "price-breakdown", "pricing", v.dwell(25.0))
        if search_no and v.chance(0.6):
            shortlist(v)
        if gaps and v.chance(0.7):
            gaps -= 1
            v.away(v.rng.uniform(60, 480))
    if v.chance(0.5):
        hid = v.rng.choice(offers)
        hotel(v, hid, 40.0)
        select_room(v, hid)
        if v.chance(0.2):  # 10% of comparers book, late
            travellers(v, hid)
            return pay_and_book(v, hid)
    v.leave()


def price_rechecker(v: Visit) -> None:
    shortlist(v, 40.0)
    offers = [hid_of(v) for _ in range(v.rng.randint(1, 3))]
    for _ in range(v.rng.randint(3, 6)):
        hid = v.rng.choice(offers)
        hotel(v, hid, 30.0)
        if v.chance(0.6):
            sub_page(v, hid, "price-breakdown", "pricing", v.dwell(30.0))
    hid = offers[0]
    sub_page(v, hid, "cancellation", "returns", v.dwell(60.0))
    select_room(v, hid)
    travellers(v, hid, TRAVELLERS[: v.rng.randint(2, 4)])
    v.wait(v.think(10.0))
    v.begin("hesitation")
    for _ in range(v.rng.randint(1, 3)):
        name, page_type = v.rng.choice(
            (("price-breakdown", "pricing"), ("cancellation", "returns"))
        )
        v.view(f"/hotel/{hid}/{name}", page_type)
        v.read(
            v.rng.uniform(120, 360),
            ("button.expand",),
            clicks=v.rng.randint(0, 1),
            scroll=v.chance(0.5),
        )
        if v.chance(0.5):
            v.away(v.rng.uniform(60, 600))
    if v.chance(0.08):
        travellers(v, hid, TRAVELLERS[4:])
        v.end("hesitation")
        return pay_and_book(v, hid)
    v.wait(v.rng.uniform(30, 240))
    v.leave(exit_event=v.chance(0.2))


def decided_booker(v: Visit) -> None:
    results(v)
    hid = hid_of(v)
    hotel(v, hid, 35.0)
    select_room(v, hid)
    travellers(v, hid)
    if v.chance(0.45):  # stops at payment, reason unknown (noise, not labelled)
        v.view(f"/book/{hid}/pay", "checkout")
        v.emit("checkout_step", step=3)
        v.read(v.dwell(40.0), scroll=False)
        return v.leave()
    pay_and_book(v, hid)


def mobile_checker(v: Visit) -> None:
    hid = hid_of(v)
    for _ in range(v.rng.randint(2, 6)):
        if v.chance(0.5):
            results(v)
        else:
            hid = hid_of(v)
            hotel(v, hid, 25.0)
    if v.chance(0.01):
        return book(v, hid)
    v.leave()


def booking_friction(v: Visit) -> None:
    kind = v.rng.choice(("slow_results", "sold_out", "payment_3ds", "date_picker"))
    converts = v.chance(0.15)
    results(v)
    hid = hid_of(v)
    for _ in range(v.rng.randint(2, 5)):
        hid = hid_of(v)
        hotel(v, hid)
    if kind == "slow_results":
        v.begin("friction")
        for _ in range(v.rng.randint(2, 3)):
            results(v, slow=True)
            if v.chance(0.6):
                v.emit("error", error="availability_timeout")
                v.wait(v.think(5.0))
    elif kind == "date_picker":
        v.begin("friction")
        for _ in range(v.rng.randint(2, 4)):
            v.click("div.date-picker td.day", dead=True)
            v.wait(v.think(2.0))
        v.rage("div.date-picker td.day")
    elif kind == "sold_out":
        select_room(v, hid)
        travellers(v, hid, TRAVELLERS[:3])
        v.click("button#continue")
        v.begin("friction")
        v.emit("error", error="room no longer available")
        v.wait(v.think(4.0))
        results(v)
        hid = hid_of(v)
        hotel(v, hid)
    else:
        select_room(v, hid)
        travellers(v, hid)
        v.view(f"/book/{hid}/extras", "checkout")
        v.emit("checkout_step", step=2)
        v.view(f"/book/{hid}/pay", "checkout")
        v.emit("checkout_step", step=3)
        v.fill(CARD, 3)
        v.click("button#confirm-booking")
        v.begin("friction")
        v.emit("error", error="3-D Secure authentication failed")
        v.fill(("card_number",), 3, errors={"card_number": "card declined"}, site_fault=True)
        v.click("button#confirm-booking", dead=True)
    if not converts:
        v.wait(v.dwell(20.0))
        return v.leave()
    if kind != "payment_3ds":
        hotel(v, hid)
        v.end("friction")
        return book(v, hid)
    v.fill(CARD, 3)
    v.end("friction")
    v.click("button#confirm-booking")
    v.emit("purchase", value=round(v.rng.uniform(90, 2400), 2))
    v.view(f"/book/{hid}/confirmed", "confirmation")
    v.read(v.dwell(20.0), ("a#add-to-calendar",), clicks=0)
    v.leave()


PERSONAS = (
    Persona("dreamer", 0.30, 0.60, dreamer),
    Persona("comparer", 0.20, 0.35, comparer),
    Persona("price_rechecker", 0.12, 0.40, price_rechecker, may_hesitate=True),
    Persona("decided_booker", 0.04, 0.40, decided_booker),
    Persona("mobile_checker", 0.28, 0.95, mobile_checker),
    Persona("booking_friction", 0.06, 0.45, booking_friction, may_frustrate=True),
)
