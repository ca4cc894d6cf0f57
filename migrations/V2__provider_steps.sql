-- The provider-step protocol (shared/src/steps.rs) for save's Vapi sync, and the
-- bookkeeping that keeps reconcile from starving and makes a number that cannot be
-- released visible instead of retried forever.

-- Save's Vapi sync: a lease on the org (a claim token with an expiry, taken in the
-- slot's commit transaction), and a generation bumped on every slot write. The
-- mirror is current when the generation last synced equals the slot's.
ALTER TABLE organizations
    ADD COLUMN sync_generation    bigint NOT NULL DEFAULT 0 CHECK (sync_generation >= 0),
    ADD COLUMN synced_generation  bigint NOT NULL DEFAULT 0 CHECK (synced_generation >= 0),
    ADD COLUMN sync_lease_token   uuid,
    ADD COLUMN sync_lease_until   timestamptz,
    -- Set before every POST /credential (cleared by a recorded sync): only then can
    -- Vapi hold a credential of this org that the database does not know, so only
    -- then is it looked up by name (among those created since).
    ADD COLUMN vapi_create_attempted_at timestamptz,
    ADD CONSTRAINT sync_lease_has_expiry
        CHECK ((sync_lease_token IS NULL) = (sync_lease_until IS NULL));

-- Orgs written before this migration: a slot whose mirror was recorded as current is
-- synced; one that was not is behind. Orgs without a slot have nothing to sync.
-- Earlier saves created credentials without recording every attempt, so any org
-- with a slot may have one at Vapi the database does not know: look for all of them.
UPDATE organizations o
   SET sync_generation = 1,
       synced_generation = CASE WHEN vapi_credential_id IS NOT NULL AND vapi_sync_error IS NULL
                                THEN 1 ELSE 0 END,
       vapi_create_attempted_at = '2000-01-01T00:00:00Z'
 WHERE EXISTS (SELECT 1 FROM org_credentials c WHERE c.org_id = o.id);

-- Releases: per-number backoff, and a terminal state after too many attempts.
--   release_pending --(attempts >= RECONCILE_MAX_ATTEMPTS)--> needs_attention
-- Reconcile leaves needs_attention alone; a DELETE (the org or an operator) retries it.
ALTER TABLE managed_phone_numbers
    ADD COLUMN next_attempt_at timestamptz;
ALTER TABLE managed_phone_numbers DROP CONSTRAINT managed_phone_numbers_status_check;
ALTER TABLE managed_phone_numbers ADD CONSTRAINT managed_phone_numbers_status_check
    CHECK (status IN ('active', 'releasing', 'release_pending', 'needs_attention', 'released'));

UPDATE managed_phone_numbers SET next_attempt_at = updated_at WHERE status = 'release_pending';

-- What reconcile scans: due retries, fewest attempts first (see shared/src/release/reconcile.rs).
DROP INDEX managed_phone_numbers_unfinished_releases;
CREATE INDEX managed_phone_numbers_due_releases
    ON managed_phone_numbers (release_attempts, next_attempt_at)
    WHERE status IN ('releasing', 'release_pending');
