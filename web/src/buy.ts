/**
 * The "Buy a number" panel: search by area code (and what the number contains),
 * the results with place, capabilities and monthly price, and buying one after a
 * confirmation that states the price. Its messages go to #buy-notice and #buy-error.
 */

import { ApiError, type OfferedNumber, type SearchQuery, type SearchResult } from "./client.js";
import { field } from "./dialogs.js";
import { $, button, el, messageArea, showBusy, type MessageArea } from "./dom.js";
import type { PageContext } from "./telephony.js";
import { BUY_ERROR_WORDS, describeOffer, describePrice, describePurchase } from "./words.js";

export class BuyPanel {
  readonly messages: MessageArea;
  private readonly panel: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly searchButton: HTMLButtonElement;
  private readonly offersBox: HTMLElement;
  /** The last search's answer and what it asked for (`null`: no search yet). */
  private search: { result: SearchResult; query: SearchQuery } | null = null;
  /** Numbers with a purchase in flight. */
  private readonly buying = new Set<string>();

  constructor(
    root: ParentNode,
    private readonly ctx: PageContext,
  ) {
    this.panel = $<HTMLElement>(root, "#buy-panel");
    this.form = $<HTMLFormElement>(root, "#search-form");
    this.searchButton = $<HTMLButtonElement>(root, "#search");
    this.offersBox = $<HTMLElement>(root, "#offers");
    this.messages = messageArea($(root, "#buy-notice"), $(root, "#buy-error"));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.runSearch();
    });
  }

  /** Hidden while the org is (being) offboarded: every purchase would be refused (409 `org_offboarding`). */
  setRefused(refused: boolean): void {
    this.panel.hidden = refused;
  }

  private async runSearch(): Promise<void> {
    const data = new FormData(this.form);
    const query: SearchQuery = { areaCode: field(data, "areaCode"), contains: field(data, "contains") || undefined };
    this.ctx.clearMessages();
    if (!query.areaCode) {
      this.messages.error("Could not search", new Error("enter a three-digit area code, e.g. 415"));
      $<HTMLInputElement>(this.form, "#area-code").focus();
      return;
    }
    this.searchButton.disabled = true;
    this.searchButton.textContent = "Searching…";
    this.offersBox.setAttribute("aria-busy", "true");
    try {
      this.search = { result: await this.ctx.api.searchNumbers(query), query };
    } catch (e) {
      this.search = null;
      this.messages.error("Could not search for numbers", e);
    } finally {
      this.searchButton.disabled = false;
      this.searchButton.textContent = "Search";
      this.renderOffers();
    }
  }

  private renderOffers(): void {
    this.offersBox.removeAttribute("aria-busy");
    if (!this.search) {
      this.offersBox.replaceChildren();
      return;
    }
    const { result, query } = this.search;
    const where = `in area code ${query.areaCode}${query.contains ? ` containing ${query.contains}` : ""}`;
    if (result.numbers.length === 0) {
      this.offersBox.replaceChildren(
        el("p", { className: "empty muted" }, `No numbers available ${where} right now. Try another area code.`),
      );
      return;
    }
    const count = result.numbers.length === 1 ? "1 number" : `${result.numbers.length} numbers`;
    const parts: Node[] = [el("p", { className: "muted" }, `${count} available ${where}. A result is not a reservation.`)];
    if (!result.pricesAvailable) {
      const warning = "Prices could not be loaded, so these numbers cannot be bought right now. Search again in a moment.";
      parts.push(el("p", { className: "notice warning" }, warning));
    }
    parts.push(el("ul", { className: "offers" }, ...result.numbers.map((o) => this.offerRow(o))));
    this.offersBox.replaceChildren(...parts);
  }

  private offerRow(o: OfferedNumber): HTMLLIElement {
    const what = el(
      "div",
      { className: "what" },
      el("span", { className: "phone" }, o.phoneNumber),
      el("span", { className: "detail" }, describeOffer(o)),
    );
    const price = el("span", { className: o.monthlyPrice ? "price" : "price unavailable" }, describePrice(o.monthlyPrice));
    const row = el("li", { className: "offer" }, what, price);
    row.dataset.number = o.phoneNumber;
    if (!o.monthlyPrice) {
      // Never sell without a stated price: the confirmation must say what it costs.
      row.append(el("span", { className: "no-buy muted" }, "Cannot be bought until its price is known"));
      return row;
    }
    const buy = button("Buy", "primary", `Buy ${o.phoneNumber}`, () => void this.buy(o));
    if (this.buying.has(o.phoneNumber)) showBusy(buy, "Buying…", `Buying ${o.phoneNumber}…`);
    row.append(buy);
    return row;
  }

  private async buy(o: OfferedNumber): Promise<void> {
    const n = o.phoneNumber;
    if (this.buying.has(n) || !o.monthlyPrice) return;
    const choice = await this.ctx.dialogs.confirmPurchase(o, o.monthlyPrice);
    if (!choice) return;
    this.ctx.clearMessages();
    this.buying.add(n);
    this.renderOffers();
    try {
      const outcome = await this.ctx.api.buy({ phoneNumber: n, ...choice });
      this.messages.notice(describePurchase(outcome), outcome.status === "provisioning");
      this.dropOffer(n); // it is this org's now (or being set up)
    } catch (e) {
      this.messages.error(`Could not buy ${n}`, e, BUY_ERROR_WORDS);
      if (e instanceof ApiError && (e.code === "number_unavailable" || e.code === "number_taken")) this.dropOffer(n);
    } finally {
      this.buying.delete(n);
    }
    this.renderOffers();
    await this.ctx.refresh();
    this.messages.focus();
  }

  /** A number no longer to offer: bought, or taken by someone else. */
  private dropOffer(phoneNumber: string): void {
    if (this.search) this.search.result.numbers = this.search.result.numbers.filter((x) => x.phoneNumber !== phoneNumber);
  }
}
