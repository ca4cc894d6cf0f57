-- Buying managed numbers (shared/src/purchase/): the org's Twilio subaccount, the
-- purchase intent as a `provisioning` row, and the assistant a number routes to.

-- Each managed org has one Twilio subaccount (FriendlyName `org:<uuid>`), created on
-- its first purchase; known here so later purchases and releases need no lookup.
ALTER TABLE organizations
    ADD COLUMN twilio_subaccount_sid text
        CHECK (twilio_subaccount_sid ~ '^AC[0-9a-f]{32}$');

-- A purchase is a `provisioning` row first (the one-owner index keeps two orgs from
-- buying one number): its Twilio SIDs are unknown until the subaccount exists and the
-- number is bought, so they may be NULL while provisioning, and only then.
ALTER TABLE managed_phone_numbers
    ALTER COLUMN twilio_phone_sid DROP NOT NULL,
    ALTER COLUMN twilio_subaccount_sid DROP NOT NULL,
    -- The purchase's operation id (carried in the Twilio FriendlyName).
    ADD COLUMN operation_id uuid,
    -- Per-step completion of a purchase, so a resumed one redoes only what is left,
    -- and each creating call's attempt, stamped before it is sent: once a purchase
    -- or an import was attempted, its outcome is looked up, never assumed.
    ADD COLUMN buy_attempted_at timestamptz,
    ADD COLUMN bought_at timestamptz,
    ADD COLUMN import_attempted_at timestamptz,
    ADD COLUMN imported_at timestamptz,
    ADD COLUMN purchase_attempts integer NOT NULL DEFAULT 0 CHECK (purchase_attempts >= 0),
    -- {step, code, status, providerCode, message, at} of the last failed purchase step.
    ADD COLUMN last_purchase_error jsonb,
    -- The Vapi assistant the number routes to, and the Vapi name it carries.
    ADD COLUMN assistant_id text CHECK (assistant_id ~ '^[0-9a-f-]{36}$'),
    ADD COLUMN display_name text CHECK (length(display_name) BETWEEN 1 AND 40),
    -- An assistant change committed but not yet confirmed by Vapi (update-number).
    ADD COLUMN assistant_pending boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT provider_sids_unless_provisioning
        CHECK (status = 'provisioning'
               OR (twilio_phone_sid IS NOT NULL AND twilio_subaccount_sid IS NOT NULL)),
    ADD CONSTRAINT bought_has_number_sid
        CHECK (bought_at IS NULL OR twilio_phone_sid IS NOT NULL),
    ADD CONSTRAINT provisioning_has_operation
        CHECK (status <> 'provisioning' OR operation_id IS NOT NULL);

ALTER TABLE managed_phone_numbers DROP CONSTRAINT managed_phone_numbers_status_check;
ALTER TABLE managed_phone_numbers ADD CONSTRAINT managed_phone_numbers_status_check
    CHECK (status IN ('provisioning', 'active', 'releasing', 'release_pending',
                      'needs_attention', 'released'));

-- What reconcile scans for purchases: provisioning rows (a live claim is skipped).
CREATE INDEX managed_phone_numbers_provisioning
    ON managed_phone_numbers (purchase_attempts, created_at)
    WHERE status = 'provisioning';
-- ...and assistant changes Vapi has not confirmed.
CREATE INDEX managed_phone_numbers_assistant_pending
    ON managed_phone_numbers (updated_at)
    WHERE assistant_pending;

-- Numbers bought before this migration route as they did.
UPDATE managed_phone_numbers n SET assistant_id = lower(m.vapi_assistant_id)
  FROM phone_number_mapping m
 WHERE m.inbound_phone_number = n.phone_number AND m.org_id = n.org_id
   AND n.status = 'active' AND lower(m.vapi_assistant_id) ~ '^[0-9a-f-]{36}$';

-- Orgs that already have a subaccount (numbers bought by the earlier system, or a
-- managed slot) keep it: a purchase must not create a second one.
UPDATE organizations o
   SET twilio_subaccount_sid = coalesce(
         (SELECT n.twilio_subaccount_sid FROM managed_phone_numbers n
           WHERE n.org_id = o.id AND n.status <> 'released'
           ORDER BY n.created_at LIMIT 1),
         (SELECT c.metadata->>'accountSid' FROM org_credentials c
           WHERE c.org_id = o.id AND c.provider = 'twilio' AND c.source = 'managed'
             AND c.metadata->>'accountSid' ~ '^AC[0-9a-f]{32}$'))
 WHERE o.twilio_subaccount_sid IS NULL;
