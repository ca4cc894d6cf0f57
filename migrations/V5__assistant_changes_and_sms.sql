-- Assistant changes (update-number, shared/src/routing.rs) resumed by reconcile get
-- what releases and purchases have: per-row backoff, an attempt limit and a terminal
-- state, so a change Vapi keeps failing is not sent every run forever.

ALTER TABLE managed_phone_numbers
    -- Attempts at sending the pending change (the org's request is the first).
    ADD COLUMN route_attempts integer NOT NULL DEFAULT 0 CHECK (route_attempts >= 0),
    -- When reconcile may send it again (backoff after a failed attempt).
    ADD COLUMN next_route_attempt_at timestamptz,
    -- {code, status, providerCode, message, at} of the last failed attempt.
    ADD COLUMN last_route_error jsonb,
    -- Reconcile stopped sending it after RECONCILE_MAX_ATTEMPTS: the change stays
    -- pending (status shows it, an alarm counts it) until the org changes the
    -- assistant again, which starts over.
    ADD COLUMN route_gave_up_at timestamptz,
    ADD CONSTRAINT route_gave_up_only_while_pending
        CHECK (route_gave_up_at IS NULL OR assistant_pending);

-- What reconcile scans for assistant changes: pending, not given up, fewest
-- attempts first.
DROP INDEX managed_phone_numbers_assistant_pending;
CREATE INDEX managed_phone_numbers_assistant_pending
    ON managed_phone_numbers (route_attempts, updated_at)
    WHERE assistant_pending AND route_gave_up_at IS NULL;

-- Whether Vapi's import takes the number's messaging too (Vapi's smsEnabled, which
-- otherwise defaults to true and points the Twilio number's messaging URL at Vapi):
-- an explicit choice on purchase. Numbers bought before were imported with Vapi's
-- default.
ALTER TABLE managed_phone_numbers
    ADD COLUMN sms_enabled boolean NOT NULL DEFAULT true;

-- A lookup of the org's Vapi credential by name that could not finish within its
-- page bound (an org carried over by V2 searches every credential since 2000-01-01)
-- resumes below this `createdAt` at the next save, instead of failing at the same
-- bound every time. Cleared when a lookup concludes or a sync succeeds.
ALTER TABLE organizations
    ADD COLUMN vapi_lookup_before timestamptz;
