'use strict';
// The Node.js 20 peer of list-numbers (GET /api/managed-telephony/status) for
// `scripts/bench.sh coldstart`: the same work as functions/list-numbers — the
// org from the JWT authorizer's claims (ORG_CLAIM, default `org_id`, trimmed, a
// UUID; `sub` present and recordable), `include` the only query parameter, the
// same single SQL statement (shared/src/numbers.rs `STATUS_SQL`, copied verbatim)
// through `pg` with one lazily opened connection, the same response shape — behind
// a minimal Lambda Runtime API loop (node:http, keep-alive: next → handler →
// response), as a `provided` runtime would run it. Not deployed anywhere.

const http = require('node:http');
const { Pool } = require('pg');

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const ORG_CLAIM = process.env.ORG_CLAIM || 'org_id';
const READ_SCOPE = process.env.READ_SCOPE || 'telephony:read';
const MAX_SUBJECT_CHARS = 256;

// One instance serves one request at a time: one connection, opened on first use
// (as the Rust functions' pool does), reused across invocations.
const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 1 });

// shared/src/numbers.rs, STATUS_SQL: keep in step with it (one flat row per number).
const STATUS_SQL = `SELECT
        cr.org_id IS NOT NULL AS has_credential,
        cr.metadata->>'accountSid' AS account_sid, cr.metadata->>'phoneNumber' AS slot_number,
        cr.source, o.vapi_credential_id, cr.updated_at AS credential_updated_at,
        o.vapi_credential_id IS NOT NULL AND o.synced_generation = o.sync_generation AS synced,
        o.vapi_synced_at,
        CASE WHEN o.synced_generation < o.sync_generation THEN
            CASE WHEN o.sync_lease_until >= now() THEN 'sync_in_progress'
                 ELSE coalesce(o.vapi_sync_error, 'sync_unfinished') END END AS sync_code,
        n.phone_number, n.status, n.vapi_phone_id, n.twilio_phone_sid, n.assistant_id,
        n.display_name, n.assistant_pending, n.created_at, n.released_at,
        n.vapi_released_at IS NULL AS vapi_release_pending,
        n.twilio_released_at IS NULL AS twilio_release_pending,
        n.release_attempts, n.next_attempt_at, n.last_release_error,
        n.twilio_subaccount_sid IS NULL AS subaccount_pending,
        n.bought_at IS NULL AS purchase_pending, n.imported_at IS NULL AS import_pending,
        n.purchase_attempts, n.claim_token IS NULL AS unclaimed, n.last_purchase_error
    FROM (VALUES ($1::uuid)) AS q (org_id)
    LEFT JOIN (org_credentials cr JOIN organizations o ON o.id = cr.org_id)
           ON cr.org_id = q.org_id AND cr.provider = 'twilio' AND cr.is_active
    LEFT JOIN managed_phone_numbers n
           ON n.org_id = q.org_id AND ($2 OR n.status <> 'released')
    ORDER BY n.created_at DESC, n.id`;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Uuid::parse_str's forms: hyphenated, simple, braced, urn; any case.
const UUID = /^(?:urn:uuid:)?\{?([0-9a-f]{8})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{12})\}?$/i;

function parseUuid(s) {
  const m = UUID.exec(s);
  if (!m) return null;
  const braced = s.includes('{');
  if (braced !== s.endsWith('}')) return null;
  const hyphens = (s.replace(/^urn:uuid:/i, '').match(/-/g) || []).length;
  if (hyphens !== 0 && hyphens !== 4) return null;
  return m.slice(1).join('-').toLowerCase();
}

// shared/src/identity.rs, Caller::from_claims (the parts list-numbers uses).
function caller(event) {
  const jwt = event?.requestContext?.authorizer?.jwt;
  const claims = jwt?.claims;
  if (!claims) {
    throw new ApiError(401, 'unauthenticated', 'no verified token: the request carries no JWT authorizer claims');
  }
  const org = typeof claims[ORG_CLAIM] === 'string' ? claims[ORG_CLAIM].trim() : '';
  if (!org) throw new ApiError(401, 'unauthenticated', `the token carries no ${ORG_CLAIM} claim`);
  const orgId = parseUuid(org);
  if (!orgId) throw new ApiError(401, 'unauthenticated', `the token's ${ORG_CLAIM} claim is not a UUID`);
  const sub = typeof claims.sub === 'string' ? claims.sub.trim() : '';
  if (!sub) throw new ApiError(401, 'unauthenticated', 'the token carries no sub claim');
  // eslint-disable-next-line no-control-regex
  if ([...sub].length > MAX_SUBJECT_CHARS || /[\u0000-\u001f\u007f-\u009f]/.test(sub)) {
    throw new ApiError(401, 'unrecordable_subject',
      `the token's sub claim must be 1 to ${MAX_SUBJECT_CHARS} characters without control characters`);
  }
  // Scopes: the authorizer's list and/or the space-separated `scope`/`scp` claim
  // (array claims arrive as "[a b]").
  const scopes = [...(Array.isArray(jwt.scopes) ? jwt.scopes : [])];
  for (const name of ['scope', 'scp']) {
    if (typeof claims[name] === 'string') {
      scopes.push(...claims[name].trim().replace(/^\[+/, '').replace(/\]+$/, '').split(/[ ,]/).filter(Boolean));
    }
  }
  return { orgId, subject: sub, scopes };
}

function requireScope(who, scope) {
  if (!who.scopes.includes(scope)) {
    throw new ApiError(403, 'forbidden', `this action needs the ${scope} scope, which the token does not carry`);
  }
}

// functions/list-numbers `listing`: `include` only, and only `released`, once.
function withReleased(event) {
  const q = new URLSearchParams(event.rawQueryString || '');
  for (const name of q.keys()) {
    if (name !== 'include') {
      throw new ApiError(400, 'unknown_query_parameter',
        `unknown query parameter "${name}"; allowed: ["include"]`);
    }
  }
  const values = q.getAll('include');
  if (values.length === 0) return false;
  if (values.length === 1 && values[0] === 'released') return true;
  throw new ApiError(400, 'invalid_query_parameter', 'include accepts only the value "released" (once)');
}

// shared/src/numbers.rs `status`: the credential from the first row, a number
// from every row that has one; empty optional parts skipped as the Rust types do.
function errorCodes(lastError) {
  const out = {};
  if (lastError && typeof lastError === 'object' && !Array.isArray(lastError)) {
    for (const [step, err] of Object.entries(lastError)) {
      out[step] = err && typeof err === 'object' && 'code' in err ? err.code : null;
    }
  }
  return out;
}

function progress(pending, attempts, nextAttemptAt, lastError) {
  const p = { pending, attempts, nextAttemptAt };
  const errors = errorCodes(lastError);
  if (Object.keys(errors).length > 0) p.errors = errors;
  return p;
}

function credential(r) {
  if (!r.has_credential) return null;
  const vapi = { synced: r.synced === true, syncedAt: r.vapi_synced_at };
  if (r.sync_code != null) vapi.code = r.sync_code;
  return {
    accountSid: r.account_sid, phoneNumber: r.slot_number, source: r.source,
    vapiCredentialId: r.vapi_credential_id, updatedAt: r.credential_updated_at, vapi,
  };
}

function number(r) {
  const status = r.status;
  const n = {
    phoneNumber: r.phone_number, status, vapiPhoneId: r.vapi_phone_id, twilioPhoneSid: r.twilio_phone_sid,
    assistantId: r.assistant_id, name: r.display_name, assistantPending: r.assistant_pending,
    createdAt: r.created_at, releasedAt: r.released_at,
  };
  if (status === 'releasing' || status === 'release_pending' || status === 'needs_attention') {
    const pending = [];
    if (r.vapi_phone_id != null && r.vapi_release_pending) pending.push('vapi');
    if (r.twilio_release_pending) pending.push('twilio');
    n.release = progress(pending, r.release_attempts,
      status === 'release_pending' ? r.next_attempt_at : null, r.last_release_error);
  } else if (status === 'provisioning') {
    const pending = [];
    if (r.subaccount_pending) pending.push('subaccount');
    if (r.purchase_pending) pending.push('twilio');
    if (r.import_pending) pending.push('vapi');
    n.purchase = progress(pending, r.purchase_attempts, r.unclaimed ? r.next_attempt_at : null,
      r.last_purchase_error);
  }
  return n;
}

function reply(status, body, requestId) {
  return {
    statusCode: status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-request-id': requestId },
    body: JSON.stringify(body),
    isBase64Encoded: false,
  };
}

async function handler(event, requestId) {
  const started = process.hrtime.bigint();
  let status;
  let body;
  try {
    const who = caller(event);
    requireScope(who, READ_SCOPE);
    const released = withReleased(event);
    const { rows } = await pool.query({ text: STATUS_SQL, values: [who.orgId, released] });
    status = 200;
    body = {
      credential: rows.length > 0 ? credential(rows[0]) : null,
      numbers: rows.filter((r) => r.phone_number != null).map(number),
    };
  } catch (err) {
    if (err instanceof ApiError) {
      status = err.status;
      body = { error: { code: err.code, message: err.message, requestId } };
    } else {
      console.error(JSON.stringify({ level: 'ERROR', message: 'request failed', cause: String(err), request_id: requestId }));
      status = 500;
      body = { error: { code: 'internal', message: 'internal error', requestId } };
    }
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(JSON.stringify({
    timestamp: new Date().toISOString(), level: 'INFO', message: 'request done',
    status, duration_ms: Math.round(ms), request_id: requestId, route: 'list-numbers',
  }));
  return reply(status, body, requestId);
}

// The Runtime API client: one keep-alive connection to AWS_LAMBDA_RUNTIME_API.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const [apiHost, apiPort] = API.split(':');

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: apiHost, port: Number(apiPort), method, path, agent,
      headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main() {
  for (;;) {
    const next = await call('GET', '/2018-06-01/runtime/invocation/next');
    const id = next.headers['lambda-runtime-aws-request-id'];
    try {
      const result = await handler(JSON.parse(next.body), id);
      await call('POST', `/2018-06-01/runtime/invocation/${id}/response`, JSON.stringify(result));
    } catch (err) {
      await call('POST', `/2018-06-01/runtime/invocation/${id}/error`,
        JSON.stringify({ errorType: err?.name || 'Error', errorMessage: String(err?.message || err) }));
    }
  }
}

main().catch(async (err) => {
  try {
    await call('POST', '/2018-06-01/runtime/init/error',
      JSON.stringify({ errorType: err?.name || 'Error', errorMessage: String(err?.message || err) }));
  } finally {
    process.exit(1);
  }
});
