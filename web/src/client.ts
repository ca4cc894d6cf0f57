/**
 * The telephony API, through the client generated from `openapi.yaml`: `api.d.ts`
 * (openapi-typescript, made by scripts/build-web.sh) types every path, parameter,
 * body and answer, and openapi-fetch makes the requests. Nothing here restates a
 * schema: the types below are names for the generated ones.
 *
 * `TelephonyApi` adds what every call of the page needs: the bearer token (asked
 * for before each request, so a refreshed one is used), a timeout, and every answer
 * other than 2xx — or no answer — thrown as an `ApiError` with the API's code,
 * message and request id.
 */

import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./api";

type Schemas = components["schemas"];
export type TelephonyStatus = Schemas["Status"];
export type ManagedNumber = Schemas["ManagedNumber"];
export type NumberStatus = ManagedNumber["status"];
export type CredentialSummary = Schemas["CredentialSummary"];
export type OfferedNumber = Schemas["OfferedNumber"];
export type MonthlyPrice = NonNullable<OfferedNumber["monthlyPrice"]>;
export type SearchResult = Schemas["SearchResult"];
export type PurchaseRequest = Schemas["PurchaseRequest"];
export type RouteChange = Schemas["RouteChange"];
export type Routing = Schemas["Routing"];
export type Disconnected = Schemas["Disconnected"];
export type Offboarding = Schemas["Offboarding"];
/** A step of an offboarding: numbers, credential, subaccount, slot. */
export type OffboardStep = Offboarding["pending"][number];
export type TokenRotation = Schemas["TokenRotation"];
/** A step of a token rotation: token, credential, numbers, promote, slot. */
export type RotationStep = keyof NonNullable<TokenRotation["errors"]>;
/** The search's query parameters. */
export type SearchQuery = NonNullable<paths["/api/managed-telephony/available-numbers"]["get"]["parameters"]["query"]>;

/** An API answer other than 2xx, or no answer at all (`status` 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | null,
  ) {
    super(message);
  }
}

export interface TelephonyConfig {
  /** The API's origin, e.g. `https://api.example.com` (no trailing slash needed). */
  apiBase: string;
  /** The signed-in user's access token; called before every request, so it may refresh. */
  getToken: () => string | Promise<string>;
  /**
   * The org's id, which offboarding asks to be typed out. Optional: without it the
   * page reads the token's `org_id` claim (see `TelephonyApi.orgId`).
   */
  orgId?: string;
}

/** API Gateway gives up after 30 s; wait a little longer than that, never forever. */
const REQUEST_TIMEOUT_MS = 35_000;

/** What openapi-fetch answers: `data` for a 2xx, else `error` (the parsed body). */
type Answer<D, E> = { data?: D; error?: E; response: Response };

export class TelephonyApi {
  private readonly client;

  constructor(private readonly config: TelephonyConfig) {
    const base = config.apiBase.replace(/\/+$/, "");
    this.client = createClient<paths>({
      baseUrl: base,
      cache: "no-store",
      headers: { Accept: "application/json" },
      fetch: (request) => timedFetch(base, request),
    });
    this.client.use(bearer(config.getToken));
  }

  /** Active numbers and numbers still being released, newest first. */
  status() {
    return settle(this.client.GET("/api/managed-telephony/status"));
  }

  /** Release one number (`+` travels as `%2B`). Repeating it resumes an unfinished release. */
  release(phoneNumber: string) {
    return settle(
      this.client.DELETE("/api/managed-telephony/numbers/{phoneNumber}", { params: { path: { phoneNumber } } }),
    );
  }

  /** Numbers Twilio offers now, each with its monthly price (or `null`). */
  searchNumbers(query: SearchQuery) {
    return settle(this.client.GET("/api/managed-telephony/available-numbers", { params: { query } }));
  }

  /** Buy one number (201 `active`, 200 when it already was, 202 `provisioning`). Repeating it never buys twice. */
  buy(request: PurchaseRequest) {
    return settle(this.client.POST("/api/managed-telephony/numbers", { body: request }));
  }

  /** Route an active number to another Vapi assistant (and optionally rename it). */
  changeAssistant(phoneNumber: string, change: RouteChange) {
    return settle(
      this.client.PATCH("/api/managed-telephony/numbers/{phoneNumber}", {
        params: { path: { phoneNumber } },
        body: change,
      }),
    );
  }

  /** Disconnect the org's Twilio credential: its Vapi credential is deleted and its slot cleared. */
  disconnect() {
    return settle(this.client.DELETE("/api/telephony/credentials/twilio"));
  }

  /**
   * Rotate the org's managed Twilio token (no body): 200 rotated, 202 steps left
   * (`rotating`, `needs_attention`). Repeating it resumes an unfinished rotation.
   */
  rotateToken() {
    return settle(this.client.POST("/api/telephony/credentials/twilio/rotate"));
  }

  /** Offboard the org (`confirm`: its id, typed out): 200 offboarded, 202 still under way. */
  offboard(confirm: string) {
    return settle(this.client.POST("/api/managed-telephony/offboard", { body: { confirm } }));
  }

  /**
   * The org the calls act for, to show in the offboarding confirmation: the
   * configured `orgId`, else the token's `org_id` claim (read, not verified: the
   * API checks the confirmation itself); `null` when neither says.
   */
  async orgId(): Promise<string | null> {
    if (this.config.orgId) return this.config.orgId;
    try {
      return tokenOrgId(await this.config.getToken());
    } catch {
      return null; // no token now: the offboard request itself says why
    }
  }
}

/** The `org_id` claim of a JWT's payload, or `null` (not a JWT, or no such claim). */
export function tokenOrgId(token: string): string | null {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
    const orgId = (JSON.parse(json) as { org_id?: unknown }).org_id;
    return typeof orgId === "string" && orgId ? orgId : null;
  } catch {
    return null;
  }
}

/** What a DELETE answers with 200 or 202: released, pending (why), or being released. */
export type ReleaseOutcome = Awaited<ReturnType<TelephonyApi["release"]>>;
/** What a purchase answers with 200, 201 or 202: active, or still being set up. */
export type PurchaseOutcome = Awaited<ReturnType<TelephonyApi["buy"]>>;

/** Sends the bearer token, asked for anew before each request. */
function bearer(getToken: TelephonyConfig["getToken"]): Middleware {
  return {
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${await getToken()}`);
      return request;
    },
  };
}

/** `fetch` with the timeout; no answer at all becomes an `ApiError` with status 0. */
async function timedFetch(base: string, request: Request): Promise<Response> {
  try {
    return await fetch(request, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (e) {
    const timedOut = e instanceof DOMException && e.name === "TimeoutError";
    throw new ApiError(
      0,
      timedOut ? "timeout" : "network_error",
      timedOut
        ? `The telephony API at ${base} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s.`
        : `Could not reach the telephony API at ${base} (network error, or the API refused this page's origin).`,
      null,
    );
  }
}

/** The 2xx answer's body, or the error answer thrown as an `ApiError`. */
async function settle<D, E>(pending: Promise<Answer<D, E>>): Promise<D> {
  const { data, error, response } = await pending;
  if (response.ok) return data as D;
  // The functions answer {"error": {"code", "message", "requestId"}}; API Gateway's
  // own refusals (401/403) {"message"}. `x-request-id` is exposed through CORS.
  const { code, message, requestId } = errorFields(error);
  throw new ApiError(
    response.status,
    code ?? `http_${response.status}`,
    message ?? (response.statusText || "Request failed"),
    requestId ?? response.headers.get("x-request-id"),
  );
}

/** The fields of either error shape (a body that is neither gives none). */
function errorFields(body: unknown): { code?: string; message?: string; requestId?: string } {
  if (typeof body !== "object" || body === null) return {};
  if ("error" in body) return (body as Schemas["Error"]).error ?? {};
  if ("message" in body) return { message: String((body as Schemas["GatewayMessage"]).message) };
  return {};
}
