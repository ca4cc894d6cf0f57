/**
 * The telephony page: the org's Twilio credential (a summary — the API never
 * returns the auth token), the phone numbers the platform bought for it
 * ("managed numbers") with the assistant each routes to, a Delete button that
 * releases one and a Change assistant action, and a "Buy a number" panel.
 *
 * THIS IS THE REFERENCE the frontend team copies into the dashboard's
 * `/dashboard/telephony` page. Keep it small, framework-free and obvious:
 *
 *   1. `TelephonyApi`  — the five calls, bearer token, errors as `ApiError`.
 *   2. `describe*`     — what each API state means, in words for people.
 *   3. `mountTelephonyPage` — state, rendering, and the release, buy and
 *      change-assistant flows.
 *
 * Behaviour the dashboard must keep:
 *   - Buying: only a result with a price can be bought; the confirmation states
 *     the number and the price exactly ("$1.15/month, billed to your account").
 *     201/200 `active` → it is in the list; 202 `provisioning` → it finishes on its
 *     own (listed as "Being set up", no Delete); 409 `number_unavailable` → taken
 *     by someone else in the meantime, search again. Repeating a purchase never
 *     buys twice, so after a timeout "refresh, then try again" is safe.
 *   - DELETE and PATCH with `encodeURIComponent(phoneNumber)` (`+` travels as `%2B`).
 *   - Confirm first, naming the number and saying it cannot be undone.
 *   - Four outcomes: 200 `released`; 202 `release_pending` (it no longer takes
 *     calls, but a provider step failed, so it may still be billed: offer Retry,
 *     which repeats the DELETE and resumes); 202 `needs_attention` (the same after
 *     too many failed attempts: reconcile stopped, Retry still works); 202
 *     `releasing` (another request is doing it right now).
 *   - Show every error in words: `error.message` and the request id (support
 *     finds the request's logs by it). Never swallow one.
 *
 * Configuration (where the API is and which bearer token): see `loadConfig`.
 */

// ---------------------------------------------------------------------------
// 1. The API
// ---------------------------------------------------------------------------

export type NumberStatus =
  | "provisioning"
  | "active"
  | "releasing"
  | "release_pending"
  | "needs_attention"
  | "released";
export type Provider = "vapi" | "twilio";
/** A purchase's steps: the org's Twilio subaccount, buying at Twilio, importing into Vapi. */
export type PurchaseStep = "subaccount" | "twilio" | "vapi";

export interface ManagedNumber {
  phoneNumber: string;
  status: NumberStatus;
  vapiPhoneId: string | null;
  /** `null` until a purchase has bought it. */
  twilioPhoneSid: string | null;
  /** The Vapi assistant it routes to (`null`: none). */
  assistantId?: string | null;
  /** Its name at Vapi. */
  name?: string | null;
  /** An assistant change Vapi has not confirmed yet (the API sends it again). */
  assistantPending?: boolean;
  createdAt: string;
  releasedAt: string | null;
  /** Present while a release is unfinished: steps left and their last error codes. */
  release?: {
    pending: Provider[];
    attempts: number;
    nextAttemptAt?: string | null;
    errors?: Partial<Record<Provider, string>>;
  };
  /** Present while a purchase is unfinished (`provisioning`): steps left, last errors. */
  purchase?: {
    pending: PurchaseStep[];
    attempts: number;
    nextAttemptAt?: string | null;
    errors?: Partial<Record<PurchaseStep, string>>;
  };
}

export interface CredentialSummary {
  accountSid: string | null;
  phoneNumber: string | null;
  source: "byoc" | "managed";
  vapiCredentialId: string | null;
  updatedAt: string;
  vapi: { synced: boolean; syncedAt: string | null; code?: string };
}

export interface TelephonyStatus {
  credential: CredentialSummary | null;
  numbers: ManagedNumber[];
}

export type ReleaseOutcome =
  | { status: "released"; phoneNumber: string; releasedAt: string }
  | {
      status: "release_pending" | "needs_attention";
      phoneNumber: string;
      pending: Provider[];
      errors: Partial<Record<Provider, string>>;
    }
  | { status: "releasing"; phoneNumber: string };

/** A search: US numbers by area code, optionally containing digits or letters. */
export interface SearchFilters {
  areaCode?: string;
  contains?: string;
  limit?: number;
}

/** A monthly price as Twilio states it: a decimal string and an ISO currency. */
export interface MonthlyPrice {
  amount: string;
  currency: string;
}

/** A number Twilio offers now. Not a reservation: someone else may buy it first. */
export interface OfferedNumber {
  phoneNumber: string;
  friendlyName: string | null;
  locality: string | null;
  region: string | null;
  isoCountry: string | null;
  capabilities: { voice: boolean; sms: boolean; mms: boolean };
  addressRequirements: string;
  /** `null` when the price could not be fetched: such a number is not offered for sale here. */
  monthlyPrice: MonthlyPrice | null;
}

export interface SearchResult {
  country: string;
  type: "local" | "toll_free";
  numbers: OfferedNumber[];
  /** `false` when Twilio's prices could not be fetched (the numbers are still listed). */
  pricesAvailable: boolean;
}

export interface PurchaseRequest {
  phoneNumber: string;
  /** A Vapi assistant id (a lowercase UUID). */
  assistantId?: string;
  /** Its name at Vapi, 1–40 characters. */
  name?: string;
}

export type PurchaseOutcome =
  | {
      status: "active";
      phoneNumber: string;
      twilioPhoneSid: string | null;
      vapiPhoneId: string | null;
      assistantId: string | null;
      name: string | null;
    }
  | {
      status: "provisioning";
      phoneNumber: string;
      pending: PurchaseStep[];
      errors: Partial<Record<PurchaseStep, string>>;
    };

export interface RouteChange {
  assistantId: string;
  name?: string;
}

/** The number's routing after a PATCH; `routed: false` (202): Vapi has not confirmed it yet. */
export interface Routing {
  phoneNumber: string;
  assistantId: string;
  name: string | null;
  routed: boolean;
  code?: string;
}

/** An API answer other than 2xx, or no answer at all (`status` 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | null,
  ) {
    super(message);
  }
}

export interface TelephonyConfig {
  /** The API's origin, e.g. `https://api.example.com` (no trailing slash needed). */
  apiBase: string;
  /** The signed-in user's access token; called before every request, so it may refresh. */
  getToken: () => string | Promise<string>;
}

/** API Gateway gives up after 30 s; wait a little longer than that, never forever. */
const REQUEST_TIMEOUT_MS = 35_000;

export class TelephonyApi {
  constructor(private readonly config: TelephonyConfig) {}

  /** Active numbers and numbers still being released, newest first. */
  status(): Promise<TelephonyStatus> {
    return this.call<TelephonyStatus>("GET", "/api/managed-telephony/status");
  }

  /** Release one number. Repeating it resumes an unfinished release. */
  release(phoneNumber: string): Promise<ReleaseOutcome> {
    const path = `/api/managed-telephony/numbers/${encodeURIComponent(phoneNumber)}`;
    return this.call<ReleaseOutcome>("DELETE", path);
  }

  /** Numbers Twilio offers now, each with its monthly price (or `null`). */
  searchNumbers(filters: SearchFilters): Promise<SearchResult> {
    const query = new URLSearchParams();
    if (filters.areaCode) query.set("areaCode", filters.areaCode);
    if (filters.contains) query.set("contains", filters.contains);
    if (filters.limit) query.set("limit", String(filters.limit));
    const qs = query.toString();
    return this.call<SearchResult>("GET", `/api/managed-telephony/available-numbers${qs ? `?${qs}` : ""}`);
  }

  /** Buy one number (201 `active`, 200 when it already was, 202 `provisioning`). Repeating it never buys twice. */
  buy(request: PurchaseRequest): Promise<PurchaseOutcome> {
    return this.call<PurchaseOutcome>("POST", "/api/managed-telephony/numbers", request);
  }

  /** Route an active number to another Vapi assistant (and optionally rename it). */
  changeAssistant(phoneNumber: string, change: RouteChange): Promise<Routing> {
    const path = `/api/managed-telephony/numbers/${encodeURIComponent(phoneNumber)}`;
    return this.call<Routing>("PATCH", path, change);
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const base = this.config.apiBase.replace(/\/+$/, "");
    const headers: Record<string, string> = {
      Authorization: `Bearer ${await this.config.getToken()}`,
      Accept: "application/json",
    };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (e) {
      const timedOut = e instanceof DOMException && e.name === "TimeoutError";
      throw new ApiError(
        0,
        timedOut ? "timeout" : "network_error",
        timedOut
          ? `The telephony API at ${base} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s.`
          : `Could not reach the telephony API at ${base} (network error, or the API refused this page's origin).`,
        null,
      );
    }
    // `x-request-id` is exposed through CORS; error bodies carry it too.
    const headerRequestId = response.headers.get("x-request-id");
    const answer: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      // The API's errors: {"error": {"code", "message", "requestId"}}.
      // API Gateway's authorizer (401/403): {"message": "Unauthorized"}.
      const b = (answer ?? {}) as {
        error?: { code?: string; message?: string; requestId?: string };
        message?: string;
      };
      throw new ApiError(
        response.status,
        b.error?.code ?? `http_${response.status}`,
        b.error?.message ?? b.message ?? (response.statusText || "Request failed"),
        b.error?.requestId ?? headerRequestId,
      );
    }
    return answer as T;
  }
}

// ---------------------------------------------------------------------------
// 2. What the states mean, in words
// ---------------------------------------------------------------------------

const PROVIDER_NAMES: Record<string, string> = { vapi: "Vapi", twilio: "Twilio" };
const providerName = (p: string): string => PROVIDER_NAMES[p] ?? p;

const STATUS_LABELS: Record<NumberStatus, string> = {
  provisioning: "Being set up",
  active: "Active",
  releasing: "Releasing",
  release_pending: "Release pending",
  needs_attention: "Needs attention",
  released: "Released",
};

function formatTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** "Twilio (twilio_unavailable), Vapi" */
function describePending(pending: string[], errors: Partial<Record<string, string>> = {}): string {
  return pending.map((p) => (errors[p] ? `${providerName(p)} (${errors[p]})` : providerName(p))).join(", ");
}

const PURCHASE_STEPS: Record<string, string> = {
  subaccount: "creating your Twilio subaccount",
  twilio: "buying it at Twilio",
  vapi: "connecting it to Vapi",
};

/** "buying it at Twilio (twilio_unavailable), connecting it to Vapi" */
function describePurchaseSteps(pending: string[], errors: Partial<Record<string, string>> = {}): string {
  return pending
    .map((p) => `${PURCHASE_STEPS[p] ?? p}${errors[p] ? ` (last try: ${errors[p]})` : ""}`)
    .join(", ");
}

/** The line under a number that explains its state. */
export function describeNumber(n: ManagedNumber): string {
  switch (n.status) {
    case "provisioning": {
      const steps = describePurchaseSteps(n.purchase?.pending ?? [], n.purchase?.errors);
      const next = n.purchase?.nextAttemptAt ? ` Next try around ${formatTime(n.purchase.nextAttemptAt)}.` : "";
      return `Still to do: ${steps || "finishing the purchase"}. It finishes on its own; no need to buy it again.${next}`;
    }
    case "active":
      return `Added ${formatTime(n.createdAt)}`;
    case "releasing":
      return "Being released by another request right now.";
    case "release_pending": {
      const pending = describePending(n.release?.pending ?? [], n.release?.errors);
      const next = n.release?.nextAttemptAt ? ` We retry automatically around ${formatTime(n.release.nextAttemptAt)}.` : "";
      return `No longer takes calls, but not yet released at ${pending || "a provider"}: it may still be billed.${next} Retry to finish now.`;
    }
    case "needs_attention": {
      const pending = describePending(n.release?.pending ?? [], n.release?.errors);
      return (
        `No longer takes calls, but releasing it at ${pending || "a provider"} failed ` +
        `${n.release?.attempts ?? "several"} times: it may still be billed and we stopped retrying on our own. ` +
        `Retry, or contact support with this number.`
      );
    }
    case "released":
      return `Released ${formatTime(n.releasedAt)}`;
  }
}

/** The notice after a DELETE answered 200 or 202. */
export function describeOutcome(o: ReleaseOutcome): string {
  switch (o.status) {
    case "released":
      return `${o.phoneNumber} was released.`;
    case "release_pending":
      return (
        `${o.phoneNumber} no longer takes calls, but releasing it at ` +
        `${describePending(o.pending, o.errors)} failed, so it may still be billed. ` +
        `Use Retry to finish the release.`
      );
    case "needs_attention":
      return (
        `${o.phoneNumber} no longer takes calls, but releasing it at ` +
        `${describePending(o.pending, o.errors)} keeps failing, so it may still be billed. ` +
        `Retry later, or contact support with this number.`
      );
    case "releasing":
      return `${o.phoneNumber} is being released by another request right now.`;
  }
}

/** Which assistant a number routes to, in words (for active and provisioning numbers). */
export function describeAssistant(n: Pick<ManagedNumber, "assistantId" | "assistantPending">): string {
  if (!n.assistantId) return "No assistant";
  return `Assistant ${n.assistantId}${n.assistantPending ? " (Vapi has not confirmed the change yet; it is sent again automatically)" : ""}`;
}

// Prices: the API's decimal string as it is (no floating point), with the currency.
const CURRENCY_SYMBOLS: Record<string, string> = { USD: "$", EUR: "€", GBP: "£" };

/** "$1.15" from {amount: "1.15", currency: "USD"}; "1.15 CAD" for a currency without a symbol here. */
export function formatMoney(p: MonthlyPrice): string {
  const currency = p.currency.toUpperCase();
  const m = /^(\d+)(?:\.(\d+))?$/.exec(p.amount.trim());
  if (!m) return `${p.amount} ${currency}`;
  const whole = m[1].replace(/^0+(?=\d)/, "");
  const cents = (m[2] ?? "").replace(/0+$/, "").padEnd(2, "0");
  const digits = `${whole}.${cents}`;
  const symbol = CURRENCY_SYMBOLS[currency];
  return symbol ? `${symbol}${digits}` : `${digits} ${currency}`;
}

/** "$1.15/month", or that the price is unavailable. */
export function describePrice(p: MonthlyPrice | null): string {
  return p ? `${formatMoney(p)}/month` : "Price unavailable";
}

/** What the confirmation says the number costs: "$1.15/month, billed to your account". */
export function describeBilling(p: MonthlyPrice): string {
  return `${formatMoney(p)}/month, billed to your account`;
}

/** "San Francisco, CA · Voice, SMS, MMS" */
export function describeOffer(o: OfferedNumber): string {
  const place = [o.locality, o.region].filter(Boolean).join(", ");
  const caps = [o.capabilities.voice && "Voice", o.capabilities.sms && "SMS", o.capabilities.mms && "MMS"].filter(Boolean);
  return [place || "Location not given", caps.length ? caps.join(", ") : "No voice or messaging"].join(" · ");
}

/** The notice after a purchase answered 200/201 (`active`) or 202 (`provisioning`). */
export function describePurchase(o: PurchaseOutcome): string {
  switch (o.status) {
    case "active": {
      const name = o.name ? ` ("${o.name}")` : "";
      const assistant = o.assistantId
        ? `Calls go to assistant ${o.assistantId}.`
        : "It has no assistant yet: choose one with Change assistant.";
      return `${o.phoneNumber}${name} is yours and active. ${assistant}`;
    }
    case "provisioning":
      return (
        `${o.phoneNumber} is still being set up (left: ${describePurchaseSteps(o.pending, o.errors) || "the last steps"}). ` +
        `It will finish on its own, so there is no need to buy it again; the list shows it as Being set up.`
      );
  }
}

/** The notice after a PATCH answered 200 (`routed`) or 202 (not confirmed by Vapi yet). */
export function describeRouting(r: Routing): string {
  return r.routed
    ? `Calls to ${r.phoneNumber} now go to assistant ${r.assistantId}.`
    : `The new assistant for ${r.phoneNumber} is saved, but Vapi has not confirmed it yet${r.code ? ` (${r.code})` : ""}: ` +
        `until it does, calls may still go to the previous one. It is sent again automatically.`;
}

/** A failed purchase: the page's own words for the answers a buyer must act on. */
export const BUY_ERROR_WORDS: Record<string, string> = {
  number_unavailable: "it was taken by someone else in the meantime — search again and pick another. Nothing was bought.",
  number_taken: "another organisation holds this number — pick another one. Nothing was bought.",
  timeout:
    "the API did not answer in time, so the purchase may still be under way. Refresh the list before trying again " +
    "(buying the same number again never buys it twice).",
};

/**
 * An error in words: what failed, the API's message (or the page's own words for
 * that error code, from `words`), the HTTP status and error code, and the request id.
 */
export function describeError(
  what: string,
  e: unknown,
  words: Record<string, string> = {},
): { text: string; requestId: string | null } {
  if (e instanceof ApiError) {
    const status = e.status ? ` (HTTP ${e.status}${e.code.startsWith("http_") ? "" : `, ${e.code}`})` : "";
    return { text: `${what}: ${words[e.code] ?? e.message}${status}`, requestId: e.requestId };
  }
  return { text: `${what}: ${e instanceof Error ? e.message : String(e)}`, requestId: null };
}

// ---------------------------------------------------------------------------
// 3. The page
// ---------------------------------------------------------------------------

/** A tiny element builder: text only (never innerHTML), so API values can't inject markup. */
function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> & { className?: string } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function $<T extends HTMLElement>(root: ParentNode, selector: string): T {
  const found = root.querySelector<T>(selector);
  if (!found) throw new Error(`telephony page: missing ${selector}`);
  return found;
}

/** A status line (role=status) and an error list (role=alert) for one part of the page. */
function messageArea(notice: HTMLElement, errorBox: HTMLElement) {
  return {
    notice(text: string, warning = false): void {
      notice.textContent = text;
      notice.classList.toggle("warning", warning);
      notice.hidden = false;
    },
    /** Errors accumulate until the next action, so a later one never hides an earlier one. */
    error(what: string, e: unknown, words?: Record<string, string>): void {
      const { text, requestId } = describeError(what, e, words);
      const line = el("p", {}, text);
      if (requestId) line.append(el("span", { className: "request-id" }, "Request id: ", el("code", {}, requestId)));
      errorBox.append(line);
      errorBox.hidden = false;
    },
    clear(): void {
      notice.hidden = errorBox.hidden = true;
      notice.textContent = "";
      errorBox.replaceChildren();
    },
    /** Move focus to what happened (the button that was pressed may be gone). */
    focus(): void {
      (errorBox.hidden ? notice : errorBox).focus();
    },
  };
}

/** An assistant id as Vapi writes it: a lowercase UUID (the input's `pattern` accepts either case). */
const normaliseAssistantId = (value: string): string | undefined => value.trim().toLowerCase() || undefined;

export function mountTelephonyPage(root: ParentNode, api: TelephonyApi): { refresh: () => Promise<void> } {
  const credentialBox = $<HTMLElement>(root, "#credential");
  const numbersBox = $<HTMLElement>(root, "#numbers");
  const refreshButton = $<HTMLButtonElement>(root, "#refresh");
  const releaseDialog = $<HTMLDialogElement>(root, "#confirm-release");
  const assistantDialog = $<HTMLDialogElement>(root, "#change-assistant");
  const searchForm = $<HTMLFormElement>(root, "#search-form");
  const searchButton = $<HTMLButtonElement>(root, "#search");
  const offersBox = $<HTMLElement>(root, "#offers");
  const buyDialog = $<HTMLDialogElement>(root, "#confirm-buy");
  const list = messageArea($(root, "#notice"), $(root, "#error"));
  const buyArea = messageArea($(root, "#buy-notice"), $(root, "#buy-error"));
  /** Every action starts with a clean slate: no message of an earlier action stays up. */
  const clearMessages = (): void => {
    list.clear();
    buyArea.clear();
  };

  let status: TelephonyStatus | null = null;
  /** Numbers with a DELETE in flight from this page. */
  const busy = new Set<string>();
  /** Numbers with a PATCH (change assistant) in flight. */
  const rerouting = new Set<string>();
  /** The last search's answer and its filters (`null`: no search yet). */
  let search: { result: SearchResult; filters: SearchFilters } | null = null;
  /** Numbers with a purchase in flight. */
  const buying = new Set<string>();

  function renderCredential(c: CredentialSummary | null): void {
    credentialBox.removeAttribute("aria-busy");
    if (!c) {
      credentialBox.replaceChildren(el("p", { className: "muted" }, "No Twilio credential connected."));
      return;
    }
    const vapi = c.vapi.synced
      ? `Synced ${formatTime(c.vapi.syncedAt)}`
      : `Not synced${c.vapi.code ? ` (${c.vapi.code})` : ""}: saving the credential again repairs it`;
    const rows: [string, Node | string][] = [
      ["Account SID", el("span", { className: "mono" }, c.accountSid ?? "—")],
      ["Phone number", el("span", { className: "phone" }, c.phoneNumber ?? "—")],
      ["Source", c.source === "managed" ? "Managed by the platform" : "Your own Twilio account (BYOC)"],
      ["Vapi", vapi],
      ["Updated", formatTime(c.updatedAt)],
    ];
    credentialBox.replaceChildren(
      el("dl", { className: "summary" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    );
  }

  function numberRow(n: ManagedNumber): HTMLLIElement {
    const what = el(
      "div",
      { className: "what" },
      el("span", { className: "phone" }, n.phoneNumber),
      el("span", { className: `badge badge-${n.status}` }, STATUS_LABELS[n.status] ?? n.status),
    );
    if (n.name) what.append(el("span", { className: "name" }, n.name));
    if (n.status === "active" || n.status === "provisioning") {
      what.append(el("span", { className: "assistant" }, describeAssistant(n)));
    }
    what.append(el("span", { className: "detail" }, describeNumber(n)));
    const row = el("li", { className: `number status-${n.status}` }, what);
    row.dataset.number = n.phoneNumber;
    row.dataset.status = n.status;

    // A number being set up has no button: the purchase finishes on its own.
    let button: HTMLButtonElement | null = null;
    if (n.status === "active") {
      button = el("button", { type: "button", className: "danger" }, "Delete");
      button.setAttribute("aria-label", `Delete ${n.phoneNumber}`);
      button.addEventListener("click", () => void release(n.phoneNumber, { confirmFirst: true }));
    } else if (n.status === "release_pending" || n.status === "needs_attention") {
      // Already confirmed once and no longer routing: Retry just resumes the release.
      button = el("button", { type: "button", className: "retry" }, "Retry");
      button.setAttribute("aria-label", `Retry releasing ${n.phoneNumber}`);
      button.addEventListener("click", () => void release(n.phoneNumber, { confirmFirst: false }));
    }
    if (button) {
      if (busy.has(n.phoneNumber)) {
        button.disabled = true;
        button.textContent = "Releasing…";
        button.setAttribute("aria-label", `Releasing ${n.phoneNumber}…`);
      }
      row.append(button);
    }
    if (n.status === "active") {
      const change = el("button", { type: "button", className: "secondary" }, "Change assistant");
      change.setAttribute("aria-label", `Change the assistant of ${n.phoneNumber}`);
      change.addEventListener("click", () => void changeAssistant(n));
      if (rerouting.has(n.phoneNumber) || busy.has(n.phoneNumber)) change.disabled = true;
      if (rerouting.has(n.phoneNumber)) change.textContent = "Saving…";
      row.append(change);
    }
    return row;
  }

  function renderNumbers(): void {
    numbersBox.removeAttribute("aria-busy");
    if (!status) return;
    if (status.numbers.length === 0) {
      numbersBox.replaceChildren(el("p", { className: "empty muted" }, "No managed numbers."));
      return;
    }
    numbersBox.replaceChildren(el("ul", { className: "numbers" }, ...status.numbers.map(numberRow)));
  }

  async function refresh(): Promise<void> {
    numbersBox.setAttribute("aria-busy", "true");
    refreshButton.disabled = true;
    try {
      status = await api.status();
      renderCredential(status.credential);
      renderNumbers();
    } catch (e) {
      list.error("Could not load the telephony status", e);
      if (!status) {
        credentialBox.removeAttribute("aria-busy");
        numbersBox.removeAttribute("aria-busy");
        credentialBox.replaceChildren(el("p", { className: "muted" }, "Not loaded."));
        numbersBox.replaceChildren(el("p", { className: "muted" }, "Not loaded."));
      }
    } finally {
      numbersBox.removeAttribute("aria-busy");
      refreshButton.disabled = false;
    }
  }

  /**
   * Open a confirmation <dialog>: fill its `data-slot` elements, reset its fields,
   * and resolve with its form's fields when it closed with the "confirm" button
   * (`null` on Cancel or Escape).
   */
  function ask(dialog: HTMLDialogElement, slots: Record<string, string>, fields: Record<string, string> = {}): Promise<FormData | null> {
    for (const [slot, text] of Object.entries(slots)) {
      dialog.querySelectorAll(`[data-slot=${slot}]`).forEach((s) => (s.textContent = text));
    }
    const form = dialog.querySelector("form");
    form?.reset();
    for (const [name, value] of Object.entries(fields)) {
      const input = form?.elements.namedItem(name);
      if (input instanceof HTMLInputElement) input.value = value;
    }
    dialog.returnValue = "";
    return new Promise((resolve) => {
      // Escape closes it with an empty returnValue, i.e. cancel.
      dialog.addEventListener(
        "close",
        () => resolve(dialog.returnValue === "confirm" && form ? new FormData(form) : null),
        { once: true },
      );
      dialog.showModal();
    });
  }

  const field = (data: FormData, name: string): string => String(data.get(name) ?? "").trim();

  // ---- release --------------------------------------------------------------

  /** Ask before releasing: a modal dialog naming the number (window.confirm where <dialog> is missing). */
  async function confirmRelease(phoneNumber: string): Promise<boolean> {
    if (typeof releaseDialog.showModal !== "function") {
      return window.confirm(`Delete ${phoneNumber}? This cannot be undone.`);
    }
    return (await ask(releaseDialog, { number: phoneNumber })) !== null;
  }

  async function release(phoneNumber: string, { confirmFirst }: { confirmFirst: boolean }): Promise<void> {
    if (busy.has(phoneNumber)) return;
    if (confirmFirst && !(await confirmRelease(phoneNumber))) return;
    clearMessages();
    busy.add(phoneNumber);
    renderNumbers();
    try {
      const outcome = await api.release(phoneNumber);
      list.notice(describeOutcome(outcome), outcome.status === "release_pending");
    } catch (e) {
      list.error(`Could not release ${phoneNumber}`, e);
    } finally {
      busy.delete(phoneNumber);
    }
    await refresh();
    // The row (and its focused button) may be gone: move focus to what happened.
    list.focus();
  }

  // ---- change assistant -----------------------------------------------------

  async function changeAssistant(n: ManagedNumber): Promise<void> {
    if (rerouting.has(n.phoneNumber) || typeof assistantDialog.showModal !== "function") return;
    const answer = await ask(assistantDialog, { number: n.phoneNumber }, { assistantId: n.assistantId ?? "", name: n.name ?? "" });
    if (!answer) return;
    const assistantId = normaliseAssistantId(field(answer, "assistantId"));
    if (!assistantId) return; // the field is required: the dialog does not close without one
    const name = field(answer, "name") || undefined;
    clearMessages();
    rerouting.add(n.phoneNumber);
    renderNumbers();
    try {
      const routing = await api.changeAssistant(n.phoneNumber, { assistantId, name });
      list.notice(describeRouting(routing), !routing.routed);
    } catch (e) {
      list.error(`Could not change the assistant of ${n.phoneNumber}`, e);
    } finally {
      rerouting.delete(n.phoneNumber);
    }
    await refresh();
    list.focus();
  }

  // ---- search and buy -------------------------------------------------------

  function offerRow(o: OfferedNumber): HTMLLIElement {
    const row = el(
      "li",
      { className: "offer" },
      el(
        "div",
        { className: "what" },
        el("span", { className: "phone" }, o.phoneNumber),
        el("span", { className: "detail" }, describeOffer(o)),
      ),
      el("span", { className: o.monthlyPrice ? "price" : "price unavailable" }, describePrice(o.monthlyPrice)),
    );
    row.dataset.number = o.phoneNumber;
    if (!o.monthlyPrice) {
      // Never sell without a stated price: the confirmation must say what it costs.
      row.append(el("span", { className: "no-buy muted" }, "Cannot be bought until its price is known"));
      return row;
    }
    const button = el("button", { type: "button", className: "primary" }, "Buy");
    button.setAttribute("aria-label", `Buy ${o.phoneNumber}`);
    if (buying.has(o.phoneNumber)) {
      button.disabled = true;
      button.textContent = "Buying…";
      button.setAttribute("aria-label", `Buying ${o.phoneNumber}…`);
    }
    button.addEventListener("click", () => void buy(o));
    row.append(button);
    return row;
  }

  function renderOffers(): void {
    offersBox.removeAttribute("aria-busy");
    if (!search) {
      offersBox.replaceChildren();
      return;
    }
    const { result, filters } = search;
    const where = `in area code ${filters.areaCode}${filters.contains ? ` containing ${filters.contains}` : ""}`;
    if (result.numbers.length === 0) {
      offersBox.replaceChildren(
        el("p", { className: "empty muted" }, `No numbers available ${where} right now. Try another area code.`),
      );
      return;
    }
    const count = result.numbers.length === 1 ? "1 number" : `${result.numbers.length} numbers`;
    const parts: Node[] = [el("p", { className: "muted" }, `${count} available ${where}. A result is not a reservation.`)];
    if (!result.pricesAvailable) {
      parts.push(
        el(
          "p",
          { className: "notice warning" },
          "Prices could not be loaded, so these numbers cannot be bought right now. Search again in a moment.",
        ),
      );
    }
    parts.push(el("ul", { className: "offers" }, ...result.numbers.map(offerRow)));
    offersBox.replaceChildren(...parts);
  }

  async function runSearch(): Promise<void> {
    const data = new FormData(searchForm);
    const filters: SearchFilters = {
      areaCode: field(data, "areaCode"),
      contains: field(data, "contains") || undefined,
    };
    clearMessages();
    if (!filters.areaCode) {
      buyArea.error("Could not search", new Error("enter a three-digit area code, e.g. 415"));
      $<HTMLInputElement>(searchForm, "#area-code").focus();
      return;
    }
    searchButton.disabled = true;
    searchButton.textContent = "Searching…";
    offersBox.setAttribute("aria-busy", "true");
    try {
      search = { result: await api.searchNumbers(filters), filters };
    } catch (e) {
      search = null;
      buyArea.error("Could not search for numbers", e);
    } finally {
      searchButton.disabled = false;
      searchButton.textContent = "Search";
      renderOffers();
    }
  }

  /** Ask before buying: the number, its price in words, an optional assistant and name. */
  async function confirmPurchase(o: OfferedNumber, price: MonthlyPrice): Promise<Omit<PurchaseRequest, "phoneNumber"> | null> {
    const billing = describeBilling(price);
    if (typeof buyDialog.showModal !== "function") {
      return window.confirm(`Buy ${o.phoneNumber} for ${billing}?`) ? {} : null;
    }
    const place = [o.locality, o.region].filter(Boolean).join(", ");
    const answer = await ask(buyDialog, { number: o.phoneNumber, place: place ? ` (${place})` : "", price: billing });
    if (!answer) return null;
    return {
      assistantId: normaliseAssistantId(field(answer, "assistantId")),
      name: field(answer, "name") || undefined,
    };
  }

  async function buy(o: OfferedNumber): Promise<void> {
    const n = o.phoneNumber;
    if (buying.has(n) || !o.monthlyPrice) return;
    const choice = await confirmPurchase(o, o.monthlyPrice);
    if (!choice) return;
    clearMessages();
    buying.add(n);
    renderOffers();
    const dropOffer = () => {
      if (search) search.result.numbers = search.result.numbers.filter((x) => x.phoneNumber !== n);
    };
    try {
      const outcome = await api.buy({ phoneNumber: n, ...choice });
      buyArea.notice(describePurchase(outcome), outcome.status === "provisioning");
      dropOffer(); // it is this org's now (or being set up)
    } catch (e) {
      buyArea.error(`Could not buy ${n}`, e, BUY_ERROR_WORDS);
      if (e instanceof ApiError && (e.code === "number_unavailable" || e.code === "number_taken")) dropOffer();
    } finally {
      buying.delete(n);
    }
    renderOffers();
    await refresh();
    buyArea.focus();
  }

  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    void runSearch();
  });
  refreshButton.addEventListener("click", () => {
    clearMessages();
    void refresh();
  });
  void refresh();
  return { refresh };
}

// ---------------------------------------------------------------------------
// Configuration and start-up
// ---------------------------------------------------------------------------

/**
 * Set by a host page before this script loads, e.g. in the dashboard:
 *
 *   window.telephonyConfig = {
 *     apiBase: "https://api.example.com",
 *     getToken: () => auth.currentSession().accessToken,   // the dashboard's sign-in
 *   };
 *
 * A static `token` is accepted too (tests, demos).
 */
declare global {
  interface Window {
    telephonyConfig?: { apiBase: string; token?: string; getToken?: () => string | Promise<string> };
  }
}

/**
 * Where the API is and which token to send: `window.telephonyConfig` when the host
 * page set it, otherwise `./config.json` (`{"apiBase", "token"}`), which only the
 * local API serves — a real deployment never serves a token from a static file.
 */
export async function loadConfig(): Promise<TelephonyConfig> {
  let given = window.telephonyConfig;
  if (!given) {
    let response: Response;
    try {
      response = await fetch("config.json", { cache: "no-store" });
    } catch {
      throw new Error("config.json could not be fetched (network error)");
    }
    if (!response.ok) throw new Error(`config.json answered HTTP ${response.status}; set window.telephonyConfig instead`);
    given = (await response.json()) as { apiBase: string; token?: string };
  }
  const { apiBase, token, getToken } = given;
  if (!apiBase) throw new Error("no apiBase configured");
  if (!getToken && !token) throw new Error("no token configured");
  return { apiBase, getToken: getToken ?? (() => token as string) };
}

async function main(): Promise<void> {
  try {
    mountTelephonyPage(document, new TelephonyApi(await loadConfig()));
  } catch (e) {
    const box = document.getElementById("error");
    if (box) {
      box.textContent = describeError("The telephony page could not start", e).text;
      box.hidden = false;
    }
    for (const id of ["credential", "numbers"]) {
      const node = document.getElementById(id);
      node?.removeAttribute("aria-busy");
      node?.replaceChildren("Not loaded.");
    }
  }
}

// A dashboard that imports this module and calls mountTelephonyPage itself sets
// `data-manual-start` on <html> to skip this.
if (!document.documentElement.hasAttribute("data-manual-start")) {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => void main());
  else void main();
}
