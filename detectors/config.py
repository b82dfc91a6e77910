"""Every tunable of the detector core, in one frozen object.

Each field documents its unit, its range and where its default comes from. The
core never reads the environment: the shell (``stream.settings``) builds a
:class:`DetectorConfig` and passes it in, so replay, tests and the Faust worker
run identical code on identical settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from detectors.alerts import ALERT_KINDS

#: The event types of the contract (``detectors/event.schema.json``). One is
#: not the visitor's doing: ``intervention`` says the page showed the help an
#: alert suggested (``props.kind``, ``props.alert_id``); it only stops the
#: detector nudging the visitor again (``intervention_quiet_ms``).
EVENT_TYPES: frozenset[str] = frozenset(
    (
        "page_view", "click", "scroll", "form_focus", "form_input", "form_error",
        "form_submit", "search", "add_to_cart", "remove_from_cart", "checkout_step",
        "purchase", "error", "visibility", "exit", "custom", "intervention",
    )
)  # fmt: skip

PAGE_TYPES: tuple[str, ...] = (
    "home", "landing", "content", "category", "search", "product", "compare", "reviews",
    "pricing", "faq", "shipping", "returns", "cart", "checkout", "confirmation", "support",
    "account",
)  # fmt: skip

#: Journey stages in their nominal forward order. ``support`` sits outside the
#: order: a visit there is neither progress nor regression.
STAGE_ORDER: tuple[str, ...] = ("discover", "consider", "evaluate", "decide", "convert")
#: Every stage and its index in the per-stage arrays of the session state:
#: the forward order, then ``support``.
STAGE_INDEX: dict[str, int] = {s: i for i, s in enumerate((*STAGE_ORDER, "support"))}
#: Stages where a visitor weighs the purchase: stalls, hesitation and the
#: trust-drop rule are judged only here.
DELIBERATION_STAGES: frozenset[str] = frozenset({"evaluate", "decide"})

#: The trust challengers :mod:`detectors.challenger` builds (its ``CHALLENGERS``).
TRUST_CHALLENGERS: tuple[str, ...] = ("refit-linear",)

#: The journey stage of each page type.
DEFAULT_STAGE_MAP: dict[str, str] = {
    page_type: stage
    for stage, page_types in (
        ("discover", ("home", "landing", "content")),
        ("consider", ("category", "search", "product")),
        ("evaluate", ("compare", "reviews", "pricing", "faq", "shipping", "returns")),
        ("decide", ("cart", "checkout")),
        ("convert", ("confirmation",)),
        ("support", ("support", "account")),
    )
    for page_type in page_types
}

#: Ordered (regex, page_type) pairs tried against the path of ``page`` when an
#: event has no ``page_type``. First match wins; matching is case-insensitive
#: and uses ``re.search`` on the path only (scheme, host and query removed).
DEFAULT_PAGE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^/?$", "home"),
    (r"^/(index(\.html?)?|home)/?$", "home"),
    (r"/(order-)?(confirmation|thank-?you|success)\b", "confirmation"),
    (r"/checkout\b", "checkout"),
    (r"/(cart|basket|bag)\b", "cart"),
    (r"/compare\b", "compare"),
    (r"/reviews?\b", "reviews"),
    (r"/(pricing|plans|prices)\b", "pricing"),
    (r"/(faq|help/faq|questions)\b", "faq"),
    (r"/(shipping|delivery)\b", "shipping"),
    (r"/(returns?|refunds?|exchanges?)\b", "returns"),
    (r"/(support|help|contact)\b", "support"),
    (r"/(account|login|signin|sign-in|register|profile)\b", "account"),
    (r"/(search|s)\b", "search"),
    (r"/(products?|p|item|dp)/", "product"),
    (r"/(category|categories|c|collections?|shop)\b", "category"),
    (r"/(lp|landing|promo|campaign)\b", "landing"),
    (r"/(blog|articles?|guides?|news|content)\b", "content"),
)

#: Causes of an alert: the middle part of a playbook key. A friction pile-up's
#: cause is that of its leading signal (``SignalSpec.cause`` in
#: ``detectors.signals``); the trust model's rules have ``falling_trust``;
#: hesitation on an :data:`ANSWER_PAGES` page is ``unanswered_question``,
#: elsewhere ``long_deliberation``; a hotspot is ``problem_rate``.
CAUSES: dict[str, str] = {
    "broken_element": "rage, dead or error clicks: an element does not respond or fails",
    "form_trouble": "form errors, fields re-entered again and again, forms left unsent",
    "slow_page": "page loads slower than slow_page_ms",
    "navigation": "u-turns, page loops, scroll thrash: the visitor cannot find something",
    "falling_trust": "the trust model's chance to buy fell sharply or stayed far below normal",
    "long_deliberation": "a stall that is unusual for the stage",
    "unanswered_question": "hesitation on a page meant to answer a question (ANSWER_PAGES)",
    "problem_rate": "more visits to a page type end in friction or abandonment than before",
}
#: Page types whose job is to answer a question: hesitating there means the
#: answer is missing or hard to find, which a comparison guide does not fix.
ANSWER_PAGES: frozenset[str] = frozenset({"faq", "shipping", "returns"})

#: Playbook: suggested action by ``kind/cause/stage``. Lookup order:
#: ``kind/cause/stage``, ``kind/cause/*``, ``kind/*/stage``, ``kind/*``; every
#: kind needs its ``kind/*``. Kinds are ``detectors.alerts.ALERT_KINDS``,
#: causes :data:`CAUSES`, stages the keys of :data:`STAGE_INDEX`. Friction
#: that points at the page (broken elements, slow loads) goes to the page
#: owners; form trouble gets form help; hesitation on an answer page gets the
#: answer in context; what is left is picked by journey stage.
DEFAULT_PLAYBOOK: dict[str, str] = {
    "hesitation/unanswered_question/*": (
        "answer the question on the page itself (costs, delivery times, return terms) "
        "and offer chat"
    ),
    "hesitation/*/consider": "surface top-rated alternatives and a short buying guide",
    "hesitation/*/evaluate": "offer a comparison guide",
    "hesitation/*/decide": "show delivery, returns and payment reassurance next to the basket",
    "hesitation/*": "offer help through chat",
    "trust_loss/broken_element/decide": (
        "page owners: fix the checkout element that fails; meanwhile offer chat with a "
        "checkout specialist"
    ),
    "trust_loss/broken_element/*": "page owners: fix the element that does not respond or fails",
    "trust_loss/form_trouble/*": (
        "offer form help: clearer field hints and inline validation; page owners: check the "
        "fields that fail"
    ),
    "trust_loss/slow_page/*": "page owners: make the page load faster",
    "trust_loss/navigation/*": "make the next step easy to find: clearer links, menus and search",
    "trust_loss/*/consider": "offer an FAQ and a comparison of similar products",
    "trust_loss/*/evaluate": "show reviews and the returns policy in context",
    "trust_loss/*/decide": "open chat with a checkout specialist",
    "trust_loss/*": "offer help through chat",
    "friction_hotspot/*": "page owners: check the page for broken elements, errors or slow loads",
}

#: Click targets on which fast repeated clicks are normal: steppers, date
#: pickers, carousels, pagination and text (triple-click selects a paragraph).
#: These are the published complaints about naive rage-click rules (PostHog,
#: FullStory and Microsoft Clarity forums), so matching targets never count.
DEFAULT_RAGE_IGNORE_TARGETS: tuple[str, ...] = (
    r"(^|[^a-z])(qty|quantity|stepper|increment|decrement|plus|minus|spin)([^a-z]|$)",
    r"(^|[^a-z])(datepicker|date-picker|calendar|day|month|year)([^a-z]|$)",
    r"(^|[^a-z])(carousel|slider|gallery|swiper|thumbnails?)([^a-z]|$)",
    r"(^|[^a-z])(pagination|pager|page-\d+)([^a-z]|$)",
    r"^(p|span|h[1-6]|li|td|label|article)([.#][\w-]+)*$",
)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of the detector core.

    All durations are milliseconds of *event time* unless the name says
    otherwise. Defaults carry their source in the attribute docs below.
    """

    # --- input ---------------------------------------------------------------
    max_message_bytes: int = 65536
    """Size cap of one raw event in bytes (64 KiB). Larger input is rejected
    with reason ``too_large`` before JSON decoding."""
    goal_event: str = "purchase"
    """The event type that marks a conversion (``form_submit`` for lead gen)."""
    user_salt: str = "disengage-default-salt"
    """Salt for HMAC-SHA256 of ``user_id``. Set a secret in production."""
    page_patterns: tuple[tuple[str, str], ...] = DEFAULT_PAGE_PATTERNS
    """(regex, page_type) pairs, in order, used when ``page_type`` is absent
    (checked by ``detectors.config.validate_page_patterns``)."""
    stage_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STAGE_MAP))
    """page_type -> stage. Unknown page types fall back to ``consider``."""

    # --- session lifecycle ---------------------------------------------------
    session_timeout_ms: int = 30 * 60 * 1000
    """Inactivity after which a session closes (30 min, the Google Analytics
    session default). Up to several days is supported for long journeys."""
    allowed_lateness_ms: int = 30_000
    """Events older than the session's newest event minus this are late and are
    not applied (30 s covers client batching on flaky mobile links)."""
    max_clock_skew_ms: int = 10 * 60 * 1000
    """How far one event may move its stream's clock (10 min). An event
    further ahead of the clock is still applied to its session but does not
    move the clock (see :mod:`detectors.clock`), so a client clock hours fast
    cannot time out every open session. A third of the session timeout: an
    admitted skew closes idle sessions at most that much early; real clock
    faults are hours or days."""
    clock_quorum: int = 3
    """Distinct sessions that must have been seen further ahead than
    ``max_clock_skew_ms`` before the clock jumps (to the latest time that
    many reached): a gap in traffic, not one bad client."""
    dedup_capacity: int = 64
    """Event ids remembered per session for de-duplication (see
    :class:`detectors.session.SessionState`)."""
    snapshot_capacity: int = 8
    """Feature snapshots kept per session for delayed-label learning, spread
    evenly over the session's events (8 beat 4 and 16 in the prequential
    comparison recorded in ``benchmarks/bench_core.py``'s notes)."""

    # --- friction signals ----------------------------------------------------
    rage_min_clicks: int = 3
    """Clicks in a burst for a rage click (PostHog, Datadog RUM, Mixpanel: 3)."""
    rage_max_gap_ms: int = 1000
    """Max gap between consecutive clicks of a burst (same sources: 1 s)."""
    rage_max_distance_px: float = 30.0
    """Max distance between consecutive clicks of a burst (same sources: 30 px)."""
    rage_ignore_targets: tuple[str, ...] = DEFAULT_RAGE_IGNORE_TARGETS
    """Regexes of click targets where fast repeated clicks are normal."""
    error_click_window_ms: int = 1000
    """A click followed by an ``error`` event within this is an error click."""
    uturn_max_dwell_ms: int = 5000
    """Leaving a page within this, back to the previous page, is a u-turn
    (5 s; Google's "short click" / pogo-sticking studies use 5-10 s)."""
    loop_min_visits: int = 3
    """Visits to the same page that make a loop."""
    loop_window_ms: int = 10 * 60 * 1000
    """Window in which the loop visits must fall (10 min)."""
    thrash_min_reversals: int = 3
    """Scroll-direction reversals that make scroll thrash."""
    thrash_window_ms: int = 2000
    """Window for the reversals (2 s)."""
    form_refocus_min: int = 3
    """Focuses of the same field that count as form friction."""
    stall_ms: int = 120_000
    """No forward progress for this long, while active in evaluate or decide,
    is a stall (2 min: about twice the median product-page dwell reported by
    Contentsquare's Digital Experience Benchmark)."""
    active_gap_ms: int = 60_000
    """A session counts as active when its previous event is at most this old."""
    slow_page_ms: int = 3000
    """``load_ms`` above this is a slow page (Google: 53% of mobile visits are
    abandoned when a page takes longer than 3 s)."""

    # --- models --------------------------------------------------------------
    seed: int = 42
    """Seed of every randomised model."""
    hesitation_quantile: float = 0.97
    """Adaptive hesitation threshold: this quantile of the anomaly scores seen
    at evaluate/decide checkpoints. A hesitation alert needs a stall (the
    transparent rule) *and* a score above this quantile, i.e. a stall that is
    also among the 3% most unusual moments of its stage."""
    hesitation_warmup: int = 500
    """Checkpoints a stage model must see before its scores may alert."""
    hesitation_trees: int = 10
    """Half-Space Trees per stage model (1 or more; more trees give smoother
    scores at a linear cost in time and memory). 10 is River's
    ``anomaly.HalfSpaceTrees`` default."""
    hesitation_height: int = 8
    """Depth of each Half-Space Tree (1 or more; a tree has ``2**height``
    leaves, so memory doubles per level). 8 is River's default."""
    hesitation_window: int = 250
    """Checkpoints per reference window of the Half-Space Trees: the model
    scores against the mass profile of the previous window (1 or more). 250
    is River's default."""
    hesitation_horizon_ms: int = 180_000
    """The leave hazard predicts leaving without the goal within this much
    event time of a moment (3 min: "soon, while still here"; short enough
    that a nudge can still land, long enough to cover a typical page dwell)."""
    hesitation_hazard: float = 0.5
    """A hesitation alert needs the leave hazard at or above this probability:
    more likely than not to leave without the goal within the horizon."""
    hesitation_hazard_quantile: float = 0.9
    """... and among the highest hazards of its stage: at or above this
    rolling quantile of the hazards predicted at the stage's checks. An alert
    budget admits alerts first come, first served; this keeps the alerts for
    the moments most at risk (0 turns it off)."""
    hesitation_min_auc: float = 0.75
    """The hesitation rule alerts only while the leave hazard's own rolling
    ROC-AUC on closed sessions is at least this (the same "acceptable
    discrimination" bound as ``trust_min_auc``)."""
    hesitation_quiet_max_ms: int = 300_000
    """A quiet session in evaluate or decide is checked between its events
    (``Detector.tick``) until it has been quiet this long (5 min); after
    that it is more likely gone than hesitating, and the session timeout
    takes over."""
    trust_min_closed: int = 200
    """Closed sessions before the trust model may alert; until then trust-loss
    alerts use the transparent friction rule only."""
    trust_min_auc: float = 0.75
    """The model-based trust-loss rules alert only while the model's own
    rolling ROC-AUC on closed sessions is at least this: a score that does not
    predict outcomes must not page anyone (0.75 is the usual "acceptable
    discrimination" bound of Hosmer and Lemeshow)."""
    trust_strikes: int = 2
    """Consecutive scoring points the trust rule must hold before alerting."""
    trust_challenger: str = "refit-linear"
    """The challenger the trust model runs against (:mod:`detectors.challenger`):
    ``refit-linear`` (the linear learner refit every 500 sessions on the last
    1000) or ``none``. It serves only once promoted."""
    challenger_window_sessions: int = 1000
    """Closed sessions over which champion and challenger are compared (the
    most recent); a promotion needs a full window."""
    challenger_margin: float = 0.02
    """Smallest ROC-AUC lead (absolute) the challenger needs over the window
    to be promoted; the lead must also clear two standard errors of the AUC
    difference, which is larger on windows with few outcomes
    (:mod:`detectors.challenger`)."""
    trust_drop_quantile: float = 0.98
    """The fall from the peak (absolute probability) must also exceed this
    rolling quantile of the falls seen at evaluate/decide scoring points, so
    the model rule flags only the sharpest 2% of moments, whatever the traffic."""
    trust_drop: float = 0.5
    """Relative fall from the session's peak trust that counts as trust loss."""
    trust_min_peak_lift: float = 1.5
    """The peak must have reached this multiple of the base conversion rate:
    a visitor who never showed intent cannot lose confidence."""
    trust_floor_ratio: float = 0.25
    """Trust loss also fires when a session that reached the basket falls below
    this fraction of the base conversion rate."""
    trust_recover: float = 0.75
    """Hysteresis: the trust-loss episode ends when the score climbs back above
    this fraction of the peak."""
    friction_alert_score: float = 4.0
    """Weighted friction in the recent window that raises a trust-loss alert
    (weights in :data:`detectors.signals.SIGNAL_WEIGHTS`: e.g. two rage-click
    bursts, or a rage click and two form errors)."""
    friction_window_ms: int = 120_000
    """Window of the friction pile-up rule (2 min)."""
    hotspot_delta: float = 0.002
    """ADWIN confidence (its default)."""
    hotspot_min_rate_increase: float = 0.15
    """A drift is a hotspot when the problem rate rose by at least this
    (absolute, 0-1) over its level before the change."""
    hotspot_min_visits: int = 30
    """Page visits a key must see before it can raise a hotspot."""
    hotspot_max_keys: int = 512
    """Bound on the (page type, step) keys tracked for hotspots."""

    # --- alert policy --------------------------------------------------------
    alert_budget_per_1000: float = 60.0
    """Alert budget of marketing ops, in session alerts per 1000 sessions,
    every kind included (the project's target for what ops can act on). It
    is split between friction, trust-model and hesitation alerts by the
    ``alert_share_*`` weights, one token bucket each, and an empty bucket
    borrows only from one above half full
    (:class:`detectors.policy.AlertBudget`). 0 disables the budget."""
    alert_share_friction: float = 1.0
    """Weight of friction pile-ups in the alert budget (>= 0; the three
    weights are normalised). Equal by default: no kind starves another. A
    shop that acts on broken pages first can weigh friction higher."""
    alert_share_trust: float = 1.0
    """Weight of the trust model's alerts in the alert budget (>= 0)."""
    alert_share_hesitation: float = 1.0
    """Weight of hesitation alerts in the alert budget (>= 0)."""
    cooldown_ms: int = 5 * 60 * 1000
    """Minimum time between two alerts of the same kind for one session."""
    max_alerts_per_session: int = 1
    """Cap of session alerts (hesitation + trust_loss) per session: one nudge
    per visit, the usual frequency cap of on-site personalisation, so a
    visitor is never pestered and ops see each session once."""
    intervention_quiet_ms: int = 30 * 60 * 1000
    """After the page acknowledged showing an intervention for a session
    alert (an ``intervention`` event), no alert of that kind goes out for the
    session for this long (ms): the visitor is not nudged twice for the same
    trouble, even when ``max_alerts_per_session`` allows more alerts. 30
    minutes is the inactivity timeout of a web-analytics session, so the
    default is "not again in this visit"."""
    holdout_share: float = 0.1
    """Share of sessions (0-1) in the control group: their alerts go out
    marked ``treatment: "control"`` and nothing acts on them, so the
    conversion of alerted treated against alerted control sessions measures
    what acting on alerts is worth (:mod:`detectors.uplift`). 10% is the
    customary holdout of marketing experiments: small enough to cost little,
    large enough to measure an effect of a few points within weeks."""
    holdout_salt: str = "disengage-holdout"
    """Salt of the holdout assignment (HMAC-SHA256 of the session id). Set
    your own, so that the group of a session id cannot be guessed, and keep
    it: changing it reassigns the sessions."""
    hotspot_cooldown_ms: int = 15 * 60 * 1000
    """Minimum time between two hotspot alerts of the same key."""
    playbook: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PLAYBOOK))
    """Suggested actions by ``kind/cause/stage``, tried in the order
    ``kind/cause/stage``, ``kind/cause/*``, ``kind/*/stage``, ``kind/*``; every
    alert kind needs its ``kind/*`` (causes: ``detectors.config.CAUSES``;
    checked by ``detectors.config.validate_playbook``)."""
    source: str = "urn:disengage:detector"
    """CloudEvents ``source`` attribute of the alerts."""

    @property
    def alert_budget_capacities(self) -> tuple[float, float, float]:
        """The alert budget per family (friction, trust, hesitation), in
        alerts per 1000 sessions: ``alert_budget_per_1000`` split by the
        normalised ``alert_share_*`` weights.

        >>> config = DetectorConfig(alert_budget_per_1000=60.0, alert_share_friction=2.0)
        >>> config.alert_budget_capacities
        (30.0, 15.0, 15.0)
        """
        shares = (self.alert_share_friction, self.alert_share_trust, self.alert_share_hesitation)
        total = sum(shares)
        a, b, c = (self.alert_budget_per_1000 * w / total for w in shares)
        return a, b, c

    def with_overrides(self, **overrides: Any) -> DetectorConfig:
        """Return a copy with the given fields replaced; unknown names raise.

        >>> DetectorConfig().with_overrides(stall_ms=1000).stall_ms
        1000
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown detector setting(s): {', '.join(unknown)}")
        return replace(self, **overrides)

    def validate(self) -> DetectorConfig:
        """Check ranges; raise ``ValueError`` naming the bad setting."""
        if self.goal_event not in EVENT_TYPES:
            raise ValueError(f"goal_event {self.goal_event!r} is not an event type")
        for name in ("hesitation_quantile", "trust_drop_quantile"):
            if not 0.5 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0.5, 1)")
        shares = (self.alert_share_friction, self.alert_share_trust, self.alert_share_hesitation)
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError("alert_share_* must be >= 0 and not all 0")
        if not 0.0 <= self.hesitation_hazard_quantile < 1.0:
            raise ValueError("hesitation_hazard_quantile must be in [0, 1)")
        if not 0.0 < self.hesitation_hazard <= 1.0:
            raise ValueError("hesitation_hazard must be in (0, 1]")
        if self.trust_challenger not in ("none", *TRUST_CHALLENGERS):
            raise ValueError(
                f"trust_challenger must be one of none, {', '.join(TRUST_CHALLENGERS)}"
            )
        if not 0.0 <= self.holdout_share <= 1.0:
            raise ValueError("holdout_share must be in [0, 1]")
        if not self.holdout_salt:
            raise ValueError("holdout_salt must not be empty")
        if self.intervention_quiet_ms < 0:
            raise ValueError("intervention_quiet_ms must be >= 0")
        if self.challenger_window_sessions < 100:
            raise ValueError("challenger_window_sessions must be at least 100")
        if not 0.0 <= self.challenger_margin < 0.5:
            raise ValueError("challenger_margin must be in [0, 0.5)")
        if not 0.0 < self.trust_drop < 1.0:
            raise ValueError("trust_drop must be in (0, 1)")
        if self.session_timeout_ms <= 0 or self.session_timeout_ms > 30 * 86_400_000:
            raise ValueError("session_timeout_ms must be in (0, 30 days]")
        if self.max_clock_skew_ms <= 0:
            raise ValueError("max_clock_skew_ms must be > 0")
        if self.clock_quorum < 2:
            raise ValueError("clock_quorum must be at least 2")
        for name in ("rage_min_clicks", "loop_min_visits", "thrash_min_reversals"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2")
        for page_type, stage in self.stage_map.items():
            if stage not in STAGE_INDEX:
                raise ValueError(f"stage_map[{page_type!r}] = {stage!r} is not a stage")
        validate_page_patterns(self.page_patterns)
        validate_playbook(self.playbook)
        return self


def validate_playbook(playbook: Mapping[str, str]) -> dict[str, str]:
    """Check a playbook (see :data:`DEFAULT_PLAYBOOK`) and return it as a
    dict; ``ValueError`` names the first bad key.

    >>> validate_playbook({"hesitation/*": "a", "trust_loss/*": "b"})
    Traceback (most recent call last):
    ...
    ValueError: playbook has no fallback 'friction_hotspot/*' for kind friction_hotspot
    >>> validate_playbook({**DEFAULT_PLAYBOOK, "trust_loss/decide": "x"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: playbook key 'trust_loss/decide': write kind/cause/stage (e.g. 'trust_loss/*/dec...
    """
    if not isinstance(playbook, Mapping):
        raise ValueError("playbook must map kind/cause/stage keys to actions")
    for key, action in playbook.items():
        if not isinstance(key, str) or not isinstance(action, str) or not action.strip():
            raise ValueError(f"playbook[{key!r}] must be a non-empty action text")
        kind, *rest = key.split("/")
        if kind not in ALERT_KINDS:
            names = ", ".join(ALERT_KINDS)
            raise ValueError(f"playbook key {key!r}: unknown alert kind {kind!r} ({names})")
        if rest == ["*"]:
            continue
        if len(rest) != 2 or rest == ["*", "*"]:
            hint = f" (e.g. '{kind}/*/{rest[0]}')" if rest and rest[0] in STAGE_INDEX else ""
            raise ValueError(f"playbook key {key!r}: write kind/cause/stage{hint} or kind/*")
        for what, value, known in (("cause", rest[0], CAUSES), ("stage", rest[1], STAGE_INDEX)):
            if value != "*" and value not in known:
                names = ", ".join(known)
                raise ValueError(f"playbook key {key!r}: unknown {what} {value!r} ({names})")
    for kind in ALERT_KINDS:
        if f"{kind}/*" not in playbook:
            raise ValueError(f"playbook has no fallback '{kind}/*' for kind {kind}")
    return dict(playbook)


def validate_page_patterns(patterns: Iterable[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    """Check ordered (regex, page_type) pairs (lists from JSON are fine) and
    return them as a tuple of pairs; ``ValueError`` names the first bad one.

    >>> validate_page_patterns([["/kasse/?$", "checkout"]])
    (('/kasse/?$', 'checkout'),)
    >>> validate_page_patterns([["/kasse(", "checkout"]])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: page_patterns[0]: '/kasse(' is not a regex: missing ), ...
    >>> validate_page_patterns([["/kasse", "till"]])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: page_patterns[0]: 'till' is not a page type (home, landing, ...)
    """
    checked = []
    for number, pair in enumerate(patterns):
        if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"page_patterns[{number}]: {pair!r} is not a [regex, page_type] pair")
        pattern, page_type = pair
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            message = f"page_patterns[{number}]: {pattern!r} is not a regex: {exc}"
            raise ValueError(message) from None
        if page_type not in PAGE_TYPES:
            raise ValueError(
                f"page_patterns[{number}]: {page_type!r} is not a page type "
                f"({', '.join(PAGE_TYPES)})"
            )
        checked.append((pattern, page_type))
    return tuple(checked)
