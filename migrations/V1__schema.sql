-- The whole schema of the telephony credential & managed-number service.
-- Table and column names follow the original system (see shared/seed); the
-- constraints are what keep a number from being owned twice or forgotten while billed.

CREATE TABLE organizations (
    id                  uuid PRIMARY KEY,
    name                text,
    -- The Vapi credential mirroring this org's Twilio slot (NULL until first sync).
    vapi_credential_id  text,
    -- Sync state of that mirror, shown by the status route.
    vapi_synced_at      timestamptz,
    vapi_sync_error     text CHECK (vapi_sync_error ~ '^[a-z_]{1,64}$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- One slot per org and provider, BYOC and managed alike.
CREATE TABLE org_credentials (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id            uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider          text NOT NULL CHECK (provider IN ('twilio')),
    source            text NOT NULL CHECK (source IN ('byoc', 'managed')),
    is_active         boolean NOT NULL DEFAULT true,
    -- Versioned envelope {v, kid, edk, iv, ct}; see shared/src/envelope.rs.
    encrypted_config  jsonb NOT NULL CHECK (
        encrypted_config ?& ARRAY['v', 'kid', 'edk', 'iv', 'ct']
    ),
    -- Non-secret summary ({accountSid, phoneNumber}); a token never belongs here.
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (
        jsonb_typeof(metadata) = 'object'
        AND NOT metadata ?| ARRAY['authToken', 'auth_token', 'token']
    ),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT org_credentials_one_slot UNIQUE (org_id, provider)
);

-- Numbers the platform bought for an org under a Twilio subaccount.
--
-- Release lifecycle: active -> releasing (claimed, claimed_until set) -> released,
-- or -> release_pending (a provider step failed; the failed step, error and attempt
-- count are kept) -> releasing -> ... A number is never 'released' while either
-- provider step is unfinished, so it cannot bill silently.
CREATE TABLE managed_phone_numbers (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                 uuid NOT NULL REFERENCES organizations (id),
    phone_number           text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{1,14}$'),
    twilio_phone_sid       text NOT NULL CHECK (twilio_phone_sid ~ '^PN[0-9a-f]{32}$'),
    twilio_subaccount_sid  text NOT NULL CHECK (twilio_subaccount_sid ~ '^AC[0-9a-f]{32}$'),
    vapi_phone_id          text,
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'releasing', 'release_pending', 'released')),
    -- Set while a release holds the number; an expired claim may be taken over.
    -- The token names the holder, so only it writes the outcome.
    claimed_until          timestamptz,
    claim_token            uuid,
    -- Per-step completion, so a resumed release redoes only what is unfinished.
    vapi_released_at       timestamptz,
    twilio_released_at     timestamptz,
    release_attempts       integer NOT NULL DEFAULT 0 CHECK (release_attempts >= 0),
    -- {step, status, code, message} of the last failed provider step.
    last_release_error     jsonb,
    release_requested_at   timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    released_at            timestamptz,
    CONSTRAINT released_iff_released_at
        CHECK ((status = 'released') = (released_at IS NOT NULL)),
    CONSTRAINT released_only_when_both_steps_done
        CHECK (status <> 'released'
               OR (twilio_released_at IS NOT NULL
                   AND (vapi_phone_id IS NULL OR vapi_released_at IS NOT NULL))),
    CONSTRAINT releasing_has_claim
        CHECK (status <> 'releasing' OR (claimed_until IS NOT NULL AND claim_token IS NOT NULL))
);

-- A number belongs to at most one org in every state but 'released' (a number whose
-- release is pending is still ours and still billed).
CREATE UNIQUE INDEX managed_phone_numbers_one_owner
    ON managed_phone_numbers (phone_number) WHERE status <> 'released';
CREATE INDEX managed_phone_numbers_by_org
    ON managed_phone_numbers (org_id, created_at DESC);
-- What reconcile scans: unfinished releases, oldest first.
CREATE INDEX managed_phone_numbers_unfinished_releases
    ON managed_phone_numbers (release_requested_at)
    WHERE status IN ('releasing', 'release_pending');

-- Inbound call routing: one number routes to one org.
CREATE TABLE phone_number_mapping (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    inbound_phone_number  text NOT NULL CHECK (inbound_phone_number ~ '^\+[1-9][0-9]{1,14}$'),
    vapi_phone_id         text,
    vapi_assistant_id     text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT phone_number_mapping_one_route UNIQUE (inbound_phone_number)
);
CREATE INDEX phone_number_mapping_by_org ON phone_number_mapping (org_id);

-- Append-only record of every state change: who (JWT sub), which org, what, on
-- which target (a number or an account SID, never a token), in which request, and
-- how it ended. Written in the same transaction as the change it records.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    org_id      uuid NOT NULL,
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 256),
    action      text NOT NULL CHECK (action ~ '^[a-z_.]{1,64}$'),
    target      text NOT NULL CHECK (length(target) <= 64),
    request_id  text NOT NULL,
    outcome     text NOT NULL CHECK (outcome ~ '^[a-z_]{1,64}$'),
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, at DESC);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
