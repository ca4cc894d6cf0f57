/** The org's Twilio credential: a summary (the API never returns the auth token). */

import type { CredentialSummary } from "./client.js";
import { el } from "./dom.js";
import { formatTime } from "./words.js";

/** Show `c` in `box` (`null`: no credential connected). */
export function renderCredential(box: HTMLElement, c: CredentialSummary | null): void {
  box.removeAttribute("aria-busy");
  if (!c) {
    box.replaceChildren(el("p", { className: "muted" }, "No Twilio credential connected."));
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
  box.replaceChildren(
    el("dl", { className: "summary" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
  );
}

/** The credential could not be loaded (and nothing was shown before). */
export function renderNotLoaded(box: HTMLElement): void {
  box.removeAttribute("aria-busy");
  box.replaceChildren(el("p", { className: "muted" }, "Not loaded."));
}
