/**
 * The managed numbers list: each number with its state in words and its assistant,
 * a Delete button (confirm first) or Retry for an unfinished release, and Change
 * assistant for an active number. Its messages go to #notice and #error.
 */

import type { ManagedNumber } from "./client.js";
import { $, button, el, messageArea, showBusy, type MessageArea } from "./dom.js";
import type { PageContext } from "./telephony.js";
import {
  STATUS_LABELS,
  describeAssistant,
  describeFindings,
  describeNumber,
  describeOutcome,
  describeRouting,
} from "./words.js";

export class NumbersList {
  readonly messages: MessageArea;
  private readonly box: HTMLElement;
  private numbers: ManagedNumber[] | null = null;
  /** Numbers with a DELETE in flight from this page. */
  private readonly releasing = new Set<string>();
  /** Numbers with a PATCH (change assistant) in flight. */
  private readonly rerouting = new Set<string>();

  constructor(
    root: ParentNode,
    private readonly ctx: PageContext,
  ) {
    this.box = $<HTMLElement>(root, "#numbers");
    this.messages = messageArea($(root, "#notice"), $(root, "#error"));
  }

  /** Show these numbers (the status's, newest first). */
  show(numbers: ManagedNumber[]): void {
    this.numbers = numbers;
    this.render();
  }

  /** Whether a list was ever shown (an error then keeps it up). */
  get loaded(): boolean {
    return this.numbers !== null;
  }

  setBusy(busy: boolean): void {
    if (busy) this.box.setAttribute("aria-busy", "true");
    else this.box.removeAttribute("aria-busy");
  }

  notLoaded(): void {
    this.setBusy(false);
    this.box.replaceChildren(el("p", { className: "muted" }, "Not loaded."));
  }

  private render(): void {
    this.setBusy(false);
    if (!this.numbers) return;
    if (this.numbers.length === 0) {
      this.box.replaceChildren(el("p", { className: "empty muted" }, "No managed numbers."));
      return;
    }
    this.box.replaceChildren(el("ul", { className: "numbers" }, ...this.numbers.map((n) => this.row(n))));
  }

  private row(n: ManagedNumber): HTMLLIElement {
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
    const findings = describeFindings(n);
    if (findings) what.append(el("span", { className: "finding" }, findings));
    const row = el("li", { className: `number status-${n.status}` }, what, ...this.buttons(n));
    row.dataset.number = n.phoneNumber;
    row.dataset.status = n.status;
    return row;
  }

  /** Delete (active), Retry (an unfinished release), Change assistant (active); none while being set up. */
  private buttons(n: ManagedNumber): HTMLButtonElement[] {
    const phone = n.phoneNumber;
    const releaseButton =
      n.status === "active"
        ? button("Delete", "danger", `Delete ${phone}`, () => void this.release(phone, true))
        : n.status === "release_pending" || n.status === "needs_attention"
          ? // Already confirmed once and no longer routing: Retry just resumes the release.
            button("Retry", "retry", `Retry releasing ${phone}`, () => void this.release(phone, false))
          : null;
    if (releaseButton && this.releasing.has(phone)) showBusy(releaseButton, "Releasing…", `Releasing ${phone}…`);
    if (n.status !== "active") return releaseButton ? [releaseButton] : [];
    const change = button("Change assistant", "secondary", `Change the assistant of ${phone}`, () => void this.changeAssistant(n));
    if (this.rerouting.has(phone) || this.releasing.has(phone)) change.disabled = true;
    if (this.rerouting.has(phone)) change.textContent = "Saving…";
    return releaseButton ? [releaseButton, change] : [change];
  }

  private async release(phoneNumber: string, confirmFirst: boolean): Promise<void> {
    if (this.releasing.has(phoneNumber)) return;
    if (confirmFirst && !(await this.ctx.dialogs.confirmRelease(phoneNumber))) return;
    this.ctx.clearMessages();
    this.releasing.add(phoneNumber);
    this.render();
    try {
      const outcome = await this.ctx.api.release(phoneNumber);
      this.messages.notice(describeOutcome(outcome), outcome.status === "release_pending");
    } catch (e) {
      this.messages.error(`Could not release ${phoneNumber}`, e);
    } finally {
      this.releasing.delete(phoneNumber);
    }
    await this.ctx.refresh();
    // The row (and its focused button) may be gone: move focus to what happened.
    this.messages.focus();
  }

  private async changeAssistant(n: ManagedNumber): Promise<void> {
    if (this.rerouting.has(n.phoneNumber)) return;
    const change = await this.ctx.dialogs.askAssistant(n);
    if (!change) return;
    this.ctx.clearMessages();
    this.rerouting.add(n.phoneNumber);
    this.render();
    try {
      const routing = await this.ctx.api.changeAssistant(n.phoneNumber, change);
      this.messages.notice(describeRouting(routing), !routing.routed);
    } catch (e) {
      this.messages.error(`Could not change the assistant of ${n.phoneNumber}`, e);
    } finally {
      this.rerouting.delete(n.phoneNumber);
    }
    await this.ctx.refresh();
    this.messages.focus();
  }
}
