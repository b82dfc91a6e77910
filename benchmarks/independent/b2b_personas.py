"""B2B lead-generation personas (goal ``form_submit``): the ``b2b`` table in PERSONAS.md.

A SaaS vendor's site: ``/blog/<slug>``, ``/customers/<slug>`` and ``/docs/<topic>`` (content),
``/product/<feature>`` (product), ``/solutions/<industry>`` (category), ``/pricing``,
``/compare/<competitor>``, ``/faq`` and ``/security`` (faq), ``/demo`` (the two-step
demo-request form, typed ``checkout``), ``/demo/thanks`` (confirmation). Only the demo form
sends ``form_submit``.
"""

from __future__ import annotations

from journey_kit import Persona, Visit

POSTS = (
    "data-contracts-101",
    "cut-cloud-costs",
    "soc2-in-90-days",
    "etl-vs-elt",
    "observability-maturity",
    "pipeline-testing",
)
CUSTOMERS = ("northwind-logistics", "acme-health", "globex-retail", "initech-bank")
FEATURES = ("lineage", "quality-monitors", "catalog", "alerts", "integrations")
DOCS = ("quickstart", "sso", "api", "deployment", "rbac")
STEP1 = ("work_email",)
STEP2 = ("first_name", "last_name", "company", "company_size", "country", "phone", "role")
FREE_MAIL = "please use your business email address"


def page(
    v: Visit,
    path: str,
    page_type: str,
    scale: float,
    targets: tuple[str, ...] = (),
    shape: float = 0.9,
) -> None:
    v.view(path, page_type)
    v.read(v.dwell(scale, shape), targets)


def content(v: Visit, scale: float = 100.0) -> None:
    kind = v.rng.random()
    if kind < 0.5:
        page(v, f"/blog/{v.rng.choice(POSTS)}", "content", scale, ("a.toc-link", "a.cta-inline"))
    elif kind < 0.8:
        page(v, f"/customers/{v.rng.choice(CUSTOMERS)}", "content", scale, ("a.download-pdf",))
    else:
        page(v, f"/docs/{v.rng.choice(DOCS)}", "content", scale, ("button.copy-code", "a.toc"))


def pricing(v: Visit, seconds: float | None = None, clicks: int | None = None) -> None:
    v.view("/pricing", "pricing")
    v.read(
        v.dwell(60.0) if seconds is None else seconds,
        ("button.billing-toggle", "button.plan-details", "a.plan-faq"),
        clicks,
    )


def demo_form(
    v: Visit,
    errors1: dict[str, str] | None = None,
    errors2: dict[str, str] | None = None,
    site_fault: bool = False,
) -> None:
    """Open the demo form and fill both steps (no submit)."""
    v.view("/demo", "checkout")
    v.read(v.dwell(10.0), scroll=True, clicks=0)
    v.fill(STEP1, 1, errors=errors1, site_fault=site_fault)
    v.click("button#next-step")
    v.wait(v.think(2.0))
    v.fill(STEP2, 2, autofill=v.chance(0.3), errors=errors2, site_fault=site_fault)


def submit(v: Visit) -> None:
    """The goal: ``form_submit`` of the demo form, then the thank-you page and leave."""
    v.click("button#request-demo")
    v.emit("form_submit", field="demo_request", step=2)
    v.view("/demo/thanks", "confirmation")
    v.read(v.dwell(25.0), ("a.calendar-slot",), clicks=v.rng.randint(0, 2))
    v.leave()


def researcher(v: Visit) -> None:
    for _ in range(v.rng.randint(3, 10)):
        content(v)
    if v.chance(0.4):
        pricing(v)
    if v.chance(0.01):
        demo_form(v)
        return submit(v)
    v.leave()


def evaluator(v: Visit) -> None:
    page(v, "/", "home", 15.0, ("a.nav-product", "a.hero-demo"))
    for _ in range(v.rng.randint(2, 4)):
        page(v, f"/product/{v.rng.choice(FEATURES)}", "product", 60.0, ("button.tab", "video"))
    for _ in range(v.rng.randint(1, 3)):
        pricing(v)
        if v.chance(0.5):
            content(v, 80.0)
    page(v, f"/compare/{v.rng.choice(('legacy-etl', 'diy-scripts'))}", "compare", 90.0)
    if v.chance(0.6):
        page(v, v.rng.choice(("/faq", "/security")), "faq", 50.0, ("summary.question",))
    if v.chance(0.5):
        demo_form(v)
        if v.chance(0.25):
            return submit(v)
        v.wait(v.dwell(20.0))
    v.leave()


def pricing_ponderer(v: Visit) -> None:
    content(v, 60.0)
    pricing(v, v.rng.uniform(180, 600), clicks=v.rng.randint(0, 2))
    page(
        v,
        v.rng.choice(("/faq", "/compare/legacy-etl")),
        v.rng.choice(("faq", "compare")),
        60.0,
        ("summary.question",),
    )
    v.begin("hesitation")
    pricing(v, v.rng.uniform(120, 480), clicks=v.rng.randint(0, 1))
    if v.chance(0.4):
        v.away(v.rng.uniform(60, 900))
    v.view("/demo", "checkout")
    v.wait(v.think(8.0))
    for field in STEP1 + STEP2[: v.rng.randint(0, 1)]:
        v.emit("form_focus", field=field, step=1)
        v.wait(v.rng.uniform(20, 180))
    if v.chance(0.05):
        v.end("hesitation")
        v.fill(STEP1, 1)
        v.click("button#next-step")
        v.fill(STEP2, 2)
        return submit(v)
    v.wait(v.rng.uniform(30, 300))
    v.leave(exit_event=v.chance(0.2))


def ready_lead(v: Visit) -> None:
    page(
        v,
        f"/lp/{v.rng.choice(('webinar-replay', 'free-assessment', 'g2-leader'))}",
        "landing",
        30.0,
        ("a.hero-demo",),
    )
    demo_form(v)
    if v.chance(0.7):
        return submit(v)
    v.wait(v.dwell(15.0))
    v.leave()


def form_fighter(v: Visit) -> None:
    page(v, "/", "home", 15.0, ("a.hero-demo",))
    for _ in range(v.rng.randint(1, 3)):
        page(v, f"/product/{v.rng.choice(FEATURES)}", "product", 50.0, ("button.tab",))
    pricing(v)
    errors1 = {"work_email": FREE_MAIL}
    errors2 = {"phone": "enter the phone number with its country code"}
    demo_form(v, errors1, errors2 if v.chance(0.6) else None, site_fault=True)
    for _ in range(v.rng.randint(0, 2)):  # more rejected addresses
        v.fill(STEP1, 1, errors=errors1, site_fault=True)
    v.click("button#request-demo", dead=True)
    v.begin("friction")
    if v.chance(0.5):
        v.emit("error", error="captcha verification failed")
    v.wait(v.think(3.0))
    v.rage("button#request-demo")
    if v.chance(0.3):
        v.wait(v.think(10.0))
        v.view("/demo", "checkout")
        v.fill(STEP1, 1, autofill=True)
        v.click("button#next-step")
        v.fill(STEP2, 2, autofill=True)
        v.end("friction")
        return submit(v)
    v.wait(v.dwell(20.0))
    v.leave()


def existing_user(v: Visit) -> None:
    page(v, "/login", "account", 10.0)
    v.fill(("email", "password"), "login", autofill=True)
    for _ in range(v.rng.randint(1, 5)):
        if v.chance(0.5):
            page(v, f"/docs/{v.rng.choice(DOCS)}", "content", 70.0, ("button.copy-code",))
        else:
            page(v, "/support", "support", 40.0, ("a.ticket", "button#open-chat"))
    v.leave()


def bouncer(v: Visit) -> None:
    if v.chance(0.6):
        page(v, f"/blog/{v.rng.choice(POSTS)}", "content", 40.0, ("a.toc-link",), 0.7)
    else:
        page(v, "/lp/free-assessment", "landing", 15.0, ("a.hero-demo",), 0.7)
    if v.chance(0.2):
        content(v, 30.0)
    if v.chance(0.003):
        demo_form(v)
        return submit(v)
    v.leave()


PERSONAS = (
    Persona("researcher", 0.25, 0.25, researcher),
    Persona("evaluator", 0.15, 0.20, evaluator),
    Persona("pricing_ponderer", 0.10, 0.20, pricing_ponderer, may_hesitate=True),
    Persona("ready_lead", 0.04, 0.30, ready_lead),
    Persona("form_fighter", 0.06, 0.30, form_fighter, may_frustrate=True),
    Persona("existing_user", 0.15, 0.30, existing_user),
    Persona("bouncer", 0.25, 0.50, bouncer),
)
