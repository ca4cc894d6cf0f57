/**
 * The confirmations, each a modal <dialog> of index.html: delete a number, buy one
 * (number, place and price, an optional assistant and name), change a number's
 * assistant, disconnect the credential, rotate its managed token, and offboard the
 * organisation (its id typed out: the confirm button stays disabled until it
 * matches). Each resolves with what was confirmed, or `null` on Cancel or Escape.
 */

import { $ } from "./dom.js";
import type {
  CredentialSummary,
  ManagedNumber,
  MonthlyPrice,
  OfferedNumber,
  PurchaseRequest,
  RouteChange,
} from "./client.js";
import { describeBilling } from "./words.js";

/** What the buyer chose in the purchase confirmation (the number itself aside). */
export type PurchaseChoice = Omit<PurchaseRequest, "phoneNumber">;

export class Dialogs {
  private readonly release: HTMLDialogElement;
  private readonly buy: HTMLDialogElement;
  private readonly assistant: HTMLDialogElement;
  private readonly disconnect: HTMLDialogElement;
  private readonly rotate: HTMLDialogElement;
  private readonly offboard: TypedConfirmation;

  constructor(root: ParentNode) {
    this.release = $<HTMLDialogElement>(root, "#confirm-release");
    this.buy = $<HTMLDialogElement>(root, "#confirm-buy");
    this.assistant = $<HTMLDialogElement>(root, "#change-assistant");
    this.disconnect = $<HTMLDialogElement>(root, "#confirm-disconnect");
    this.rotate = $<HTMLDialogElement>(root, "#confirm-rotate");
    this.offboard = new TypedConfirmation($<HTMLDialogElement>(root, "#confirm-offboard"));
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

  /** Ask before disconnecting the credential, naming its account. */
  async confirmDisconnect(c: CredentialSummary): Promise<boolean> {
    const account = c.accountSid ?? "your Twilio account";
    if (typeof this.disconnect.showModal !== "function") {
      return window.confirm(`Disconnect ${account}? Its copy at Vapi is deleted.`);
    }
    return (await ask(this.disconnect, { account })) !== null;
  }

  /** Ask before rotating the managed token, naming the subaccount and what happens. */
  async confirmRotate(c: CredentialSummary): Promise<boolean> {
    const account = c.accountSid ?? "the managed Twilio subaccount";
    if (typeof this.rotate.showModal !== "function") {
      return window.confirm(
        `Rotate the Twilio token of ${account}? A new token is created and every number is updated ` +
          "with it before the old one stops working.",
      );
    }
    return (await ask(this.rotate, { account })) !== null;
  }

  /** Ask for the org's id, typed out, before offboarding; resolves with what was typed. */
  confirmOffboard(orgId: string | null): Promise<string | null> {
    return this.offboard.ask(orgId);
  }
}

/**
 * A confirmation that asks for a value typed out (the org's id): its `confirm`
 * button is enabled only while the `confirm` field matches it exactly (surrounding
 * spaces aside). When the page does not know the value, anything typed goes, and
 * the API checks it.
 */
class TypedConfirmation {
  private readonly input: HTMLInputElement;
  private readonly confirmButton: HTMLButtonElement;
  private expected: string | null = null;

  constructor(private readonly dialog: HTMLDialogElement) {
    this.input = $<HTMLInputElement>(dialog, "input[name=confirm]");
    this.confirmButton = $<HTMLButtonElement>(dialog, "button[value=confirm]");
    this.input.addEventListener("input", () => this.check());
  }

  async ask(expected: string | null): Promise<string | null> {
    const unknown = "(not known to this page: your administrator has it)";
    if (typeof this.dialog.showModal !== "function") {
      const typed = window.prompt(`Offboard this organisation? Type its id to confirm: ${expected ?? unknown}`);
      return typed && matches(typed, expected) ? typed.trim() : null;
    }
    this.expected = expected;
    this.confirmButton.disabled = true; // the field starts empty
    const answer = await ask(this.dialog, { org: expected ?? unknown });
    const typed = answer ? field(answer, "confirm") : "";
    return typed && matches(typed, expected) ? typed : null;
  }

  private check(): void {
    this.confirmButton.disabled = !matches(this.input.value, this.expected);
  }
}

/** Whether `typed` is the expected value (any value when it is not known). */
const matches = (typed: string, expected: string | null): boolean =>
  expected === null ? typed.trim() !== "" : typed.trim() === expected;

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
