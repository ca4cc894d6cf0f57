/** Small DOM helpers the page's parts share: elements, lookups, message areas. */

import { describeError } from "./words.js";

/** A tiny element builder: text only (never innerHTML), so API values can't inject markup. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> & { className?: string } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** The element `selector` finds under `root`; a missing one is a mistake in the markup. */
export function $<T extends HTMLElement>(root: ParentNode, selector: string): T {
  const found = root.querySelector<T>(selector);
  if (!found) throw new Error(`telephony page: missing ${selector}`);
  return found;
}

/** A button with a label for screen readers (its text says less than it does). */
export function button(text: string, className: string, label: string, onClick: () => void): HTMLButtonElement {
  const b = el("button", { type: "button", className }, text);
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

/** Show a button as busy: disabled, with what it is doing. */
export function showBusy(b: HTMLButtonElement, text: string, label: string): void {
  b.disabled = true;
  b.textContent = text;
  b.setAttribute("aria-label", label);
}

export interface MessageArea {
  /** The outcome of the last action (role=status); `warning` for one that needs a look. */
  notice(text: string, warning?: boolean): void;
  /** Errors accumulate until the next action, so a later one never hides an earlier one. */
  error(what: string, e: unknown, words?: Record<string, string>): void;
  clear(): void;
  /** Move focus to what happened (the button that was pressed may be gone). */
  focus(): void;
}

/** A status line (role=status) and an error list (role=alert) for one part of the page. */
export function messageArea(notice: HTMLElement, errorBox: HTMLElement): MessageArea {
  return {
    notice(text, warning = false) {
      notice.textContent = text;
      notice.classList.toggle("warning", warning);
      notice.hidden = false;
    },
    error(what, e, words) {
      const { text, requestId } = describeError(what, e, words);
      const line = el("p", {}, text);
      if (requestId) line.append(el("span", { className: "request-id" }, "Request id: ", el("code", {}, requestId)));
      errorBox.append(line);
      errorBox.hidden = false;
    },
    clear() {
      notice.hidden = errorBox.hidden = true;
      notice.textContent = "";
      errorBox.replaceChildren();
    },
    focus() {
      (errorBox.hidden ? notice : errorBox).focus();
    },
  };
}
