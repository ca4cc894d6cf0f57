-- The carrier audit (functions/audit, shared/src/carrier_audit): what Twilio bills and
-- Vapi routes, held against this database. Its findings are kept (a finding that
-- disappears is closed, never deleted), and one row holds the audit's lease and the
-- cursor of the pass in progress.

CREATE TABLE carrier_findings (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN (
                        'billed_unknown', 'vapi_orphan', 'assistant_mismatch',
                        'vapi_missing', 'carrier_missing', 'voice_url_mismatch',
                        'subaccount_orphan')),
    -- NULL for a subaccount named after no org. No foreign key: an orphan's org
    -- may not exist.
    org_id          uuid,
    -- The Twilio subaccount the finding was made under: a pass closes the open
    -- findings of each subaccount it covered that it did not see again.
    subaccount_sid  text NOT NULL CHECK (subaccount_sid ~ '^AC[0-9a-f]{32}$'),
    -- What the finding is about: an E.164, a Vapi phone-number id, or an account SID.
    subject         text NOT NULL CHECK (length(subject) BETWEEN 1 AND 64),
    phone_number    text CHECK (phone_number ~ '^\+[1-9][0-9]{1,14}$'),
    -- Ids and values the audit saw (SIDs, Vapi ids, assistants, URLs): never a token.
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (
        jsonb_typeof(detail) = 'object'
        AND NOT detail ?| ARRAY['authToken', 'auth_token', 'token', 'twilioAuthToken']
    ),
    -- What the number costs Twilio's customer per month (Pricing API), when it bills.
    monthly_price   numeric(12, 4) CHECK (monthly_price >= 0),
    price_unit      text CHECK (price_unit ~ '^[A-Z]{3}$'),
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    -- Passes that saw it (an alarm fires for some kinds open two passes running).
    seen_passes     integer NOT NULL DEFAULT 1 CHECK (seen_passes >= 1),
    last_pass       bigint NOT NULL,
    -- When the audit repaired what it could (a release recorded, an orphan deleted
    -- at Vapi, an assistant change recorded); NULL for kinds it only flags.
    repaired_at     timestamptz,
    -- Stable code of the last failed repair.
    repair_error    text CHECK (repair_error ~ '^[a-z_]{1,64}$'),
    closed_at       timestamptz
);

CREATE UNIQUE INDEX carrier_findings_one_open
    ON carrier_findings (kind, subject) WHERE closed_at IS NULL;
CREATE INDEX carrier_findings_open_by_subaccount
    ON carrier_findings (subaccount_sid) WHERE closed_at IS NULL;
CREATE INDEX carrier_findings_open_by_org
    ON carrier_findings (org_id, phone_number) WHERE closed_at IS NULL;

-- One row: the audit's lease (two audits at once are one) and its pass.
CREATE TABLE carrier_audit_state (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    lease_token       uuid,
    lease_until       timestamptz,
    -- The pass in progress: its number, when it began, and the last subaccount SID
    -- it finished (subaccounts are covered in SID order).
    pass              bigint NOT NULL DEFAULT 0,
    pass_started_at   timestamptz,
    pass_cursor       text,
    -- The last pass that covered every subaccount.
    last_finished_pass bigint,
    last_finished_at  timestamptz,
    last_run_at       timestamptz,
    CONSTRAINT audit_lease_has_expiry CHECK ((lease_token IS NULL) = (lease_until IS NULL))
);
INSERT INTO carrier_audit_state DEFAULT VALUES;

REVOKE ALL ON carrier_findings, carrier_audit_state FROM PUBLIC;
-- The audit runs as the route login (it records releases and assistant changes
-- through the same tables the routes write); the status route reads findings.
GRANT SELECT, INSERT, UPDATE ON carrier_findings, carrier_audit_state TO telephony_route;
GRANT SELECT ON carrier_findings TO telephony_read;
