-- Rotating a managed org's Twilio subaccount token (POST
-- /api/telephony/credentials/twilio/rotate, shared/src/rotation/), and adopting a
-- token rotated elsewhere (Twilio's console, support): a resumable job per org, on
-- the provider-step protocol. The token every Vapi entity of the org holds is known
-- by a keyed fingerprint (HMAC-SHA256 under a deployment secret), never the token.

CREATE TABLE token_rotations (
    id                  uuid PRIMARY KEY,
    org_id              uuid NOT NULL REFERENCES organizations (id),
    -- The subaccount whose token is rotated: the org's managed slot at the request.
    account_sid         text NOT NULL CHECK (account_sid ~ '^AC[0-9a-f]{32}$'),
    -- rotate: a new secondary token reaches Vapi, then is promoted (both work until
    -- then). adopt: a token already rotated elsewhere reaches Vapi (no promotion).
    kind                text NOT NULL CHECK (kind IN ('rotate', 'adopt')),
    requested_at        timestamptz NOT NULL DEFAULT now(),
    requested_by        text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 256),
    -- rotate: the secondary token, sealed under {org_id, provider: twilio-secondary}
    -- (the only blobs the rotation may decrypt: the key policy says so), kept until
    -- the slot holds it. Vapi is given a secondary only once it is stored here, so a
    -- resumed job never needs a new one while Vapi holds the old.
    secondary           jsonb CHECK (secondary ?& ARRAY['v', 'kid', 'edk', 'iv', 'ct']),
    -- The keyed fingerprint of the token this job brings to Vapi (the secondary; for
    -- adopt, the primary read back).
    token_fp            text CHECK (token_fp ~ '^[0-9a-f]{64}$'),
    -- The Vapi credential holds token_fp's token, as of this slot generation (a save
    -- since then would have sent another token: the step is done again).
    credential_done_at  timestamptz,
    credential_generation bigint,
    -- From here until promoted_at, purchases of the org wait: an import carrying the
    -- primary read before the promotion would carry a dead token after it.
    promote_started_at  timestamptz,
    promoted_at         timestamptz,
    -- The slot holds the new token (re-sealed) and every Vapi number of the org has
    -- it: the job is over.
    done_at             timestamptz,
    -- Ended without finishing: the slot changed (BYOC saved, disconnected), the org
    -- is being offboarded.
    cancelled_at        timestamptz,
    cancel_reason       text CHECK (cancel_reason ~ '^[a-z_]{1,64}$'),
    claim_token         uuid,
    claimed_until       timestamptz,
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     timestamptz,
    -- {step: code} of the last attempt's unfinished steps.
    last_error          jsonb CHECK (jsonb_typeof(last_error) = 'object'),
    gave_up_at          timestamptz,
    -- Numbers updated at Vapi by this job, and how many were pending at its last
    -- attempt (the answer lists them; kept for status).
    numbers_updated     text[] NOT NULL DEFAULT '{}',
    CONSTRAINT token_rotations_claim_has_expiry
        CHECK ((claim_token IS NULL) = (claimed_until IS NULL)),
    CONSTRAINT token_rotations_adopt_never_promotes
        CHECK (kind = 'rotate' OR (secondary IS NULL AND promote_started_at IS NULL)),
    CONSTRAINT token_rotations_promoted_after_start
        CHECK (promoted_at IS NULL OR promote_started_at IS NOT NULL),
    CONSTRAINT token_rotations_rotate_done_when_promoted
        CHECK (done_at IS NULL OR kind = 'adopt' OR promoted_at IS NOT NULL),
    CONSTRAINT token_rotations_ended_once
        CHECK (done_at IS NULL OR cancelled_at IS NULL)
);

-- One open job per org.
CREATE UNIQUE INDEX token_rotations_one_open
    ON token_rotations (org_id) WHERE done_at IS NULL AND cancelled_at IS NULL;
-- What reconcile scans: open jobs, fewest attempts first.
CREATE INDEX token_rotations_open
    ON token_rotations (attempts, next_attempt_at)
    WHERE done_at IS NULL AND cancelled_at IS NULL;
-- Status shows an org's latest.
CREATE INDEX token_rotations_by_org ON token_rotations (org_id, requested_at DESC);

-- The fingerprint of the Twilio token this number's Vapi import holds (set on
-- import and on every token PATCH; NULL: not known, e.g. imported before V9).
ALTER TABLE managed_phone_numbers
    ADD COLUMN twilio_token_fp text CHECK (twilio_token_fp ~ '^[0-9a-f]{64}$');

-- The carrier audit's new kind: a Vapi import holding another token than its
-- subaccount's current one.
ALTER TABLE carrier_findings DROP CONSTRAINT carrier_findings_kind_check;
ALTER TABLE carrier_findings ADD CONSTRAINT carrier_findings_kind_check CHECK (kind IN (
    'billed_unknown', 'vapi_orphan', 'assistant_mismatch', 'vapi_missing',
    'carrier_missing', 'voice_url_mismatch', 'subaccount_orphan', 'token_mismatch'));

REVOKE ALL ON token_rotations FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON token_rotations TO telephony_route;
-- list-numbers shows the org's latest job: every column but the sealed secondary.
GRANT SELECT (id, org_id, account_sid, kind, requested_at, requested_by, token_fp,
              credential_done_at, credential_generation, promote_started_at, promoted_at,
              done_at, cancelled_at, cancel_reason, claim_token, claimed_until, attempts,
              next_attempt_at, last_error, gave_up_at, numbers_updated)
    ON token_rotations TO telephony_read;
