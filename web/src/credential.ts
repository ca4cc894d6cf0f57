/**
 * The org's Twilio credential: a summary (the API never returns the auth token);
 * for the org's own account (BYOC) a Disconnect action; for a managed subaccount a
 * Rotate token action and, while a rotation is unfinished (status's
 * `tokenRotation` `rotating` or `needs_attention`), a banner saying what is left
 * with a Retry button (it repeats the request, which resumes the same rotation).
 * Each action confirms first. Its messages go to #credential-notice and
 * #credential-error.
 */

import { ApiError, type CredentialSummary, type TokenRotation } from "./client.js";
import { $, button, el, messageArea, showBusy, type MessageArea } from "./dom.js";
import type { PageContext } from "./telephony.js";
import {
  DISCONNECT_ERROR_WORDS,
  ROTATE_ERROR_WORDS,
  describeDisconnected,
  describeRotationBanner,
  describeRotationOutcome,
  describeTokenLine,
  formatTime,
} from "./words.js";

/** What the panel shows: the credential (`null`: none), the offboarding, the latest rotation. */
interface Shown {
  credential: CredentialSummary | null;
  offboarding: boolean;
  rotation: TokenRotation | null;
}

/** A rotation that is still to be finished (a repeat of the request resumes it). */
const isOpen = (r: TokenRotation | null): r is TokenRotation => r?.status === "rotating" || r?.status === "needs_attention";

export class CredentialPanel {
  readonly messages: MessageArea;
  private readonly box: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly bannerText: HTMLElement;
  private readonly retryButton: HTMLButtonElement;
  private shown: Shown | null = null;
  private disconnecting = false;
  private rotating = false;

  constructor(
    root: ParentNode,
    private readonly ctx: PageContext,
  ) {
    this.box = $<HTMLElement>(root, "#credential");
    this.banner = $<HTMLElement>(root, "#rotation-banner");
    this.bannerText = $<HTMLElement>(root, "#rotation-banner-text");
    this.retryButton = $<HTMLButtonElement>(root, "#rotation-retry");
    this.messages = messageArea($(root, "#credential-notice"), $(root, "#credential-error"));
    // Retry repeats the request without asking again: it resumes the rotation already confirmed.
    this.retryButton.addEventListener("click", () => void this.rotate(false));
  }

  /**
   * Show `credential` (`null`: none connected) and the org's latest token rotation;
   * an org being offboarded gets neither Disconnect nor Rotate.
   */
  show(credential: CredentialSummary | null, offboarding: boolean, rotation?: TokenRotation): void {
    this.shown = { credential, offboarding, rotation: rotation ?? null };
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
    const rotation = this.shown?.rotation ?? null;
    // Rotating is for a managed subaccount, not while the org is offboarded (409).
    const rotatable = c?.source === "managed" && !this.shown?.offboarding;
    this.renderBanner(rotatable && isOpen(rotation) ? rotation : null);
    if (!c) {
      this.box.replaceChildren(el("p", { className: "muted" }, "No Twilio credential connected."));
      return;
    }
    this.box.replaceChildren(summary(c, c.source === "managed" ? rotation : null));
    // A managed credential goes with its numbers (release them, or offboard the org).
    if (c.source === "byoc" && !this.shown?.offboarding) {
      this.box.append(el("div", { className: "credential-actions" }, this.disconnectButton()));
    }
    // While a rotation is open, the banner's Retry resumes it (a new request would too).
    if (rotatable && !isOpen(rotation)) {
      this.box.append(el("div", { className: "credential-actions" }, this.rotateButton()));
    }
  }

  /** The banner of an unfinished rotation (`null`: hidden), with its Retry button. */
  private renderBanner(r: TokenRotation | null): void {
    this.banner.hidden = !r;
    this.bannerText.textContent = r ? describeRotationBanner(r) : "";
    this.banner.dataset.status = r?.status ?? "";
    this.banner.dataset.kind = r?.kind ?? "";
    if (r && this.rotating) {
      showBusy(this.retryButton, "Retrying…", "Retrying the token rotation…");
      return;
    }
    this.retryButton.disabled = false;
    this.retryButton.textContent = "Retry now";
    this.retryButton.setAttribute("aria-label", "Retry the token rotation now");
  }

  private disconnectButton(): HTMLButtonElement {
    const b = button("Disconnect", "danger", "Disconnect the Twilio credential", () => void this.disconnect());
    b.id = "disconnect";
    if (this.disconnecting) showBusy(b, "Disconnecting…", "Disconnecting the Twilio credential…");
    return b;
  }

  private rotateButton(): HTMLButtonElement {
    const b = button("Rotate token", "secondary", "Rotate the Twilio token", () => void this.rotate(true));
    b.id = "rotate";
    if (this.rotating) showBusy(b, "Rotating…", "Rotating the Twilio token…");
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

  /**
   * Rotate the managed token (`confirmFirst`: the Rotate token action asks first;
   * the banner's Retry resumes the rotation already asked for). 200: rotated; 202:
   * steps left (the banner shows them after the refresh).
   */
  private async rotate(confirmFirst: boolean): Promise<void> {
    const c = this.shown?.credential;
    if (this.rotating || !c) return;
    if (confirmFirst && !(await this.ctx.dialogs.confirmRotate(c))) return;
    this.ctx.clearMessages();
    this.rotating = true;
    this.render();
    try {
      const rotation = await this.ctx.api.rotateToken();
      this.messages.notice(describeRotationOutcome(rotation), rotation.status !== "rotated");
    } catch (e) {
      this.messages.error("Could not rotate the Twilio token", e, ROTATE_ERROR_WORDS);
    } finally {
      this.rotating = false;
    }
    await this.ctx.refresh();
    this.messages.focus();
  }
}

/** The credential as label / value pairs (with the latest token rotation, for a managed one). */
function summary(c: CredentialSummary, rotation: TokenRotation | null): HTMLDListElement {
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
  if (rotation) rows.push(["Token", describeTokenLine(rotation)]);
  return el("dl", { className: "summary" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}
