/**
 * The client test: the client a frontend generates from openapi.yaml
 * (openapi-typescript's `paths` in web/src/api.d.ts, openapi-fetch) walks every
 * route of the running local API — status, token rotation, search, buy, change
 * assistant, release, save, disconnect, offboard (last: it ends the org) — and each
 * answer must be what the document says: a status the operation
 * declares, a body that matches its schema (checked against openapi.yaml itself,
 * ./openapi.ts), and the values this walk expects. Every route is also refused once,
 * with the `error.code` the document names. The last test fails when openapi.yaml
 * has a route this walk does not take (a new route joins the walk).
 *
 * Run by scripts/client-test.sh, which starts the local API on a fresh database and
 * passes READY_FILE ({"api", "token", …}); type-checked with `tsc --strict` first.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "../../src/api";
import { OpenApi, type Operation } from "./openapi.js";

type Schemas = components["schemas"];

const here = path.dirname(fileURLToPath(import.meta.url));
const readyFile = process.env["READY_FILE"] ?? assert.fail("READY_FILE is not set (run scripts/client-test.sh)");
const ready = JSON.parse(readFileSync(readyFile, "utf8")) as { api: string; standins: string; token: string };
// Compiled to web/.client-test/, two levels below the repository.
const openapi = new OpenApi(process.env["OPENAPI_FILE"] ?? path.resolve(here, "../../openapi.yaml"));

const OTHER_ORGS_NUMBER = "+14155550199"; // the demo data's number of another org
const ASSISTANT = randomUUID();
const OTHER_ASSISTANT = randomUUID();
const UNKNOWN_ASSISTANT = `00000000-${randomUUID().slice(9)}`; // the Vapi stand-in knows none of these

// ---- what the client sent and what came back ---------------------------------------

/** Each answer's operation and what openapi.yaml says is wrong with it. */
const checked = new WeakMap<Response, { op: Operation; problems: string[] }>();
/** "METHOD /route" → the statuses it answered. */
const walked = new Map<string, number[]>();
/** Every URL the client sent, as it sent it. */
const sent: string[] = [];

const checkAgainstOpenApi: Middleware = {
  onRequest({ request }) {
    sent.push(`${request.method} ${request.url}`);
  },
  async onResponse({ request, response, schemaPath }) {
    const op = { route: schemaPath, method: request.method };
    const text = await response.clone().text();
    let body: unknown;
    const problems: string[] = [];
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      problems.push(`the body is not JSON: ${text.slice(0, 80)}`);
    }
    problems.push(...openapi.problems(op, response.status, body));
    if (!response.headers.get("x-request-id")) problems.push("no x-request-id header");
    checked.set(response, { op, problems });
    const key = `${op.method} ${op.route}`;
    walked.set(key, [...(walked.get(key) ?? []), response.status]);
  },
};

/** The generated client, sending `token`. */
function client(token = ready.token) {
  const c = createClient<paths>({ baseUrl: ready.api, headers: { Authorization: `Bearer ${token}` } });
  c.use(checkAgainstOpenApi);
  return c;
}
const api = client();

/** The printed token's claims with `claims` over them, signed as the local
 *  authorizer signs (RS256, by `POST /__control/token`: the test never holds the key). */
async function tokenWith(claims: Record<string, unknown>): Promise<string> {
  const [, payload = ""] = ready.token.split(".");
  const printed = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
  const response = await fetch(`${ready.standins}/__control/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ claims: { ...printed, ...claims } }),
  });
  assert.equal(response.status, 200, "the local API signs a token");
  const { token } = (await response.json()) as { token: string };
  return token;
}

// ---- assertions ---------------------------------------------------------------------

/** The answer came with `status`, and openapi.yaml agrees with it (status and body). */
function answered<R extends { data?: unknown; error?: unknown; response: Response }>(result: R, status: number): R {
  const found = checked.get(result.response);
  assert.ok(found, "the answer went through the checking middleware");
  const what = `${found.op.method} ${found.op.route}`;
  const body = JSON.stringify(result.data ?? result.error);
  assert.equal(result.response.status, status, `${what} answered ${result.response.status}: ${body}`);
  assert.deepEqual(found.problems, [], `${what} answered ${status} unlike openapi.yaml: ${body}`);
  return result;
}

/** A 2xx answer's body. */
function ok<D>(result: { data?: D; error?: unknown; response: Response }, status: number): D {
  const { data } = answered(result, status);
  assert.ok(data !== undefined, "a body");
  return data;
}

const isApiError = (body: unknown): body is Schemas["Error"] =>
  typeof body === "object" && body !== null && "error" in body;

/** A refusal: `status` with the function's error shape and `code`; its message. */
function refused(result: { error?: unknown; response: Response }, status: number, code: string): string {
  const { error } = answered(result, status);
  assert.ok(isApiError(error), `an {"error": …} body: ${JSON.stringify(error)}`);
  assert.equal(error.error.code, code, error.error.message);
  assert.ok(error.error.requestId, "a request id");
  return error.error.message;
}

// ---- the walk (in order: each step starts where the last one ended) ------------------

let offered: Schemas["OfferedNumber"][] = [];
let bought = "";

test("status: the org's credential and numbers; a sub with U+202E is 401 unrecordable_subject", async () => {
  const status = ok(await api.GET("/api/managed-telephony/status"), 200);
  assert.equal(status.credential?.source, "managed");
  // The managed credential serves these numbers: disconnecting it is refused.
  refused(await api.DELETE("/api/telephony/credentials/twilio"), 409, "managed_numbers_remain");
  assert.ok(status.numbers.some((n) => n.phoneNumber === "+14155550100" && n.status === "active"));
  const history = ok(await api.GET("/api/managed-telephony/status", { params: { query: { include: "released" } } }), 200);
  assert.ok(history.numbers.length >= status.numbers.length);

  // A sub that reads as "adminadmin" but is "admin" + right-to-left override + "nimda".
  for (const sub of ["admin\u202Enimda", "ad\u200Bmin", "\uFEFFadmin"]) {
    const message = refused(await client(await tokenWith({ sub })).GET("/api/managed-telephony/status"), 401, "unrecordable_subject");
    assert.match(message, /sub claim/);
  }
});

const ROTATE = "/api/telephony/credentials/twilio/rotate";

test("rotate: 200 rotated (Vapi's credential and every number first), again with {} a new one; 400 for a property", async () => {
  const rotated: Schemas["TokenRotation"] = ok(await api.POST(ROTATE), 200);
  assert.equal(rotated.kind, "rotate");
  assert.equal(rotated.status, "rotated");
  assert.equal(rotated.promoted, true);
  assert.equal(rotated.credentialUpdated, true);
  assert.ok(rotated.doneAt, "doneAt");
  assert.equal(rotated.nextAttemptAt, null);
  assert.equal(rotated.errors, undefined);
  assert.equal(rotated.cancelReason, undefined);
  const status = ok(await api.GET("/api/managed-telephony/status"), 200);
  assert.equal(rotated.accountSid, status.credential?.accountSid);
  assert.deepEqual(
    rotated.numbers.updated,
    status.numbers.filter((n) => n.status === "active").map((n) => n.phoneNumber).sort(),
  );
  assert.deepEqual(rotated.numbers.pending, []);
  assert.deepEqual(status.tokenRotation, rotated);

  // The body may be `{}` too; a rotation that finished is not repeated: a new one starts.
  const again = ok(await api.POST(ROTATE, { body: {} }), 200);
  assert.notEqual(again.id, rotated.id);
  assert.equal(again.status, "rotated");
  assert.deepEqual(ok(await api.GET("/api/managed-telephony/status"), 200).tokenRotation, again);

  const message = refused(
    await api.POST(ROTATE, {
      // @ts-expect-error the generated type takes no property either (additionalProperties: false)
      body: { force: true },
    }),
    400,
    "invalid_body",
  );
  assert.match(message, /force/);
  refused(await api.POST(ROTATE, { body: {}, bodySerializer: () => "{" }), 400, "malformed_json");
});

test("search: plain query parameters; country=XX and an area code outside US/CA are 400 naming the parameter", async (t) => {
  const result = ok(
    await api.GET("/api/managed-telephony/available-numbers", { params: { query: { areaCode: "415", limit: 3 } } }),
    200,
  );
  const url = sent.at(-1) ?? "";
  t.diagnostic(`the generated client's search: ${url.replace(ready.api, "")}`);
  assert.ok(url.endsWith("/api/managed-telephony/available-numbers?areaCode=415&limit=3"), url);
  assert.equal(result.country, "US");
  assert.equal(result.type, "local");
  assert.equal(result.pricesAvailable, true);
  assert.ok(result.numbers.length >= 1 && result.numbers.length <= 3, `${result.numbers.length} numbers`);
  for (const n of result.numbers) {
    assert.match(n.phoneNumber, /^\+1415/);
    assert.deepEqual(n.monthlyPrice, { amount: "1.15", currency: "USD" });
  }
  offered = result.numbers;

  const all = { country: "us", type: "local", contains: "555", limit: 2, addressRequired: "none" } as const;
  ok(await api.GET("/api/managed-telephony/available-numbers", { params: { query: all } }), 200);

  const message = refused(
    await api.GET("/api/managed-telephony/available-numbers", { params: { query: { country: "XX" } } }),
    400,
    "invalid_query_parameter",
  );
  assert.match(message, /^country: XX is not an ISO 3166-1 country code/);
  const areaCode = refused(
    await api.GET("/api/managed-telephony/available-numbers", { params: { query: { country: "GB", areaCode: "415" } } }),
    400,
    "invalid_query_parameter",
  );
  assert.match(areaCode, /^areaCode: /);
  refused(
    await api.GET("/api/managed-telephony/available-numbers", { params: { query: { addressRequired: "any" } } }),
    422,
    "address_required_unsupported",
  );
});

test("buy: 201 active (smsEnabled as asked), 200 on a repeat, 409 purchase_differs and number_taken", async () => {
  const target = offered.find((n) => n.capabilities.voice && n.capabilities.sms)?.phoneNumber;
  assert.ok(target, "the search offered a voice and SMS number");
  const request = { phoneNumber: target, assistantId: ASSISTANT, name: "Client test", smsEnabled: false };
  const first = ok(await api.POST("/api/managed-telephony/numbers", { body: request }), 201);
  bought = target;
  assert.ok(first.status === "active", JSON.stringify(first));
  assert.equal(first.smsEnabled, false);
  assert.equal(first.assistantId, ASSISTANT);
  assert.match(first.twilioPhoneSid ?? "", /^PN[0-9a-f]{32}$/);

  const again = ok(await api.POST("/api/managed-telephony/numbers", { body: request }), 200);
  assert.equal(again.status, "active");

  const differs = refused(
    await api.POST("/api/managed-telephony/numbers", { body: { ...request, smsEnabled: true } }),
    409,
    "purchase_differs",
  );
  assert.match(differs, /smsEnabled/);
  refused(await api.POST("/api/managed-telephony/numbers", { body: { phoneNumber: OTHER_ORGS_NUMBER } }), 409, "number_taken");
  const fresh = offered.find((n) => n.phoneNumber !== target)?.phoneNumber ?? assert.fail("a second offered number");
  refused(
    await api.POST("/api/managed-telephony/numbers", { body: { phoneNumber: fresh, assistantId: UNKNOWN_ASSISTANT } }),
    422,
    "unknown_assistant",
  );
});

test("change assistant: 200 routed; 404 for another org's number, 422 for an assistant Vapi does not know", async () => {
  const number = { phoneNumber: bought };
  const routing = ok(
    await api.PATCH("/api/managed-telephony/numbers/{phoneNumber}", { params: { path: number }, body: { assistantId: OTHER_ASSISTANT } }),
    200,
  );
  assert.deepEqual(routing, { phoneNumber: bought, assistantId: OTHER_ASSISTANT, name: "Client test", routed: true });
  assert.ok(sent.at(-1)?.includes(`/numbers/${encodeURIComponent(bought)}`), `the + travels as %2B: ${sent.at(-1)}`);

  const status = ok(await api.GET("/api/managed-telephony/status"), 200);
  const listed = status.numbers.find((n) => n.phoneNumber === bought);
  assert.equal(listed?.assistantId, OTHER_ASSISTANT);
  assert.equal(listed?.assistantPending, false);

  refused(
    await api.PATCH("/api/managed-telephony/numbers/{phoneNumber}", {
      params: { path: { phoneNumber: OTHER_ORGS_NUMBER } },
      body: { assistantId: OTHER_ASSISTANT },
    }),
    404,
    "number_not_found",
  );
  refused(
    await api.PATCH("/api/managed-telephony/numbers/{phoneNumber}", { params: { path: number }, body: { assistantId: UNKNOWN_ASSISTANT } }),
    422,
    "vapi_refused_assistant",
  );
});

test("release: 200 released, the same again; 404 for another org's number", async () => {
  const number = { phoneNumber: bought };
  const released = ok(await api.DELETE("/api/managed-telephony/numbers/{phoneNumber}", { params: { path: number } }), 200);
  assert.equal(released.status, "released");
  assert.equal(released.phoneNumber, bought);
  const again = ok(await api.DELETE("/api/managed-telephony/numbers/{phoneNumber}", { params: { path: number } }), 200);
  assert.deepEqual(again, released);
  refused(
    await api.DELETE("/api/managed-telephony/numbers/{phoneNumber}", { params: { path: { phoneNumber: OTHER_ORGS_NUMBER } } }),
    404,
    "number_not_found",
  );
});

test("save: 422 twilio_rejected_credentials for a refused token; 200 saved as BYOC, never the token", async () => {
  const credential = {
    accountSid: "AC0123456789abcdef0123456789abcdef",
    authToken: "5f4dcc3b5aa765d61d8327deb882cf99",
    phoneNumber: "+14155550123",
  };
  refused(
    await api.PUT("/api/telephony/credentials/twilio", { body: { ...credential, authToken: "0".repeat(32) } }),
    422,
    "twilio_rejected_credentials",
  );
  const result = answered(await api.PUT("/api/telephony/credentials/twilio", { body: credential }), 200);
  const saved = result.data ?? assert.fail("a body");
  assert.equal(saved.accountSid, credential.accountSid);
  assert.equal(saved.source, "byoc");
  assert.equal(saved.vapi.synced, true, JSON.stringify(saved.vapi));
  assert.ok(!JSON.stringify(saved).includes(credential.authToken), "the answer carries the token");

  // A BYOC org buys no managed numbers.
  const next = offered.find((n) => n.phoneNumber !== bought)?.phoneNumber ?? assert.fail("another offered number");
  refused(await api.POST("/api/managed-telephony/numbers", { body: { phoneNumber: next } }), 409, "byoc_in_use");
  // Nor does it rotate its token here: it rotates it in Twilio and saves the new one.
  const byoc = refused(await api.POST(ROTATE), 409, "byoc_credential");
  assert.match(byoc, /PUT \/api\/telephony\/credentials\/twilio/);
});

test("disconnect: 200 for the BYOC credential (Vapi's deleted), 200 again with nothing left", async () => {
  const done = ok(await api.DELETE("/api/telephony/credentials/twilio"), 200);
  assert.deepEqual(done, { status: "disconnected", source: "byoc", vapiCredentialDeleted: true });
  const again = ok(await api.DELETE("/api/telephony/credentials/twilio"), 200);
  assert.equal(again.source, null);
  const status = ok(await api.GET("/api/managed-telephony/status"), 200);
  assert.equal(status.credential, null);
  refused(await api.POST(ROTATE), 404, "no_credential");
});

test("offboard: 422 for a wrong confirmation; 200 offboarded, then purchases refused 409 org_offboarding", async () => {
  const payload = JSON.parse(Buffer.from(ready.token.split(".")[1] ?? "", "base64url").toString("utf8")) as {
    org_id: string;
  };
  refused(
    await api.POST("/api/managed-telephony/offboard", { body: { confirm: randomUUID() } }),
    422,
    "confirmation_mismatch",
  );
  const done = ok(await api.POST("/api/managed-telephony/offboard", { body: { confirm: payload.org_id } }), 200);
  assert.equal(done.status, "offboarded", JSON.stringify(done));
  assert.deepEqual(done.done, ["numbers", "credential", "subaccount", "slot"]);
  const status = ok(await api.GET("/api/managed-telephony/status"), 200);
  assert.equal(status.offboarding?.status, "offboarded");
  assert.equal(status.credential, null);
  const next = offered.find((n) => n.phoneNumber !== bought)?.phoneNumber ?? assert.fail("another offered number");
  refused(await api.POST("/api/managed-telephony/numbers", { body: { phoneNumber: next } }), 409, "org_offboarding");
  refused(await api.POST(ROTATE), 409, "org_offboarding");
});

test("every route of openapi.yaml was walked, answered and refused", () => {
  const routes = openapi.operations().map((op) => `${op.method} ${op.route}`);
  const missing = routes.filter((r) => !walked.has(r));
  assert.deepEqual(missing, [], "routes of openapi.yaml this walk does not take: add them here");
  for (const route of routes) {
    const statuses = walked.get(route) ?? [];
    assert.ok(statuses.some((s) => s >= 200 && s < 300), `${route}: no 2xx (${statuses})`);
    assert.ok(statuses.some((s) => s >= 400 && s < 500), `${route}: no refusal (${statuses})`);
  }
});
