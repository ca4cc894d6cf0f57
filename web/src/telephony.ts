/**
 * The telephony page: the org's Twilio credential (a summary — the API never
 * returns the auth token — with Disconnect for the org's own account and Rotate
 * token for a managed subaccount), the phone numbers the platform bought for it
 * ("managed numbers") with the assistant each routes to, a Delete button that
 * releases one and a Change assistant action, a "Buy a number" panel, and
 * "Offboard organisation" behind a typed confirmation.
 *
 * THIS IS THE REFERENCE the frontend team copies into the dashboard's
 * `/dashboard/telephony` page. Keep it small, framework-free and obvious. By what
 * each file shows:
 *
 *   api.d.ts       — generated from openapi.yaml (scripts/build-web.sh); never edited.
 *   client.ts      — `TelephonyApi`: the generated client (openapi-fetch), bearer
 *                    token, timeout, errors as `ApiError`; names for the generated types.
 *   words.ts       — what each API state means, in words for people.
 *   credential.ts  — the credential summary, Disconnect (BYOC only), Rotate token
 *                    (managed only) and the banner of an unfinished rotation.
 *   numbers.ts     — the numbers list: release (with Retry) and change assistant.
 *   buy.ts         — the buy panel: search, results with prices, buying.
 *   offboard.ts    — offboarding: the action, its progress, the banner.
 *   dialogs.ts     — the confirmations (delete, buy, change assistant,
 *                    disconnect, rotate, offboard with the org's id typed out).
 *   dom.ts         — element helpers and the message areas.
 *   telephony.ts   — this file: the page put together, configuration, start-up.
 *
 * Behaviour the dashboard must keep:
 *   - Buying: only a result with a price can be bought; the confirmation states
 *     the number and the price exactly ("$1.15/month, billed to your account").
 *     201/200 `active` → it is in the list; 202 `provisioning` → it finishes on its
 *     own (listed as "Being set up", no Delete); 409 `number_unavailable` → taken
 *     by someone else in the meantime, search again. Repeating a purchase never
 *     buys twice, so after a timeout "refresh, then try again" is safe.
 *   - DELETE and PATCH put the number in the path percent-encoded (`+` travels as
 *     `%2B`); the generated client does that.
 *   - Confirm first, naming the number and saying it cannot be undone.
 *   - Four outcomes: 200 `released`; 202 `release_pending` (it no longer takes
 *     calls, but a provider step failed, so it may still be billed: offer Retry,
 *     which repeats the DELETE and resumes); 202 `needs_attention` (the same after
 *     too many failed attempts: reconcile stopped, Retry still works); 202
 *     `releasing` (another request is doing it right now).
 *   - Show every error in words: `error.message` and the request id (support
 *     finds the request's logs by it). Never swallow one.
 *   - Disconnect only for a BYOC credential (a managed one goes with its numbers:
 *     409 `managed_numbers_remain`); a 503 changed nothing, so it can be repeated.
 *   - Rotate token only for a managed credential (a BYOC org rotates its token in
 *     Twilio and saves the new one: 409 `byoc_credential`). Confirm first, saying
 *     that every number gets the new token before the old one stops working. 200:
 *     rotated (the numbers updated); 202: the numbers updated and pending and why
 *     (both tokens work meanwhile). While status's `tokenRotation` is `rotating` or
 *     `needs_attention`, a banner says what is left, with Retry (repeats the POST,
 *     which resumes the same rotation: no second confirmation, no second token).
 *   - Offboarding is confirmed by typing the org's id (the button waits for an
 *     exact match). 200: offboarded; 202: the steps left and why (it finishes on
 *     its own; repeating it resumes it now). Once status has `offboarding`, a banner
 *     says so and the buy panel and Disconnect are gone (they would be refused, 409
 *     `org_offboarding`).
 *
 * Configuration (where the API is and which bearer token): see `loadConfig`.
 */

import { CredentialPanel } from "./credential.js";
import { BuyPanel } from "./buy.js";
import { TelephonyApi, type TelephonyConfig, type TelephonyStatus } from "./client.js";
import { Dialogs } from "./dialogs.js";
import { $ } from "./dom.js";
import { NumbersList } from "./numbers.js";
import { OffboardPanel } from "./offboard.js";
import { describeError } from "./words.js";

export * from "./client.js";
export * from "./words.js";

/** What the page's parts need from the page around them. */
export interface PageContext {
  api: TelephonyApi;
  dialogs: Dialogs;
  /** Clears every message of the page: each action starts with a clean slate. */
  clearMessages(): void;
  /** Loads the status again and shows it (the credential, the list, the offboarding). */
  refresh(): Promise<void>;
}

/** Put the page together on markup with index.html's ids, and load the status. */
export function mountTelephonyPage(root: ParentNode, api: TelephonyApi): { refresh: () => Promise<void> } {
  const refreshButton = $<HTMLButtonElement>(root, "#refresh");
  const ctx: PageContext = {
    api,
    dialogs: new Dialogs(root),
    clearMessages: () => parts.forEach((part) => part.messages.clear()),
    refresh,
  };
  const credential = new CredentialPanel(root, ctx);
  const numbers = new NumbersList(root, ctx);
  const buyPanel = new BuyPanel(root, ctx);
  const offboard = new OffboardPanel(root, ctx);
  const parts = [credential, numbers, buyPanel, offboard];

  function show(status: TelephonyStatus): void {
    credential.show(status.credential, !!status.offboarding, status.tokenRotation);
    numbers.show(status.numbers);
    buyPanel.setRefused(!!status.offboarding);
    offboard.show(status.offboarding);
  }

  async function refresh(): Promise<void> {
    numbers.setBusy(true);
    refreshButton.disabled = true;
    try {
      show(await api.status());
    } catch (e) {
      numbers.messages.error("Could not load the telephony status", e);
      if (!numbers.loaded) {
        credential.notLoaded();
        numbers.notLoaded();
      }
    } finally {
      numbers.setBusy(false);
      refreshButton.disabled = false;
    }
  }

  refreshButton.addEventListener("click", () => {
    ctx.clearMessages();
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
 *     orgId: auth.currentOrg().id,   // optional: else the token's org_id claim
 *   };
 *
 * A static `token` is accepted too (tests, demos).
 */
declare global {
  interface Window {
    telephonyConfig?: { apiBase: string; token?: string; getToken?: () => string | Promise<string>; orgId?: string };
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
  const { apiBase, token, getToken, orgId } = given;
  if (!apiBase) throw new Error("no apiBase configured");
  if (!getToken && !token) throw new Error("no token configured");
  return { apiBase, getToken: getToken ?? (() => token as string), orgId };
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
