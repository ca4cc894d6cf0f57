/**
 * The org's Twilio credential: a summary (the API never returns the auth token)
 * and, for the org's own account (BYOC), a Disconnect action (confirm first). Its
 * messages go to #credential-notice and #credential-error.
 */

import { ApiError, type CredentialSummary } from "./client.js";
import { $, button, el, messageArea, showBusy, type MessageArea } from "./dom.js";
import type { PageContext } from "./telephony.js";
import { DISCONNECT_ERROR_WORDS, describeDisconnected, formatTime } from "./words.js";

export class CredentialPanel {
  readonly messages: MessageArea;
  private readonly box: HTMLElement;
  /** What is shown: the credential (`null`: none), and whether the org is being offboarded. */
  private shown: { credential: CredentialSummary | null; offboarding: boolean } | null = null;
  private disconnecting = false;

  constructor(
    root: ParentNode,
    private readonly ctx: PageContext,
  ) {
    this.box = $<HTMLElement>(root, "#credential");
    this.messages = messageArea($(root, "#credential-notice"), $(root, "#credential-error"));
  }

  /** Show `credential` (`null`: none connected); an org being offboarded gets no Disconnect. */
  show(credential: CredentialSummary | null, offboarding: boolean): void {
    this.shown = { credential, offboarding };
    this.render();
  }

  /** The credential could not be loaded (and nothing was shown before). */
  notLoaded(): void {
    if (this.shown) return;
    this.box.removeAttribute("aria-busy");
    this.box.replaceChildren(el("p", { className: "muted" }, "Not loaded."));
  }

  private render(): void {
    this.box.removeAttribute("aria-busy");
    const c = this.shown?.credential;
    if (!c) {
      this.box.replaceChildren(el("p", { className: "muted" }, "No Twilio credential connected."));
      return;
    }
    this.box.replaceChildren(summary(c));
    // A managed credential goes with its numbers (release them, or offboard the org).
    if (c.source === "byoc" && !this.shown?.offboarding) {
      this.box.append(el("div", { className: "credential-actions" }, this.disconnectButton()));
    }
  }

  private disconnectButton(): HTMLButtonElement {
    const b = button("Disconnect", "danger", "Disconnect the Twilio credential", () => void this.disconnect());
    b.id = "disconnect";
    if (this.disconnecting) showBusy(b, "Disconnecting…", "Disconnecting the Twilio credential…");
    return b;
  }

  private async disconnect(): Promise<void> {
    const c = this.shown?.credential;
    if (this.disconnecting || !c || !(await this.ctx.dialogs.confirmDisconnect(c))) return;
    this.ctx.clearMessages();
    this.disconnecting = true;
    this.render();
    try {
      this.messages.notice(describeDisconnected(await this.ctx.api.disconnect()));
    } catch (e) {
      // A provider's 503: Vapi did not delete it (or did not say); the slot is kept
      // and the API's message says which.
      const retry = e instanceof ApiError && e.status === 503 ? " (the credential is kept; try again in a minute)" : "";
      this.messages.error(`Could not disconnect the credential${retry}`, e, DISCONNECT_ERROR_WORDS);
    } finally {
      this.disconnecting = false;
    }
    await this.ctx.refresh();
    this.messages.focus();
  }
}

/** The credential as label / value pairs. */
function summary(c: CredentialSummary): HTMLDListElement {
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
  return el("dl", { className: "summary" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}
