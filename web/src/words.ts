/**
 * What each API state means, in words for people: the lines under a number, the
 * notices after a release, a purchase, an assistant change or a disconnect, an
 * offboarding's progress, prices, and errors.
 * Pure functions of the API's answers (types generated from openapi.yaml).
 */

import {
  ApiError,
  type Disconnected,
  type ManagedNumber,
  type MonthlyPrice,
  type NumberStatus,
  type OfferedNumber,
  type Offboarding,
  type OffboardStep,
  type PurchaseOutcome,
  type ReleaseOutcome,
  type Routing,
} from "./client.js";

const PROVIDER_NAMES: Record<string, string> = { vapi: "Vapi", twilio: "Twilio" };
const providerName = (p: string): string => PROVIDER_NAMES[p] ?? p;

export const STATUS_LABELS: Record<NumberStatus, string> = {
  provisioning: "Being set up",
  active: "Active",
  releasing: "Releasing",
  release_pending: "Release pending",
  needs_attention: "Needs attention",
  released: "Released",
};

export function formatTime(iso: string | null | undefined): string {
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

/** "buying it at Twilio (last try: twilio_unavailable), connecting it to Vapi" */
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
export function describeAssistant(n: Pick<ManagedNumber, "assistantId" | "assistantPending" | "assistantChange">): string {
  if (!n.assistantId) return "No assistant";
  if (n.assistantChange?.needsAttention) {
    return `Assistant ${n.assistantId} (Vapi has not confirmed the change and it is no longer sent again: change the assistant again)`;
  }
  return `Assistant ${n.assistantId}${n.assistantPending ? " (Vapi has not confirmed the change yet; it is sent again automatically)" : ""}`;
}

/** What the daily carrier audit found about a number, in words; "" when nothing. */
export function describeFindings(n: Pick<ManagedNumber, "findings">): string {
  const words: Record<string, string> = {
    vapi_missing: "Vapi no longer has this number, so its calls go nowhere",
    voice_url_mismatch: "Twilio sends this number's calls somewhere other than Vapi",
    carrier_missing: "Twilio no longer holds this number",
    assistant_mismatch: "Vapi routed this number to another assistant; the one shown is being sent again",
    billed_unknown: "Twilio billed this number without a record; it is being released",
  };
  return (n.findings ?? [])
    .map((f) => `${words[f.kind] ?? f.kind} (found ${formatTime(f.firstSeenAt)}${f.repaired ? ", repair under way" : ""})`)
    .join(". ");
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

// ---- Disconnecting the credential ------------------------------------------------

/** The notice after a disconnect answered 200. */
export function describeDisconnected(d: Disconnected): string {
  if (d.source === null) return "There was no Twilio credential to disconnect.";
  const which = d.source === "byoc" ? "Your Twilio credential" : "The managed Twilio credential";
  const vapi = d.vapiCredentialDeleted ? " and its copy at Vapi deleted" : "";
  return `${which} was disconnected${vapi}. Save a credential again to reconnect.`;
}

/** A refused disconnect: the page's own words for the answers that need them. */
export const DISCONNECT_ERROR_WORDS: Record<string, string> = {
  managed_numbers_remain: "the managed credential still serves numbers: release them first, or offboard the organisation.",
  org_offboarding: "this organisation is being offboarded, which removes the credential itself.",
  save_in_progress: "the credential is being saved right now. Try again in a moment.",
};

// ---- Offboarding -------------------------------------------------------------------

const OFFBOARD_TODO: Record<OffboardStep, string> = {
  numbers: "releasing every number",
  credential: "deleting the Vapi credential",
  subaccount: "closing the Twilio subaccount",
  slot: "removing the saved credential",
};

const OFFBOARD_DONE: Record<OffboardStep, string> = {
  numbers: "numbers released",
  credential: "Vapi credential deleted",
  subaccount: "Twilio subaccount closed",
  slot: "saved credential removed",
};

/** Why a step waits, for the codes that are not a provider's failure. */
const OFFBOARD_WAITS: Record<string, string> = { waiting_for_numbers: "waits until every number is released" };

/** "closing the Twilio subaccount (last try: twilio_unavailable), clearing the credential" */
function describeOffboardSteps(o: Offboarding): string {
  return o.pending
    .map((step) => {
      const code = o.errors?.[step];
      const why = code ? ` (${OFFBOARD_WAITS[code] ?? `last try: ${code}`})` : "";
      return `${OFFBOARD_TODO[step] ?? step}${why}`;
    })
    .join(", ");
}

/** "Done: numbers released, Vapi credential deleted. " ("" when nothing is done yet). */
const describeOffboardDone = (o: Offboarding): string =>
  o.done.length ? `Done: ${o.done.map((s) => OFFBOARD_DONE[s] ?? s).join(", ")}. ` : "";

/** The banner while (or after) the org is offboarded. */
export function describeOffboarding(o: Offboarding): string {
  const refused = "Buying numbers and saving a credential are refused.";
  switch (o.status) {
    case "offboarded":
      return (
        `This organisation was offboarded on ${formatTime(o.offboardedAt)}: its numbers are released, ` +
        `its Vapi credential deleted and its Twilio subaccount closed. ${refused}`
      );
    case "offboarding": {
      const next = o.nextAttemptAt ? ` Next try around ${formatTime(o.nextAttemptAt)}.` : "";
      const steps = describeOffboardSteps(o) || "the last steps";
      return `This organisation is being offboarded. ${describeOffboardDone(o)}Still to do: ${steps}.${next} ${refused}`;
    }
    case "needs_attention":
      return (
        `Offboarding this organisation failed ${o.attempts} times and is no longer retried on its own. ` +
        `${describeOffboardDone(o)}Still to do: ${describeOffboardSteps(o) || "the last steps"}. ` +
        `Resume it below, or contact support. ${refused}`
      );
  }
}

/** The notice after an offboard request answered 200 (offboarded) or 202 (under way). */
export function describeOffboardOutcome(o: Offboarding): string {
  if (o.status === "offboarded") {
    return (
      "The organisation was offboarded: every number is released, the Vapi credential deleted " +
      "and the Twilio subaccount closed. Nothing bills any more."
    );
  }
  const steps = describeOffboardSteps(o) || "the last steps";
  const resume =
    o.status === "needs_attention"
      ? "It keeps failing: resume it later, or contact support."
      : "It finishes on its own; Resume offboarding tries again now.";
  return `Offboarding is recorded but not finished. ${describeOffboardDone(o)}Still to do: ${steps}. ${resume}`;
}

/** A refused offboarding: the page's own words for the answers that need them. */
export const OFFBOARD_ERROR_WORDS: Record<string, string> = {
  confirmation_mismatch: "what was typed is not this organisation's id. Nothing was changed.",
};
