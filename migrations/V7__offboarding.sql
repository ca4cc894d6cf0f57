-- Offboarding an org (POST /api/managed-telephony/offboard, shared/src/offboard.rs):
-- a resumable job recorded on the org, intent first. From the moment it is recorded
-- purchases and saves are refused; then every number is released (the release
-- protocol), the org's Vapi credential deleted, its Twilio subaccount closed (which
-- releases whatever remains; never suspended: a suspended subaccount's numbers keep
-- billing) and its slot cleared, each step stamped when done.

ALTER TABLE organizations
    ADD COLUMN offboard_requested_at   timestamptz,
    -- Who asked (the JWT sub), for the record.
    ADD COLUMN offboard_requested_by   text CHECK (length(offboard_requested_by) BETWEEN 1 AND 256),
    ADD COLUMN offboard_numbers_done_at    timestamptz,
    ADD COLUMN offboard_credential_done_at timestamptz,
    ADD COLUMN offboard_subaccount_done_at timestamptz,
    ADD COLUMN offboard_slot_done_at       timestamptz,
    ADD COLUMN offboarded_at           timestamptz,
    -- The job's claim (a request or reconcile working on it), as a number's claim.
    ADD COLUMN offboard_claim_token    uuid,
    ADD COLUMN offboard_claimed_until  timestamptz,
    ADD COLUMN offboard_attempts       integer NOT NULL DEFAULT 0 CHECK (offboard_attempts >= 0),
    ADD COLUMN offboard_next_attempt_at timestamptz,
    -- {step: code} of the last attempt's failed steps.
    ADD COLUMN offboard_last_error     jsonb CHECK (jsonb_typeof(offboard_last_error) = 'object'),
    -- Reconcile stopped after RECONCILE_MAX_ATTEMPTS (shown, alarmed); a repeat of the
    -- request still resumes it.
    ADD COLUMN offboard_gave_up_at     timestamptz,
    ADD CONSTRAINT offboard_steps_after_intent CHECK (
        offboard_requested_at IS NOT NULL
        OR (offboard_numbers_done_at IS NULL AND offboard_credential_done_at IS NULL
            AND offboard_subaccount_done_at IS NULL AND offboard_slot_done_at IS NULL
            AND offboarded_at IS NULL)),
    ADD CONSTRAINT offboarded_when_every_step_done CHECK (
        offboarded_at IS NULL
        OR (offboard_numbers_done_at IS NOT NULL AND offboard_credential_done_at IS NOT NULL
            AND offboard_subaccount_done_at IS NOT NULL AND offboard_slot_done_at IS NOT NULL)),
    ADD CONSTRAINT offboard_claim_has_expiry
        CHECK ((offboard_claim_token IS NULL) = (offboard_claimed_until IS NULL));

-- What reconcile scans: unfinished offboardings, fewest attempts first.
CREATE INDEX organizations_unfinished_offboarding
    ON organizations (offboard_attempts, offboard_next_attempt_at)
    WHERE offboard_requested_at IS NOT NULL AND offboarded_at IS NULL;

-- The route login clears the slot (the only DELETE on org_credentials).
GRANT DELETE ON org_credentials TO telephony_route;
