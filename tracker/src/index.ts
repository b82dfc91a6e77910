/**
 * disengage browser tracker: what the detector's signals need, nothing more.
 *
 * - Clicks: x, y (CSS px), a stable hash of the target's selector, its tag
 *   and ARIA role, and a dead-click probe: `dead` is true when nothing
 *   reacted within `deadClickMs`, else false with `reaction_ms`. Rage is
 *   computed on the server (a click the page reacted to never counts).
 * - Scrolls: `scroll_pct`, at most every `scrollMs`.
 * - Forms: focus, input counts, errors (the `invalid` event or
 *   `aria-invalid="true"`), submit: field *names* only, never a value.
 * - Pages: `page_view` with `load_ms` (PerformanceNavigationTiming), SPA
 *   route changes through the History API. Paths only: no query, no fragment.
 * - Exit: `visibility` hidden/visible, and a flush by `sendBeacon` on hide.
 *
 * Delivery: batches of `batchSize` events or every `flushMs`; `fetch` with
 * keepalive, or `sendBeacon` in chunks under 16 KB when the page may go
 * away; backoff on 429 and 5xx (honouring Retry-After); a bounded queue.
 *
 * Interventions: `onIntervention(handler)` receives the session's alerts
 * (kind, severity, suggested action, reasons) from the collector's channel:
 * Server-Sent Events, or long polling where those fail. The collector issues
 * the channel's token in its answer to the tracker's own events, for this
 * session only; an expired token waits for the next answer's fresh one. The
 * last alert shown is kept (`localStorage`) so the session's next page does
 * not show it again; withdrawn consent closes the channel. A handler that shows help (returns anything but `false`)
 * makes the tracker acknowledge it with an `intervention` event, so the
 * visitor is not nudged twice. Dead clicks and form errors, the friction an
 * alert follows, are sent within `urgentMs` rather than the next batch.
 *
 * Privacy: nothing is collected before consent in consent mode; Do-Not-Track
 * and Global Privacy Control are honoured when `respectDnt` is set; text
 * inputs, contenteditable and modifier-key clicks are never recorded;
 * `data-disengage-ignore="rage dead"` excludes an element (and its subtree).
 */

export interface Options {
  /** Collector base URL including its path prefix, e.g. "https://c.example.com/dg". */
  endpoint: string;
  /** The site's write key. */
  key: string;
  /** Consent mode: nothing is collected until `consent(true)`. */
  requireConsent?: boolean;
  /** Honour Do-Not-Track and Global Privacy Control. */
  respectDnt?: boolean;
  /** Events per request (20, as Segment's and Snowplow's trackers batch). */
  batchSize?: number;
  /** Longest wait before queued events are sent (ms). */
  flushMs?: number;
  /** Bound of the queue: the oldest events are dropped beyond it. */
  maxQueue?: number;
  /**
   * Window of the dead-click probe (ms). A click with no DOM mutation,
   * navigation, request started, scroll or text selection within it, or
   * before the next click, is dead. Datadog RUM judges page activity within
   * 100 ms; PostHog waits 2.5 s for a mutation. 1 s sits between: slow
   * pages still react in time.
   */
  deadClickMs?: number;
  /** Least time between two scroll events (ms); 200 keeps direction reversals visible. */
  scrollMs?: number;
  /** Inactivity after which a new session starts (ms; the detector's default 30 min). */
  sessionTimeoutMs?: number;
  /**
   * Longest wait before a dead click or a form error is sent (ms). Help for
   * friction is worth most within seconds, so these do not wait for the batch.
   */
  urgentMs?: number;
}

/** An alert of this session, as the collector's channel sends it to the page. */
export interface Intervention {
  /** The alert's id (the same on every delivery). */
  id: string;
  kind: "hesitation" | "trust_loss";
  severity: "low" | "medium" | "high";
  /** The playbook's suggested action, in words. */
  action: string;
  stage: string | null;
  page: string | null;
  /** RFC 3339 event time of the trigger. */
  time: string;
  /** Why, in plain words (at most three). */
  reasons: { signal: string; text: string }[];
}

/** Shows help for an intervention; return `false` when nothing was shown. */
export type InterventionHandler = (intervention: Intervention) => boolean | void;

type Value = string | number | boolean;
type Props = Record<string, Value>;

interface TrackedEvent {
  session_id: string;
  ts: number;
  type: string;
  event_id: string;
  page?: string;
  props?: Props;
}

interface PendingClick {
  event: TrackedEvent;
  props: Props;
  at: number;
}

const DEFAULTS = {
  requireConsent: false,
  respectDnt: false,
  batchSize: 20,
  flushMs: 3000,
  maxQueue: 500,
  deadClickMs: 1000,
  scrollMs: 200,
  sessionTimeoutMs: 30 * 60 * 1000,
  urgentMs: 250,
};
/** Failed SSE connections in a row after which the channel falls back to long polling. */
const SSE_FAILURES = 3;
/** sendBeacon payloads stay under this (browsers cap the total in flight at 64 KB). */
const BEACON_BYTES = 16000;
const STORAGE_KEY = "dg_sid";
/** "<session id>.<alert id>" of the last intervention shown, so the next page of the session resumes after it. */
const LAST_KEY = "dg_last";
const MAX_BACKOFF_MS = 60000;

type Config = typeof DEFAULTS & { endpoint: string; key: string };

function now(): number {
  return Date.now();
}

/** The last intervention shown to ``session`` on an earlier page, or "". */
function readLast(session: string): string {
  try {
    const [sid, id] = (localStorage.getItem(LAST_KEY) ?? "").split(".");
    return sid === session && id ? id : "";
  } catch {
    return "";
  }
}

function randomHex(bytes: number): string {
  const out = new Uint8Array(bytes);
  crypto.getRandomValues(out);
  let text = "";
  out.forEach((b) => (text += (b + 256).toString(16).slice(1)));
  return text;
}

/** FNV-1a, 32 bits, as 8 hex characters: a stable, short name of a selector. */
export function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** tag#id.class1.class2 of an element and up to two ancestors (no indexes: stable across renders). */
export function selector(el: Element): string {
  const parts: string[] = [];
  let node: Element | null = el;
  for (let depth = 0; node && depth < 3; depth++, node = node.parentElement) {
    let part = node.tagName.toLowerCase();
    const id = node.getAttribute("id");
    if (id && !/\d{3,}/.test(id)) part += "#" + id;
    const classes = Array.from(node.classList).filter((c) => !/\d{3,}/.test(c)).sort();
    if (classes.length) part += "." + classes.slice(0, 3).join(".");
    parts.unshift(part);
  }
  return parts.join(">");
}

function ignored(el: Element, what: string): boolean {
  const owner = el.closest("[data-disengage-ignore]");
  const tokens = owner?.getAttribute("data-disengage-ignore") ?? "";
  return tokens.split(/\s+/).some((t) => t === what || t === "all");
}

function isTextEntry(el: Element): boolean {
  if ((el as HTMLElement).isContentEditable) return true;
  if (el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) return true;
  if (!(el instanceof HTMLInputElement)) return false;
  return !/^(button|submit|reset|checkbox|radio|image|file|range|color)$/.test(el.type);
}

/** A field's name, id or tag (attributes, not properties: a form's `name` may be one of its inputs). */
function fieldName(el: Element): string {
  return (el.getAttribute("name") || el.getAttribute("id") || el.tagName.toLowerCase()).slice(0, 100);
}

function isField(el: EventTarget | null): el is Element {
  return (
    el instanceof HTMLInputElement ||
    el instanceof HTMLTextAreaElement ||
    el instanceof HTMLSelectElement
  );
}

export class Tracker {
  private readonly cfg: Config;
  private queue: TrackedEvent[] = [];
  private pending: PendingClick[] = [];
  private timer: number | undefined;
  private backoffUntil = 0;
  private failures = 0;
  private sending = false;
  private granted: boolean;
  private readonly disabled: boolean;
  private page = location.pathname;
  private lastScroll = 0;
  private lastPct = -1;
  private scrollTimer: number | undefined;
  private readonly inputs = new Map<string, number>();
  private memorySession: { id: string; last: number } | null = null;
  private multiClick = false;
  /** The first page view, held until the page loaded (for its load_ms), at most 10 s. */
  private holding: TrackedEvent | null = null;
  private readonly handlers: InterventionHandler[] = [];
  /** The channel: its token and session, what was delivered, the open connection. */
  private token = "";
  private tokenSession = "";
  /** When the token expires (ms, this page's clock). */
  private tokenExpires = 0;
  private channelSession = "";
  private lastId = "";
  private readonly delivered = new Set<string>();
  private source: EventSource | null = null;
  private polling = false;
  private sseFailures = 0;
  /** Events dropped because the queue was full (since the page loaded). */
  dropped = 0;

  constructor(options: Options) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.cfg = { ...DEFAULTS, ...given } as Config;
    this.granted = !this.cfg.requireConsent;
    const nav = navigator as Navigator & { globalPrivacyControl?: boolean };
    const win = window as Window & { doNotTrack?: string };
    this.disabled =
      this.cfg.respectDnt &&
      (nav.doNotTrack === "1" || win.doNotTrack === "1" || nav.globalPrivacyControl === true);
    if (this.disabled) return;
    this.listen();
    this.pageView(true);
  }

  /** Give (true) or withdraw (false) consent; withdrawing drops what is queued. */
  consent(granted: boolean): void {
    const before = this.granted;
    this.granted = granted;
    if (!granted) {
      this.queue = [];
      this.pending = [];
      this.holding = null;
      this.closeChannel();
      try {
        localStorage.removeItem(STORAGE_KEY);
      } catch {
        // storage blocked: nothing stored
      }
      this.memorySession = null;
    } else if (!before) {
      this.pageView(true);
    }
  }

  /** Send what is queued now (by beacon when the page may be going away). */
  flush(beacon = false): void {
    if (!this.granted) return;
    if (beacon) this.settle();
    const ready = this.ready();
    if (!ready.length || (!beacon && (this.sending || now() < this.backoffUntil))) return;
    if (beacon) {
      this.beacon(ready);
      return;
    }
    const batch = ready.slice(0, this.cfg.batchSize);
    this.queue = this.queue.filter((e) => !batch.includes(e));
    this.post(batch);
  }

  /** Queue an event; ``type`` is one of the collector contract's types. */
  track(type: string, props?: Props, ts = now()): TrackedEvent | undefined {
    if (this.disabled || !this.granted) return undefined;
    const event: TrackedEvent = {
      session_id: this.session(ts),
      ts,
      type,
      event_id: randomHex(12),
      page: this.page,
    };
    if (props && Object.keys(props).length) event.props = props;
    this.queue.push(event);
    if (this.queue.length > this.cfg.maxQueue) {
      this.queue.shift();
      this.dropped++;
    }
    this.schedule(this.ready().length >= this.cfg.batchSize ? 0 : this.cfg.flushMs);
    return event;
  }

  /**
   * Receive this session's interventions; returns a function that removes
   * the handler. The channel opens with the first handler.
   */
  onIntervention(handler: InterventionHandler): () => void {
    this.handlers.push(handler);
    this.connect();
    return () => {
      const i = this.handlers.indexOf(handler);
      if (i >= 0) this.handlers.splice(i, 1);
    };
  }

  // -------------------------------------------------------------- channel
  /** Open the channel of the newest token's session, if a handler wants it. */
  private connect(): void {
    if (!this.handlers.length || !this.token || this.disabled || !this.granted) return;
    if (now() >= this.tokenExpires) return; // the next events answer brings a fresh token
    if (this.channelSession === this.tokenSession && (this.source || this.polling)) return;
    this.source?.close();
    this.source = null;
    if (this.channelSession !== this.tokenSession) {
      // a new session, or a new page of it: resume after what was shown already
      this.channelSession = this.tokenSession;
      this.lastId = readLast(this.channelSession);
    }
    if (typeof EventSource === "function" && this.sseFailures < SSE_FAILURES) this.stream();
    else if (!this.polling) void this.poll();
  }

  /** Stop receiving (consent withdrawn): nothing of the session is kept. */
  private closeChannel(): void {
    this.source?.close();
    this.source = null;
    this.token = "";
    this.tokenSession = "";
    this.channelSession = "";
    this.lastId = "";
    this.delivered.clear();
    try {
      localStorage.removeItem(LAST_KEY);
    } catch {
      // storage blocked: nothing stored
    }
  }

  private channelUrl(path: string): string {
    const last = this.lastId ? `&last=${encodeURIComponent(this.lastId)}` : "";
    return `${this.cfg.endpoint}/${path}?token=${encodeURIComponent(this.token)}${last}`;
  }

  private stream(): void {
    const source = new EventSource(this.channelUrl("s"));
    this.source = source;
    source.onopen = () => {
      this.sseFailures = 0;
    };
    source.addEventListener("intervention", (m) => this.deliver((m as MessageEvent<string>).data));
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return; // reconnecting by itself
      if (this.source === source) this.source = null;
      // an expired token is no failure of the stream: the next events answer
      // brings a fresh one and opens it again (takeToken)
      if (now() >= this.tokenExpires - 1000) return;
      this.sseFailures++;
      setTimeout(() => this.connect(), 1000 * this.sseFailures);
    };
  }

  private async poll(): Promise<void> {
    this.polling = true;
    let failures = 0;
    while (
      this.handlers.length &&
      this.granted &&
      this.channelSession === this.tokenSession &&
      now() < this.tokenExpires
    ) {
      try {
        const resp = await fetch(this.channelUrl("p"), { credentials: "omit" });
        if (!resp.ok) throw new Error(String(resp.status));
        const answer = (await resp.json()) as { interventions: unknown[] };
        for (const item of answer.interventions) this.deliver(JSON.stringify(item));
        failures = 0;
      } catch {
        failures++;
        await new Promise((r) => setTimeout(r, Math.min(MAX_BACKOFF_MS, 1000 * 2 ** failures)));
      }
    }
    this.polling = false;
    this.connect();
  }

  private deliver(data: string): void {
    let item: Intervention;
    try {
      item = JSON.parse(data) as Intervention;
    } catch {
      return;
    }
    if (!item.id || this.delivered.has(item.id)) return;
    this.delivered.add(item.id);
    this.lastId = item.id;
    try {
      localStorage.setItem(LAST_KEY, `${this.channelSession}.${item.id}`);
    } catch {
      // storage blocked: the next page of this session may show it again
    }
    let shown = false;
    for (const handler of this.handlers.slice()) {
      try {
        if (handler(item) !== false) shown = true;
      } catch {
        // a failing handler must not stop the others
      }
    }
    if (shown) this.track("intervention", { kind: item.kind, alert_id: item.id, action: item.action });
  }

  // ------------------------------------------------------------- sessions
  private session(ts: number): string {
    let stored = this.memorySession;
    try {
      const raw = localStorage.getItem(STORAGE_KEY);
      if (raw) {
        const [id, last] = raw.split(".");
        if (id && last) stored = { id, last: Number(last) };
      }
    } catch {
      // storage blocked (privacy mode): the session lives in memory
    }
    if (!stored || ts - stored.last > this.cfg.sessionTimeoutMs) {
      stored = { id: randomHex(16), last: ts };
    }
    stored.last = Math.max(stored.last, ts);
    this.memorySession = stored;
    try {
      localStorage.setItem(STORAGE_KEY, `${stored.id}.${stored.last}`);
    } catch {
      // as above
    }
    return stored.id;
  }

  // ------------------------------------------------------------- capture
  private listen(): void {
    const doc = document;
    const opts = { capture: true, passive: true };
    doc.addEventListener("click", (e) => this.onClick(e), opts);
    addEventListener(
      "scroll",
      () => {
        this.react();
        this.onScroll();
      },
      opts,
    );
    doc.addEventListener("focusin", (e) => this.onFocus(e), opts);
    doc.addEventListener("input", (e) => this.onInput(e), opts);
    doc.addEventListener("focusout", (e) => this.onBlur(e), opts);
    doc.addEventListener("invalid", (e) => this.onInvalid(e.target), opts);
    doc.addEventListener("submit", (e) => this.onSubmit(e), opts);
    // a caret moved by the click itself is no reaction; text selected is,
    // unless a double or triple click selected it (a rage burst does that)
    doc.addEventListener("mousedown", (e) => (this.multiClick = e.detail > 1), opts);
    doc.addEventListener(
      "selectionchange",
      () => !this.multiClick && String(getSelection() ?? "").length > 0 && this.react(),
      opts,
    );
    doc.addEventListener("visibilitychange", () => this.onVisibility(), opts);
    addEventListener("pagehide", () => this.flush(true), opts);
    addEventListener("popstate", () => this.onRoute(), opts);
    addEventListener("hashchange", () => this.react(), opts);
    for (const name of ["pushState", "replaceState"] as const) {
      const original = history[name];
      history[name] = (...args: Parameters<History["pushState"]>) => {
        original.apply(history, args);
        this.onRoute();
      };
    }
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === "attributes" && r.attributeName === "aria-invalid") {
          if ((r.target as Element).getAttribute("aria-invalid") === "true") {
            this.onInvalid(r.target);
          }
        }
      }
      this.react();
    }).observe(doc, { subtree: true, childList: true, attributes: true, characterData: true });
    // a request the page starts is a reaction (the tracker's own are not)
    const ours = (url: unknown): boolean => String(url).startsWith(this.cfg.endpoint);
    const fetcher = window.fetch;
    window.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
      if (!ours(input instanceof Request ? input.url : input)) this.react();
      return fetcher.call(window, input, init);
    };
    const open = XMLHttpRequest.prototype.open;
    const track = this;
    XMLHttpRequest.prototype.open = function (this: XMLHttpRequest, ...args: unknown[]) {
      if (!ours(args[1])) track.react();
      return (open as (...a: unknown[]) => void).apply(this, args);
    };
  }

  private onClick(e: Event): void {
    const mouse = e as MouseEvent;
    const el = e.target;
    if (!(el instanceof Element)) return;
    if (mouse.ctrlKey || mouse.metaKey || mouse.shiftKey || mouse.altKey) return;
    if (isTextEntry(el)) return;
    const props: Props = {
      x: Math.round(mouse.clientX),
      y: Math.round(mouse.clientY),
      target: "h:" + hash(selector(el)),
      tag: el.tagName.toLowerCase(),
    };
    const role = el.getAttribute("role");
    if (role) props.role = role.slice(0, 40);
    if (ignored(el, "rage")) props.ignore_rage = true;
    // a click still waiting for its reaction when the next one comes saw
    // none: its window ends here (a later reaction answers the new click)
    for (const waiting of this.pending.slice()) this.resolve(waiting, null);
    const event = this.track("click", props);
    if (!event || ignored(el, "dead")) return;
    const click: PendingClick = { event, props, at: performance.now() };
    this.pending.push(click);
    setTimeout(() => this.resolve(click, null), this.cfg.deadClickMs);
  }

  /** Something on the page reacted: every click waiting for one has its answer. */
  private react(): void {
    const t = performance.now();
    for (const click of this.pending.slice()) {
      if (t >= click.at) this.resolve(click, Math.round(t - click.at));
    }
  }

  private resolve(click: PendingClick, reactionMs: number | null): void {
    const i = this.pending.indexOf(click);
    if (i < 0) return;
    this.pending.splice(i, 1);
    if (reactionMs === null) {
      click.props.dead = true;
    } else {
      click.props.dead = false;
      click.props.reaction_ms = reactionMs;
    }
    click.event.props = click.props;
    if (this.ready().length) this.schedule(reactionMs === null ? this.cfg.urgentMs : this.cfg.flushMs);
  }

  /** Before a beacon: probes still open, and a page view waiting for its load, go as they are. */
  private settle(): void {
    this.pending = [];
    this.holding = null;
  }

  private onScroll(): void {
    const t = now();
    const wait = this.lastScroll + this.cfg.scrollMs - t;
    if (wait > 0) {
      if (this.scrollTimer === undefined) {
        this.scrollTimer = window.setTimeout(() => {
          this.scrollTimer = undefined;
          this.onScroll();
        }, wait);
      }
      return;
    }
    const root = document.documentElement;
    const height = Math.max(root.scrollHeight, 1);
    const pct = Math.min(100, Math.round(((scrollY + innerHeight) / height) * 1000) / 10);
    if (Math.abs(pct - this.lastPct) < 1) return;
    this.lastScroll = t;
    this.lastPct = pct;
    this.track("scroll", { scroll_pct: pct });
  }

  private onFocus(e: Event): void {
    if (isField(e.target)) this.track("form_focus", { field: fieldName(e.target) });
  }

  private onInput(e: Event): void {
    if (!isField(e.target)) return;
    const name = fieldName(e.target);
    this.inputs.set(name, (this.inputs.get(name) ?? 0) + 1);
  }

  private onBlur(e: Event): void {
    if (!isField(e.target)) return;
    const name = fieldName(e.target);
    const count = this.inputs.get(name);
    if (count) {
      this.inputs.delete(name);
      this.track("form_input", { field: name, inputs: count });
    }
  }

  private onInvalid(target: EventTarget | Node | null): void {
    if (!(target instanceof Element)) return;
    this.track("form_error", { field: fieldName(target) });
    this.schedule(this.cfg.urgentMs);
  }

  private onSubmit(e: Event): void {
    const form = e.target;
    if (form instanceof HTMLFormElement) {
      const name = form.getAttribute("name") || form.getAttribute("id") || "form";
      this.track("form_submit", { field: name.slice(0, 100) });
    }
  }

  private onVisibility(): void {
    const hidden = document.visibilityState === "hidden";
    this.track("visibility", { state: hidden ? "hidden" : "visible" });
    if (hidden) this.flush(true);
  }

  private onRoute(): void {
    this.react();
    if (location.pathname !== this.page) this.pageView(false);
  }

  private pageView(first: boolean): void {
    this.page = location.pathname;
    const event = this.track("page_view");
    if (!event || !first) return;
    const release = (): void => {
      if (this.holding !== event) return;
      const nav = performance.getEntriesByType("navigation")[0] as
        | PerformanceNavigationTiming
        | undefined;
      if (nav && nav.loadEventEnd > 0) {
        event.props = { ...event.props, load_ms: Math.round(nav.loadEventEnd - nav.startTime) };
      }
      this.holding = null;
      if (this.ready().length) this.schedule(this.cfg.flushMs);
    };
    this.holding = event; // sent once the page loaded, with load_ms (10 s at most)
    if (document.readyState === "complete") release();
    else {
      addEventListener("load", () => setTimeout(release, 0), { once: true });
      setTimeout(release, 10000);
    }
  }

  // ------------------------------------------------------------- delivery
  /** Queued events up to the first click still waiting for its probe. */
  private ready(): TrackedEvent[] {
    const open = new Set(this.pending.map((c) => c.event));
    if (this.holding) open.add(this.holding);
    const out: TrackedEvent[] = [];
    for (const e of this.queue) {
      if (open.has(e)) break;
      out.push(e);
    }
    return out;
  }

  private schedule(delay: number): void {
    if (this.timer !== undefined) {
      if (delay > 0) return;
      clearTimeout(this.timer);
    }
    const wait = Math.max(delay, this.backoffUntil - now(), 0);
    this.timer = window.setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
  }

  private url(): string {
    return `${this.cfg.endpoint}/e?k=${encodeURIComponent(this.cfg.key)}`;
  }

  private post(batch: TrackedEvent[]): void {
    this.sending = true;
    const body = JSON.stringify(batch);
    fetch(this.url(), {
      method: "POST",
      body,
      // text/plain: a "simple" request, no CORS preflight
      headers: { "Content-Type": "text/plain" },
      keepalive: new TextEncoder().encode(body).length < 60000,
      credentials: "omit",
    })
      .then(async (resp): Promise<void> => {
        if (resp.status === 429 || resp.status >= 500) {
          this.retry(batch, Number(resp.headers.get("Retry-After")) * 1000);
          return;
        }
        this.failures = 0; // 2xx, or a 4xx that a retry would not fix
        const first = batch[0];
        if (resp.status === 202 && first) await this.takeToken(resp, first.session_id);
      })
      .catch(() => this.retry(batch, 0))
      .then(() => {
        this.sending = false;
        if (this.ready().length) this.schedule(this.queue.length >= this.cfg.batchSize ? 0 : this.cfg.flushMs);
      });
  }

  /** The channel token of an events answer (for this session's channel). */
  private async takeToken(resp: Response, session: string): Promise<void> {
    try {
      const answer = (await resp.json()) as { channel?: { token?: string; expires_in?: number } };
      if (!answer.channel?.token || !this.granted) return;
      const renewed = this.token !== answer.channel.token;
      this.token = answer.channel.token;
      this.tokenSession = session;
      this.tokenExpires = now() + 1000 * (answer.channel.expires_in ?? 0);
      if (renewed) this.sseFailures = 0; // a fresh token: the stream gets another chance
      this.connect();
    } catch {
      // no JSON answer: no channel
    }
  }

  private retry(batch: TrackedEvent[], retryAfterMs: number): void {
    if (!this.granted) return; // consent withdrawn meanwhile: the batch is dropped
    this.failures++;
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.failures - 1));
    this.backoffUntil = now() + Math.max(backoff, retryAfterMs || 0);
    this.queue = batch.concat(this.queue).slice(-this.cfg.maxQueue);
  }

  private beacon(events: TrackedEvent[]): void {
    const url = this.url();
    let chunk: TrackedEvent[] = [];
    let size = 2;
    const send = (): boolean => {
      if (!chunk.length) return true;
      const blob = new Blob([JSON.stringify(chunk)], { type: "text/plain" });
      const ok = typeof navigator.sendBeacon === "function" && navigator.sendBeacon(url, blob);
      if (ok) this.queue = this.queue.filter((e) => !chunk.includes(e));
      chunk = [];
      size = 2;
      return ok;
    };
    const encoder = new TextEncoder();
    for (const e of events) {
      const bytes = encoder.encode(JSON.stringify(e)).length + 1;
      if (size + bytes > BEACON_BYTES && !send()) return;
      chunk.push(e);
      size += bytes;
    }
    send();
  }
}

declare global {
  interface Window {
    disengage?: Tracker;
  }
}

/** Start from the script tag's data attributes, when it has them. */
function autostart(): void {
  const script = document.currentScript as HTMLScriptElement | null;
  const data = script?.dataset;
  if (!data?.endpoint || !data.key || window.disengage) return;
  window.disengage = new Tracker({
    endpoint: data.endpoint.replace(/\/$/, ""),
    key: data.key,
    requireConsent: data.consent === "required",
    respectDnt: data.respectDnt === "true",
  });
}

autostart();
