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
    ADD CONSTRAINT sync_lease_has_expiry
        CHECK ((sync_lease_token IS NULL) = (sync_lease_until IS NULL));

-- Orgs written before this migration whose mirror was recorded as current.
UPDATE organizations SET sync_generation = 1, synced_generation = 1
 WHERE vapi_credential_id IS NOT NULL AND vapi_sync_error IS NULL;
UPDATE organizations SET sync_generation = 1
 WHERE vapi_credential_id IS NULL OR vapi_sync_error IS NOT NULL;

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
