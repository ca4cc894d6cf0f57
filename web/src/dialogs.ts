/**
 * The three confirmations, each a modal <dialog> of index.html: delete a number,
 * buy one (number, place and price, an optional assistant and name), change a
 * number's assistant. Each resolves with what was confirmed, or `null` on Cancel
 * or Escape.
 */

import { $ } from "./dom.js";
import type { ManagedNumber, MonthlyPrice, OfferedNumber, PurchaseRequest, RouteChange } from "./client.js";
import { describeBilling } from "./words.js";

/** What the buyer chose in the purchase confirmation (the number itself aside). */
export type PurchaseChoice = Omit<PurchaseRequest, "phoneNumber">;

export class Dialogs {
  private readonly release: HTMLDialogElement;
  private readonly buy: HTMLDialogElement;
  private readonly assistant: HTMLDialogElement;

  constructor(root: ParentNode) {
    this.release = $<HTMLDialogElement>(root, "#confirm-release");
    this.buy = $<HTMLDialogElement>(root, "#confirm-buy");
    this.assistant = $<HTMLDialogElement>(root, "#change-assistant");
  }

  /** Ask before releasing, naming the number (window.confirm where <dialog> is missing). */
  async confirmRelease(phoneNumber: string): Promise<boolean> {
    if (typeof this.release.showModal !== "function") {
      return window.confirm(`Delete ${phoneNumber}? This cannot be undone.`);
    }
    return (await ask(this.release, { number: phoneNumber })) !== null;
  }

  /** Ask before buying: the number, its place and price in words, an optional assistant and name. */
  async confirmPurchase(o: OfferedNumber, price: MonthlyPrice): Promise<PurchaseChoice | null> {
    const billing = describeBilling(price);
    if (typeof this.buy.showModal !== "function") {
      return window.confirm(`Buy ${o.phoneNumber} for ${billing}?`) ? {} : null;
    }
    const place = [o.locality, o.region].filter(Boolean).join(", ");
    const answer = await ask(this.buy, { number: o.phoneNumber, place: place ? ` (${place})` : "", price: billing });
    if (!answer) return null;
    return {
      assistantId: normaliseAssistantId(field(answer, "assistantId")),
      name: field(answer, "name") || undefined,
    };
  }

  /** Ask for the number's new assistant (required) and name, filled with the current ones. */
  async askAssistant(n: ManagedNumber): Promise<RouteChange | null> {
    if (typeof this.assistant.showModal !== "function") return null;
    const current = { assistantId: n.assistantId ?? "", name: n.name ?? "" };
    const answer = await ask(this.assistant, { number: n.phoneNumber }, current);
    if (!answer) return null;
    const assistantId = normaliseAssistantId(field(answer, "assistantId"));
    // The field is required: the dialog does not close with "confirm" without one.
    if (!assistantId) return null;
    return { assistantId, name: field(answer, "name") || undefined };
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

/** A form field's value, trimmed. */
export const field = (data: FormData, name: string): string => String(data.get(name) ?? "").trim();

/** An assistant id as Vapi writes it: a lowercase UUID (the input's `pattern` accepts either case). */
const normaliseAssistantId = (value: string): string | undefined => value.trim().toLowerCase() || undefined;
