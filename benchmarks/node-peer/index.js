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
        cr.org_id IS NOT NULL, cr.metadata->>'accountSid', cr.metadata->>'phoneNumber',
        cr.source, o.vapi_credential_id, cr.updated_at,
        o.vapi_credential_id IS NOT NULL AND o.synced_generation = o.sync_generation,
        o.vapi_synced_at,
        CASE WHEN o.synced_generation < o.sync_generation THEN
            CASE WHEN o.sync_lease_until >= now() THEN 'sync_in_progress'
                 ELSE coalesce(o.vapi_sync_error, 'sync_unfinished') END END,
        n.phone_number, n.status, n.vapi_phone_id, n.twilio_phone_sid, n.assistant_id,
        n.display_name, n.assistant_pending, n.created_at, n.released_at,
        n.vapi_released_at IS NULL, n.twilio_released_at IS NULL, n.release_attempts,
        n.next_attempt_at, n.last_release_error,
        n.twilio_subaccount_sid IS NULL, n.bought_at IS NULL, n.imported_at IS NULL,
        n.purchase_attempts, n.claim_token IS NULL, n.last_purchase_error
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
  if (!r[0]) return null;
  const vapi = { synced: r[6] === true, syncedAt: r[7] };
  if (r[8] != null) vapi.code = r[8];
  return { accountSid: r[1], phoneNumber: r[2], source: r[3], vapiCredentialId: r[4], updatedAt: r[5], vapi };
}

function number(r) {
  const status = r[10];
  const n = {
    phoneNumber: r[9], status, vapiPhoneId: r[11], twilioPhoneSid: r[12], assistantId: r[13],
    name: r[14], assistantPending: r[15], createdAt: r[16], releasedAt: r[17],
  };
  if (status === 'releasing' || status === 'release_pending' || status === 'needs_attention') {
    const pending = [];
    if (r[11] != null && r[18]) pending.push('vapi');
    if (r[19]) pending.push('twilio');
    n.release = progress(pending, r[20], status === 'release_pending' ? r[21] : null, r[22]);
  } else if (status === 'provisioning') {
    const pending = [];
    if (r[23]) pending.push('subaccount');
    if (r[24]) pending.push('twilio');
    if (r[25]) pending.push('vapi');
    n.purchase = progress(pending, r[26], r[27] ? r[21] : null, r[28]);
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
    const { rows } = await pool.query({ text: STATUS_SQL, values: [who.orgId, released], rowMode: 'array' });
    status = 200;
    body = {
      credential: rows.length > 0 ? credential(rows[0]) : null,
      numbers: rows.filter((r) => r[9] != null).map(number),
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
