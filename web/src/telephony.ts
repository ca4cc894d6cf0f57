/**
 * The telephony page: the org's Twilio credential (a summary — the API never
 * returns the auth token) and the phone numbers the platform bought for it
 * ("managed numbers"), each with a Delete button that releases it.
 *
 * THIS IS THE REFERENCE the frontend team copies into the dashboard's
 * `/dashboard/telephony` page. Keep it small, framework-free and obvious:
 *
 *   1. `TelephonyApi`  — the two calls, bearer token, errors as `ApiError`.
 *   2. `describe*`     — what each API state means, in words for people.
 *   3. `mountTelephonyPage` — state, rendering and the release flow.
 *
 * Behaviour the dashboard must keep:
 *   - DELETE with `encodeURIComponent(phoneNumber)` (`+` travels as `%2B`).
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

export type NumberStatus = "active" | "releasing" | "release_pending" | "needs_attention" | "released";
export type Provider = "vapi" | "twilio";

export interface ManagedNumber {
  phoneNumber: string;
  status: NumberStatus;
  vapiPhoneId: string | null;
  twilioPhoneSid: string;
  createdAt: string;
  releasedAt: string | null;
  /** Present while a release is unfinished: steps left and their last error codes. */
  release?: {
    pending: Provider[];
    attempts: number;
    nextAttemptAt?: string | null;
    errors?: Partial<Record<Provider, string>>;
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

  private async call<T>(method: string, path: string): Promise<T> {
    const base = this.config.apiBase.replace(/\/+$/, "");
    let response: Response;
    try {
      response = await fetch(base + path, {
        method,
        headers: {
          Authorization: `Bearer ${await this.config.getToken()}`,
          Accept: "application/json",
        },
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
    const body: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      // The API's errors: {"error": {"code", "message", "requestId"}}.
      // API Gateway's authorizer (401/403): {"message": "Unauthorized"}.
      const b = (body ?? {}) as {
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
    return body as T;
  }
}

// ---------------------------------------------------------------------------
// 2. What the states mean, in words
// ---------------------------------------------------------------------------

const PROVIDER_NAMES: Record<string, string> = { vapi: "Vapi", twilio: "Twilio" };
const providerName = (p: string): string => PROVIDER_NAMES[p] ?? p;

const STATUS_LABELS: Record<NumberStatus, string> = {
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

/** The line under a number that explains its state. */
export function describeNumber(n: ManagedNumber): string {
  switch (n.status) {
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

/** An error in words: what failed, the API's message, the HTTP status and request id. */
export function describeError(what: string, e: unknown): { text: string; requestId: string | null } {
  if (e instanceof ApiError) {
    const status = e.status ? ` (HTTP ${e.status}${e.code.startsWith("http_") ? "" : `, ${e.code}`})` : "";
    return { text: `${what}: ${e.message}${status}`, requestId: e.requestId };
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

export function mountTelephonyPage(root: ParentNode, api: TelephonyApi): { refresh: () => Promise<void> } {
  const credentialBox = $<HTMLElement>(root, "#credential");
  const numbersBox = $<HTMLElement>(root, "#numbers");
  const notice = $<HTMLElement>(root, "#notice");
  const errorBox = $<HTMLElement>(root, "#error");
  const refreshButton = $<HTMLButtonElement>(root, "#refresh");
  const dialog = $<HTMLDialogElement>(root, "#confirm-release");

  let status: TelephonyStatus | null = null;
  /** Numbers with a DELETE in flight from this page. */
  const busy = new Set<string>();

  function showNotice(text: string, warning = false): void {
    notice.textContent = text;
    notice.classList.toggle("warning", warning);
    notice.hidden = false;
  }

  /** Errors accumulate until the next action, so a later one never hides an earlier one. */
  function showError(what: string, e: unknown): void {
    const { text, requestId } = describeError(what, e);
    const line = el("p", {}, text);
    if (requestId) line.append(el("span", { className: "request-id" }, "Request id: ", el("code", {}, requestId)));
    errorBox.append(line);
    errorBox.hidden = false;
  }

  function clearMessages(): void {
    notice.hidden = errorBox.hidden = true;
    notice.textContent = "";
    errorBox.replaceChildren();
  }

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
    const inFlight = busy.has(n.phoneNumber);
    const row = el(
      "li",
      { className: `number status-${n.status}` },
      el(
        "div",
        { className: "what" },
        el("span", { className: "phone" }, n.phoneNumber),
        el("span", { className: `badge badge-${n.status}` }, STATUS_LABELS[n.status] ?? n.status),
        el("span", { className: "detail" }, describeNumber(n)),
      ),
    );
    row.dataset.number = n.phoneNumber;
    row.dataset.status = n.status;

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
      if (inFlight) {
        button.disabled = true;
        button.textContent = "Releasing…";
        button.setAttribute("aria-label", `Releasing ${n.phoneNumber}…`);
      }
      row.append(button);
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
      showError("Could not load the telephony status", e);
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

  /** Ask before releasing: a modal dialog naming the number (window.confirm where <dialog> is missing). */
  function confirmRelease(phoneNumber: string): Promise<boolean> {
    if (typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm(`Delete ${phoneNumber}? This cannot be undone.`));
    }
    dialog.querySelectorAll("[data-slot=number]").forEach((s) => (s.textContent = phoneNumber));
    dialog.returnValue = "";
    return new Promise((resolve) => {
      // Escape closes it with an empty returnValue, i.e. cancel.
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
      dialog.showModal();
    });
  }

  async function release(phoneNumber: string, { confirmFirst }: { confirmFirst: boolean }): Promise<void> {
    if (busy.has(phoneNumber)) return;
    if (confirmFirst && !(await confirmRelease(phoneNumber))) return;
    clearMessages();
    busy.add(phoneNumber);
    renderNumbers();
    try {
      const outcome = await api.release(phoneNumber);
      showNotice(describeOutcome(outcome), outcome.status === "release_pending");
    } catch (e) {
      showError(`Could not release ${phoneNumber}`, e);
    } finally {
      busy.delete(phoneNumber);
    }
    await refresh();
    // The row (and its focused button) may be gone: move focus to what happened.
    (errorBox.hidden ? notice : errorBox).focus();
  }

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
