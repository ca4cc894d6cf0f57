-- What the carrier audit (shared/src/carrier_audit) asks of the database, as the
-- route login, and the indexes its per-batch reads use.

-- Whether `op` is one of this service's purchase operation ids for `org`: a row
-- (any state) carries it, or the audit log recorded its purchase (a purchase's
-- intent always writes `number.purchase` with its operationId; a refused intent's
-- row is deleted, its audit row stays). The audit releases a number Twilio bills
-- without a row only when its FriendlyName names such an operation: never one
-- bought by hand, or by another stack sharing the Twilio account. SECURITY DEFINER:
-- the route login may insert into the audit log but never read it; this answers one
-- yes/no question and nothing else.
CREATE FUNCTION purchase_operation_known(org uuid, op uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM managed_phone_numbers WHERE org_id = org AND operation_id = op)
        OR EXISTS (SELECT 1 FROM audit_log
                    WHERE org_id = org AND action = 'number.purchase'
                      AND detail->>'operationId' = op::text)
$$;
REVOKE ALL ON FUNCTION purchase_operation_known(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION purchase_operation_known(uuid, uuid) TO telephony_route;

-- The audit's batch read finds live rows by subaccount and by Vapi id.
CREATE INDEX managed_phone_numbers_live_by_subaccount
    ON managed_phone_numbers (twilio_subaccount_sid) WHERE status <> 'released';
CREATE INDEX managed_phone_numbers_live_by_vapi_id
    ON managed_phone_numbers (vapi_phone_id) WHERE status <> 'released';
