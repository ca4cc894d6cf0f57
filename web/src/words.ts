/**
 * What each API state means, in words for people: the lines under a number, the
 * notices after a release, a purchase, an assistant change or a disconnect, an
 * offboarding's or a token rotation's progress, prices, and errors.
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
  type RotationStep,
  type Routing,
  type TokenRotation,
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

// ---- Rotating the managed Twilio token ---------------------------------------------

const ROTATION_TODO: Record<RotationStep, string> = {
  token: "creating the new token at Twilio",
  credential: "updating the Vapi credential",
  numbers: "updating the numbers at Vapi",
  promote: "retiring the old token at Twilio",
  slot: "saving the new token",
};

/** Why a rotation step is left, in words: a provider's failure or a wait. */
const ROTATION_WHY: Record<string, string> = {
  vapi_unavailable: "Vapi could not be reached",
  vapi_timeout: "Vapi did not answer in time",
  vapi_rate_limited: "Vapi asked us to slow down",
  vapi_rejected: "Vapi refused the change",
  vapi_refused: "Vapi refused the change",
  vapi_unauthorized: "Vapi refused the platform's key",
  vapi_bad_response: "Vapi gave an answer we could not read",
  vapi_lookup_unfinished: "the Vapi credential is still being looked up",
  twilio_unavailable: "Twilio could not be reached",
  twilio_timeout: "Twilio did not answer in time",
  twilio_rate_limited: "Twilio asked us to slow down",
  twilio_unauthorized: "Twilio refused the platform's account",
  twilio_rejected: "Twilio refused the change",
  twilio_bad_response: "Twilio gave an answer we could not read",
  encryption_unavailable: "the encryption service could not be reached",
  encryption_failed: "the new token could not be sealed",
  deadline: "this try ran out of time",
  sync_in_progress: "waits for a save of the credential that is running",
  purchase_in_progress: "waits for a number being bought",
  numbers_changed: "the numbers changed meanwhile; it goes on with them",
  credential_changed: "the credential changed meanwhile",
  claim_lost: "another try took over",
};

/** "updating the numbers at Vapi (Vapi refused the change: vapi_rejected)" for each pending step. */
export function describeRotationErrors(r: TokenRotation): string {
  return Object.entries(r.errors ?? {})
    .map(([step, code]) => {
      const what = ROTATION_TODO[step as RotationStep] ?? step;
      return code ? `${what} (${ROTATION_WHY[code] ? `${ROTATION_WHY[code]}: ${code}` : `last try: ${code}`})` : what;
    })
    .join(", ");
}

/** "+14155550100, +14155550101 and 3 more" (at most `shown` numbers written out). */
function listNumbers(numbers: string[], shown = 10): string {
  if (numbers.length <= shown) return numbers.join(", ");
  return `${numbers.slice(0, shown).join(", ")} and ${numbers.length - shown} more`;
}

/** "1 number" / "3 numbers" */
const countNumbers = (n: number): string => `${n} number${n === 1 ? "" : "s"}`;

/** What an unfinished rotation did and what is left: updated and pending numbers, why. */
function describeRotationProgress(r: TokenRotation): string {
  const { updated, pending } = r.numbers;
  const parts = [
    updated.length ? `Updated: ${countNumbers(updated.length)} (${listNumbers(updated)}).` : "No number updated yet.",
  ];
  if (pending.length) parts.push(`Still to update: ${countNumbers(pending.length)} (${listNumbers(pending)}).`);
  const steps = describeRotationErrors(r);
  if (steps) parts.push(`Still to do: ${steps}.`);
  if (r.kind === "adopt") {
    parts.push("The old token no longer works, so a number not updated yet may fail to connect calls until it is.");
  } else if (r.promoted) {
    parts.push("The new token is already the only one that works.");
  } else {
    parts.push("The old token keeps working until every number has the new one, so calls are not affected.");
  }
  return parts.join(" ");
}

/** The notice after a rotation answered 200 (rotated) or 202 (steps left). */
export function describeRotationOutcome(r: TokenRotation): string {
  const n = r.numbers.updated;
  const numbers = n.length ? `${countNumbers(n.length)} (${listNumbers(n)})` : "no numbers";
  switch (r.status) {
    case "rotated":
      return r.kind === "adopt"
        ? `The token changed in Twilio is now used by the Vapi credential and ${numbers}.`
        : `The Twilio token was rotated: the Vapi credential and ${numbers} use the new token, and the old token no longer works.`;
    case "rotating": {
      const next = r.nextAttemptAt ? ` It is retried automatically around ${formatTime(r.nextAttemptAt)};` : " It is retried automatically;";
      return `The token rotation is not finished. ${describeRotationProgress(r)}${next} Retry now finishes it sooner.`;
    }
    case "needs_attention":
      return `The token rotation keeps failing and is no longer retried on its own. ${describeRotationProgress(r)} Retry later, or contact support.`;
    case "cancelled":
      return `The token rotation was cancelled: ${describeCancelReason(r.cancelReason)}.`;
  }
}

/** The banner while a rotation is open (`rotating` or `needs_attention`). */
export function describeRotationBanner(r: TokenRotation): string {
  const what =
    r.kind === "adopt"
      ? "The Twilio token was changed outside the platform (for example in Twilio's console) and is being brought to Vapi."
      : `A rotation of the Twilio token, asked for ${formatTime(r.requestedAt)}, is not finished.`;
  if (r.status === "needs_attention") {
    return `${what} It failed too often and is no longer retried on its own. ${describeRotationProgress(r)} Retry it, or contact support.`;
  }
  const next = r.nextAttemptAt ? ` Next try around ${formatTime(r.nextAttemptAt)}.` : "";
  return `${what} ${describeRotationProgress(r)}${next}`;
}

const CANCEL_REASONS: Record<string, string> = {
  slot_changed: "the credential was replaced or disconnected meanwhile",
  org_offboarding: "the organisation is being offboarded",
};
const describeCancelReason = (reason: string | undefined): string =>
  (reason && CANCEL_REASONS[reason]) ?? reason ?? "it could not go on";

/** The credential summary's "Token" line: the latest rotation, in a few words. */
export function describeTokenLine(r: TokenRotation): string {
  switch (r.status) {
    case "rotated":
      return r.kind === "adopt"
        ? `Changed in Twilio; Vapi updated ${formatTime(r.doneAt)}`
        : `Rotated ${formatTime(r.doneAt)}`;
    case "rotating":
      return "Rotation under way";
    case "needs_attention":
      return "Rotation needs attention";
    case "cancelled":
      return `Last rotation cancelled (${describeCancelReason(r.cancelReason)})`;
  }
}

/** A refused rotation: the page's own words for the answers that need them. */
export const ROTATE_ERROR_WORDS: Record<string, string> = {
  no_credential: "there is no Twilio credential to rotate.",
  org_offboarding: "this organisation is being offboarded, which closes the subaccount and its token.",
  timeout:
    "the API did not answer in time, so the rotation may still be under way. Refresh before trying again " +
    "(a repeat resumes the same rotation; it never creates a second new token).",
};
