//! The demo data the local API starts with: one org with a managed credential and
//! three managed numbers, and a second org with one number (to show that another
//! org's number is a 404). Re-running against the same database keeps what is there
//! and adds a fresh active row for each demo number that was released meanwhile, so
//! a demo can be repeated (the released rows stay as history).
//!
//! The numbers look as if the platform had bought them: each org has its Twilio
//! subaccount (FriendlyName `org:<uuid>`, known on the org, so a purchase uses it),
//! which the Twilio stand-in knows with its token and under which it holds the
//! numbers, and the Vapi stand-in holds each number imported with that subaccount's
//! credentials, routed to [`DEMO_ASSISTANT`]. The demo org's managed slot holds the
//! same subaccount and token. So release, update-number and buy-number work on the
//! demo org end to end.

use shared::credential::TwilioCredential;
use shared::db::Db;
use shared::identity::Caller;
use shared::ids::{CredentialSource, OrgId};
use shared::purchase::subaccount_name;
use shared::vapi::credential_name;
use tokio_postgres::types::{ToSql, Type};

use crate::gateway::{BoxError, Functions};
use crate::standins::{SeededVapiNumber, Standins, subaccount_token};

pub const DEMO_ORG: &str = "0d3e0000-0000-4000-8000-000000000001";
pub const OTHER_ORG: &str = "0d3e0000-0000-4000-8000-000000000002";
/// The demo org's Twilio subaccount and its token (the managed slot holds both).
pub const DEMO_SUBACCOUNT: &str = "AC0000000000000000000000000000d3e0";
pub const DEMO_SUBACCOUNT_TOKEN: &str = "d3e0d3e0d3e0d3e0d3e0d3e0d3e0d3e0";
/// The other org's subaccount (its token: [`subaccount_token`]).
pub const OTHER_SUBACCOUNT: &str = "AC0000000000000000000000000000d3e1";
pub const DEMO_NUMBERS: [&str; 3] = ["+14155550100", "+14155550101", "+14155550102"];
pub const OTHER_NUMBER: &str = "+14155550199";
/// The Vapi assistant the demo numbers route to.
pub const DEMO_ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000aa";

fn number_sid(e164: &str) -> String {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    format!("PN{digits:0>32}")
}

fn vapi_phone_id(e164: &str) -> String {
    format!("vapi-phone-{}", &e164[1..])
}

/// Seed as the schema's owner (`db`): the functions' own logins may not write
/// everything a seed writes.
pub async fn seed(functions: &Functions, db: &Db, standins: &Standins) -> Result<(), BoxError> {
    let orgs = [
        (DEMO_ORG, "Demo org", DEMO_SUBACCOUNT),
        (OTHER_ORG, "Another org", OTHER_SUBACCOUNT),
    ];
    for (org, name, sub) in orgs {
        let id: uuid::Uuid = org.parse()?;
        db.query(
            "INSERT INTO organizations (id, name, twilio_subaccount_sid) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE
                SET twilio_subaccount_sid = coalesce(organizations.twilio_subaccount_sid, $3)",
            &[(&id, Type::UUID), (&name, Type::TEXT), (&sub, Type::TEXT)],
        )
        .await?;
    }
    standins.add_subaccount(
        DEMO_SUBACCOUNT,
        &subaccount_name(DEMO_ORG.parse()?),
        DEMO_SUBACCOUNT_TOKEN,
    );
    let numbers = DEMO_NUMBERS
        .iter()
        .map(|n| (DEMO_ORG, DEMO_SUBACCOUNT, *n))
        .chain([(OTHER_ORG, OTHER_SUBACCOUNT, OTHER_NUMBER)]);
    for (org, sub, e164) in numbers {
        let org_id: uuid::Uuid = org.parse()?;
        let (sid, vapi) = (number_sid(e164), vapi_phone_id(e164));
        let params: [(&(dyn ToSql + Sync), Type); 6] = [
            (&org_id, Type::UUID),
            (&e164, Type::TEXT),
            (&sid, Type::TEXT),
            (&sub, Type::TEXT),
            (&vapi, Type::TEXT),
            (&DEMO_ASSISTANT, Type::TEXT),
        ];
        db.query(
            "INSERT INTO managed_phone_numbers
                (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid, vapi_phone_id, assistant_id)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &params,
        )
        .await?;
        db.query(
            "INSERT INTO phone_number_mapping (org_id, inbound_phone_number, vapi_phone_id, vapi_assistant_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                (&org_id, Type::UUID),
                (&e164, Type::TEXT),
                (&vapi, Type::TEXT),
                (&DEMO_ASSISTANT, Type::TEXT),
            ],
        )
        .await?;
    }
    sync_standins(db, standins).await?;
    // The managed credential, through the same code the platform's provisioning uses.
    let org = DEMO_ORG.parse::<OrgId>()?;
    let has_slot = !db
        .query(
            "SELECT 1 FROM org_credentials WHERE org_id = $1",
            &[(&org.as_uuid(), Type::UUID)],
        )
        .await?
        .is_empty();
    if !has_slot {
        let cred: TwilioCredential = serde_json::from_value(serde_json::json!({
            "accountSid": DEMO_SUBACCOUNT,
            "authToken": DEMO_SUBACCOUNT_TOKEN,
            "phoneNumber": DEMO_NUMBERS[0],
        }))?;
        let caller = Caller::system(org, "system:local-demo");
        // As a purchase fills it: with the token's fingerprint.
        let store = shared::credential::CredentialStore {
            fingerprints: Some(&functions.buy.fingerprints),
            ..functions.save.store()
        };
        store
            .save(
                &caller,
                "local-demo-seed",
                &cred,
                CredentialSource::Managed,
                functions.save.steps.deadline_for(None),
            )
            .await?;
    }
    Ok(())
}

/// The stand-ins start empty: they learn whatever the database says is still held
/// at each provider (subaccounts, numbers, Vapi numbers and credentials), so a restart against the same database keeps them in step.
/// Subaccounts they do not know yet (created by purchases before a restart) get the
/// token the stand-in derives for them, as it did when it created them.
async fn sync_standins(db: &Db, standins: &Standins) -> Result<(), BoxError> {
    let subaccounts = db
        .query(
            "SELECT id, twilio_subaccount_sid FROM organizations WHERE twilio_subaccount_sid IS NOT NULL
             UNION
             SELECT org_id, twilio_subaccount_sid FROM managed_phone_numbers
              WHERE twilio_subaccount_sid IS NOT NULL AND status <> 'released'",
            &[],
        )
        .await?;
    for row in subaccounts {
        let (org, sid): (uuid::Uuid, &str) = (row.get(0), row.get(1));
        if !standins.knows_subaccount(sid) {
            let name = subaccount_name(OrgId::new(org));
            standins.add_subaccount(sid, &name, &subaccount_token(sid));
        }
    }
    let credentials = db
        .query(
            "SELECT o.id, o.vapi_credential_id, c.metadata->>'accountSid'
               FROM organizations o
               JOIN org_credentials c ON c.org_id = o.id AND c.provider = 'twilio'
              WHERE o.vapi_credential_id IS NOT NULL",
            &[],
        )
        .await?;
    for row in credentials {
        let org = OrgId::new(row.get(0));
        let account_sid: Option<&str> = row.get(2);
        standins.add_vapi_credential(
            row.get(1),
            &credential_name(org),
            account_sid.unwrap_or_default(),
        );
    }
    let held = db
        .query(
            "SELECT phone_number, twilio_subaccount_sid, twilio_phone_sid, vapi_phone_id,
                    twilio_phone_sid IS NOT NULL AND twilio_subaccount_sid IS NOT NULL
                        AND twilio_released_at IS NULL,
                    vapi_phone_id IS NOT NULL AND vapi_released_at IS NULL
                        AND (status <> 'provisioning' OR imported_at IS NOT NULL),
                    assistant_id, display_name
               FROM managed_phone_numbers WHERE status <> 'released'",
            &[],
        )
        .await?;
    for row in held {
        let number: &str = row.get(0);
        let sub: Option<&str> = row.get(1);
        if row.get::<_, bool>(4) {
            let pn: &str = row.get(2);
            standins.add_twilio_number(sub.unwrap_or_default(), pn, number);
        }
        if row.get::<_, bool>(5) {
            standins.add_vapi_phone_number(SeededVapiNumber {
                id: row.get(3),
                number,
                twilio_account_sid: sub.unwrap_or_default(),
                assistant_id: row.get(6),
                name: row.get(7),
            });
        }
    }
    Ok(())
}
