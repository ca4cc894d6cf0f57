/**
 * Offboarding the organisation: the "Offboard organisation" action at the bottom of
 * the page (behind a confirmation that asks for the org's id, typed out), and the
 * banner at the top once status has an `offboarding`: its state, what is done and
 * what is left. Its messages go to #offboard-notice and #offboard-error.
 */

import type { Offboarding } from "./client.js";
import { $, messageArea, showBusy, type MessageArea } from "./dom.js";
import type { PageContext } from "./telephony.js";
import { OFFBOARD_ERROR_WORDS, describeOffboardOutcome, describeOffboarding } from "./words.js";

const LABELS = { start: "Offboard organisation", resume: "Resume offboarding" };

export class OffboardPanel {
  readonly messages: MessageArea;
  private readonly banner: HTMLElement;
  private readonly action: HTMLButtonElement;
  private offboarding: Offboarding | null = null;
  private busy = false;

  constructor(
    root: ParentNode,
    private readonly ctx: PageContext,
  ) {
    this.banner = $<HTMLElement>(root, "#offboarding-banner");
    this.action = $<HTMLButtonElement>(root, "#offboard");
    this.messages = messageArea($(root, "#offboard-notice"), $(root, "#offboard-error"));
    this.action.addEventListener("click", () => void this.offboard());
  }

  /** Show the org's offboarding (`undefined`: never asked for). */
  show(offboarding: Offboarding | undefined): void {
    this.offboarding = offboarding ?? null;
    this.render();
  }

  private render(): void {
    const o = this.offboarding;
    this.banner.hidden = !o;
    this.banner.textContent = o ? describeOffboarding(o) : "";
    this.banner.classList.toggle("done", o?.status === "offboarded");
    this.banner.dataset.status = o?.status ?? "";
    // Offboarded: nothing left to do (a repeat changes nothing). Unfinished: a repeat resumes it.
    this.action.hidden = o?.status === "offboarded";
    if (this.busy) {
      showBusy(this.action, "Offboarding…", "Offboarding the organisation…");
      return;
    }
    this.action.disabled = false;
    this.action.textContent = o ? LABELS.resume : LABELS.start;
    this.action.removeAttribute("aria-label");
  }

  private async offboard(): Promise<void> {
    if (this.busy) return;
    const confirm = await this.ctx.dialogs.confirmOffboard(await this.ctx.api.orgId());
    if (!confirm) return;
    this.ctx.clearMessages();
    this.busy = true;
    this.render();
    try {
      const outcome = await this.ctx.api.offboard(confirm);
      this.messages.notice(describeOffboardOutcome(outcome), outcome.status !== "offboarded");
    } catch (e) {
      this.messages.error("Could not offboard the organisation", e, OFFBOARD_ERROR_WORDS);
    } finally {
      this.busy = false;
    }
    await this.ctx.refresh();
    this.messages.focus();
  }
}
