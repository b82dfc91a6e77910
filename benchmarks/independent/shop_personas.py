"""Shop personas (goal ``purchase``): the scripts of the ``shop`` table in PERSONAS.md.

URLs and element selectors are this generator's own: ``/c/<category>``, ``/p/<slug>-<id>``,
``/bag``, ``/checkout/{address,delivery,payment}``, ``/order/thank-you``, ``/help/<topic>``.
"""

from __future__ import annotations

from journey_kit import Persona, Visit

SLUGS = (
    "linen-shirt",
    "trail-runner",
    "wool-beanie",
    "denim-jacket",
    "rain-shell",
    "canvas-tote",
    "chelsea-boot",
    "merino-crew",
    "cargo-short",
    "silk-scarf",
)
CATEGORIES = ("women", "men", "outdoor", "accessories", "sale", "new-in")
PDP_TARGETS = (
    "div.pdp-gallery img",
    "button.size-chip",
    "button.colour-swatch",
    "a.pdp-details-toggle",
    "a.pdp-reviews-anchor",
)
PLP_TARGETS = ("a.plp-tile", "button.filter-chip", "select#sort", "button.load-more")
ADDRESS = ("email", "full_name", "street", "postcode", "city")
CARD = ("card_number", "card_expiry", "card_cvc")


def product(v: Visit, scale: float = 30.0, shape: float = 0.9) -> str:
    """View and read one product page; returns its path."""
    page = f"/p/{v.rng.choice(SLUGS)}-{v.rng.randint(1000, 9999)}"
    v.view(page, "product")
    v.read(v.dwell(scale, shape), PDP_TARGETS)
    return page


def listing(v: Visit, scale: float = 20.0) -> None:
    """A category page with a tile click or a filter."""
    v.view(f"/c/{v.rng.choice(CATEGORIES)}", "category")
    v.read(v.dwell(scale, 0.8), PLP_TARGETS, clicks=v.rng.randint(0, 3))


def info(v: Visit, topic: str, page_type: str, seconds: float) -> None:
    """A help page (shipping, returns, faq, price match) read for ``seconds``."""
    v.view(f"/help/{topic}", page_type)
    v.read(seconds, ("details.accordion summary",), clicks=v.rng.randint(0, 2))


def add_to_bag(v: Visit) -> None:
    v.click("button#add-to-bag")
    v.emit("add_to_cart", value=round(v.rng.uniform(15, 180), 2))
    v.wait(v.think(2.0))


def bag(v: Visit, seconds: float | None = None) -> None:
    v.view("/bag", "cart")
    v.read(v.dwell(12.0) if seconds is None else seconds, ("button#bag-qty", "a.bag-item"), 0)


def checkout(
    v: Visit,
    step: int,
    slow: bool = False,
    autofill: bool = True,
    errors: dict[str, str] | None = None,
) -> None:
    """One checkout step: page, ``checkout_step``, its form."""
    page = ("address", "delivery", "payment")[step - 1]
    v.view(f"/checkout/{page}", "checkout", slow=slow)
    v.emit("checkout_step", step=step)
    if step == 1:
        v.fill(ADDRESS, step, autofill, errors)
    elif step == 2:
        v.wait(v.think(4.0))
        v.click("label.delivery-option")
    else:
        v.fill(CARD, step, autofill=False, errors=errors)
    v.wait(v.think(3.0))


def buy(v: Visit) -> None:
    """Place the order, then the thank-you page (events after the goal) and leave."""
    v.click("button#place-order")
    v.wait(v.rng.uniform(1.0, 4.0))
    v.emit("purchase", value=round(v.rng.uniform(20, 400), 2))
    v.view("/order/thank-you", "confirmation")
    v.read(v.dwell(15.0), ("a#track-order",), clicks=v.rng.randint(0, 1))
    v.leave()


def arrive(v: Visit) -> None:
    """A typical entry: home, a campaign landing page or a search."""
    roll = v.rng.random()
    if roll < 0.4:
        v.view("/", "home")
        v.read(v.dwell(10.0), ("a.nav-link", "a.hero-cta"), clicks=1)
    elif roll < 0.7:
        v.view(f"/lp/{v.rng.choice(('spring-edit', 'free-returns', 'summer-sale'))}", "landing")
        v.read(v.dwell(12.0), ("a.hero-cta",), clicks=1)
    else:
        v.view("/search?q=x", "search")
        v.search(v.rng.randint(3, 60))
        v.read(v.dwell(10.0), PLP_TARGETS, clicks=1)


def quick_buyer(v: Visit) -> None:
    arrive(v)
    if v.chance(0.4):
        v.view("/account/login", "account")
        v.fill(("email", "password"), "login", autofill=True)
        v.emit("form_submit", form="login")
    for _ in range(v.rng.randint(1, 2)):
        product(v, 15.0, 1.0)
    add_to_bag(v)
    bag(v, v.dwell(8.0))
    for step in (1, 2):
        checkout(v, step)
    if v.chance(0.15):  # stops at payment for no visible reason (noise, not labelled)
        checkout(v, 3)
        v.read(v.dwell(20.0), scroll=False)
        return v.leave()
    checkout(v, 3)
    buy(v)


def deliberator(v: Visit) -> None:
    hesitant = v.chance(0.30)
    arrive(v)
    listing(v)
    seen = []
    for _ in range(v.rng.randint(3, 8)):
        seen.append(product(v, 45.0, 0.8))
        if v.chance(0.5):
            v.view(seen[-1] + "/reviews", "reviews")
            v.read(v.dwell(40.0), ("button.review-filter", "a.review-page"))
        if v.chance(0.25):
            listing(v, 15.0)
    v.view("/compare?ids=" + ",".join(p.rsplit("-", 1)[1] for p in seen[-3:]), "compare")
    v.read(v.dwell(50.0), ("button.compare-remove", "a.compare-row"))
    info(v, "shipping", "shipping", v.dwell(30.0))
    if v.chance(0.6):
        info(v, "returns", "returns", v.dwell(30.0))
    if not v.chance(0.6):
        return v.leave()
    add_to_bag(v)
    bag(v)
    if hesitant:
        v.begin("hesitation")
        for _ in range(v.rng.randint(2, 4)):
            kind = v.rng.choice(("reviews", "returns", "compare"))
            if kind == "reviews":
                v.view(v.rng.choice(seen) + "/reviews", "reviews")
                v.read(v.dwell(100.0), ("a.review-page",), clicks=1)
            elif kind == "returns":
                info(v, "returns", "returns", v.dwell(90.0))
            else:
                v.view(
                    "/compare?ids=" + ",".join(p.rsplit("-", 1)[1] for p in seen[-2:]), "compare"
                )
                v.read(v.dwell(120.0), ("a.compare-row",), clicks=1)
        bag(v, v.dwell(40.0))
        if v.chance(0.4):
            v.click("button.bag-remove")
            v.emit("remove_from_cart")
            v.wait(v.dwell(20.0))
            return v.leave()
    # 18% of deliberators buy; 8% of hesitant ones (60% of whom keep the item)
    if not v.chance(0.08 / 0.6 if hesitant else 0.18 / 0.6):
        v.wait(v.dwell(20.0))
        return v.leave()
    v.end("hesitation")
    for step in (1, 2, 3):
        checkout(v, step, autofill=v.chance(0.6))
    buy(v)


def mobile_glancer(v: Visit) -> None:
    v.view(f"/lp/{v.rng.choice(('insta-drop', 'tiktok-picks', 'flash-sale'))}", "landing")
    v.read(v.dwell(12.0, 0.7), ("a.hero-cta", "div.carousel"))
    for _ in range(v.rng.randint(0, 3)):
        product(v, 12.0, 0.7)
    if v.chance(0.02):
        add_to_bag(v)
        bag(v, v.dwell(6.0))
        v.view("/checkout/payment", "checkout")
        v.emit("checkout_step", step=3)
        v.click("button#express-pay")
        return buy(v)
    v.leave()


def bargain_hunter(v: Visit) -> None:
    v.view("/", "home")
    v.read(v.dwell(6.0), ("a.nav-sale",), clicks=1)
    carted = False
    for _ in range(v.rng.randint(4, 12)):
        v.view("/search?q=x", "search")
        v.search(0 if v.chance(0.12) else v.rng.randint(2, 200))
        v.read(v.dwell(12.0, 0.8), PLP_TARGETS, clicks=v.rng.randint(0, 3))
        if v.chance(0.5):
            product(v, 20.0)
            if v.chance(0.12):
                add_to_bag(v)
                carted = True
    if carted and v.chance(0.4):
        bag(v)
        v.click("button.bag-remove")
        v.emit("remove_from_cart")
        carted = v.chance(0.3)
    if carted and v.chance(0.2):
        for step in (1, 2, 3):
            checkout(v, step, autofill=v.chance(0.5))
        return buy(v)
    v.leave()


def drifter(v: Visit) -> None:
    first = v.rng.choice(
        (
            ("/", "home"),
            ("/stories/how-to-layer", "content"),
            ("/lp/summer-sale", "landing"),
            ("/p/silk-scarf-2211", "product"),
        )
    )
    v.view(*first)
    v.read(v.dwell(9.0, 0.7), ("a.nav-link",), clicks=v.rng.randint(0, 1))
    if v.chance(0.1):
        listing(v, 8.0)
    if v.chance(0.003):
        return quick_buyer(v)
    v.leave()


def friction_victim(v: Visit) -> None:
    arrive(v)
    kind = v.rng.choice(("slow_checkout", "payment_widget", "postcode", "size_selector"))
    converts = v.chance(0.25)
    for _ in range(v.rng.randint(2, 4)):
        product(v, 30.0)
    if kind == "size_selector":
        v.begin("friction")
        for _ in range(v.rng.randint(2, 4)):
            v.click("button.size-chip", dead=True)
            v.wait(v.think(2.0))
        v.rage("button.size-chip")
        if not converts:
            v.wait(v.dwell(15.0))
            return v.leave()
        v.view(v.page + "?size=m", "product")
        v.end("friction")
    add_to_bag(v)
    bag(v)
    if kind == "postcode":
        v.view("/checkout/address", "checkout")
        v.emit("checkout_step", step=1)
        for _ in range(v.rng.randint(2, 4)):
            v.fill(
                ("postcode",), 1, errors={"postcode": "postcode not recognised"}, site_fault=True
            )
            v.click("button#continue")
            v.wait(v.think(5.0))
        if not converts:
            return v.leave()
        checkout(v, 2)
        v.end("friction")
        checkout(v, 3)
        return buy(v)
    if kind == "slow_checkout":
        v.begin("friction")
        for step in (1, 2, 3):
            checkout(v, step, slow=step != 2 or v.chance(0.5))
            if step == 2 and not converts:
                v.click("button#continue", dead=True)
                v.wait(v.think(6.0))
                return v.leave()
        v.end("friction")
        return buy(v)
    if kind == "payment_widget":
        checkout(v, 1)
        checkout(v, 2)
        checkout(v, 3)
        v.begin("friction")
        v.click("button#place-order")
        v.emit("error", error="payment iframe timed out")
        v.wait(v.think(3.0))
        v.click("button#place-order", dead=True)
        v.rage("button#place-order")
        if not converts:
            v.wait(v.dwell(20.0))
            return v.leave()
        v.view("/checkout/payment", "checkout")
        v.fill(CARD, 3)
        v.end("friction")
        return buy(v)
    # size_selector, got past it
    for step in (1, 2, 3):
        checkout(v, step)
    buy(v)


def silent_hesitator(v: Visit) -> None:
    arrive(v)
    for _ in range(v.rng.randint(2, 4)):
        product(v, 40.0)
    add_to_bag(v)
    bag(v, v.dwell(25.0))
    topics = [("shipping", "shipping"), ("returns", "returns"), ("price-match", "faq")]
    v.rng.shuffle(topics)
    v.begin("hesitation")
    for topic, page_type in topics[: v.rng.randint(1, 3)]:
        v.view(f"/help/{topic}", page_type)
        v.read(
            v.rng.uniform(120, 480), ("details.accordion summary",), clicks=0, scroll=v.chance(0.6)
        )
    bag(v, v.rng.uniform(60, 240))
    if v.chance(0.5):
        v.away(v.rng.uniform(60, 600))
    if v.chance(0.4):
        v.view("/checkout/address", "checkout")
        v.emit("checkout_step", step=1)
        v.wait(v.rng.uniform(60, 300))
    if v.chance(0.08):
        v.end("hesitation")
        for step in (1, 2, 3):
            checkout(v, step)
        return buy(v)
    v.wait(v.rng.uniform(20, 180))
    v.leave(exit_event=v.chance(0.15))


def coupon_seeker(v: Visit) -> None:
    arrive(v)
    for _ in range(v.rng.randint(1, 3)):
        product(v, 30.0)
    add_to_bag(v)
    bag(v)
    checkout(v, 1)
    checkout(v, 2)
    v.view("/checkout/payment", "checkout")
    v.emit("checkout_step", step=3)
    v.begin("hesitation")
    v.emit("form_focus", field="promo_code", step=3)
    v.away(v.rng.uniform(120, 600))
    for _ in range(v.rng.randint(1, 3)):
        v.fill(("promo_code",), 3, errors={"promo_code": "code not valid"})
        v.click("button#apply-promo")
        v.wait(v.think(4.0))
    if v.chance(0.35):
        v.end("hesitation")
        v.fill(CARD, 3)
        return buy(v)
    v.wait(v.dwell(30.0))
    v.leave()


PERSONAS = (
    Persona("quick_buyer", 0.04, 0.50, quick_buyer),
    Persona("deliberator", 0.12, 0.45, deliberator, may_hesitate=True),
    Persona("mobile_glancer", 0.28, 0.90, mobile_glancer),
    Persona("bargain_hunter", 0.12, 0.55, bargain_hunter),
    Persona("drifter", 0.22, 0.65, drifter),
    Persona("friction_victim", 0.07, 0.55, friction_victim, may_frustrate=True),
    Persona("silent_hesitator", 0.10, 0.50, silent_hesitator, may_hesitate=True),
    Persona("coupon_seeker", 0.05, 0.40, coupon_seeker, may_hesitate=True),
)
