//! The demo data the local API starts with: one org with a managed credential and
//! three managed numbers, and a second org with one number (to show that another
//! org's number is a 404). Re-running against the same database keeps what is there
//! and adds a fresh active row for each demo number that was released meanwhile, so
//! a demo can be repeated (the released rows stay as history).

use shared::credential::TwilioCredential;
use shared::identity::Caller;
use shared::ids::{CredentialSource, OrgId};

use crate::gateway::{BoxError, Functions};
use crate::standins::Standins;

pub const DEMO_ORG: &str = "0d3e0000-0000-4000-8000-000000000001";
pub const OTHER_ORG: &str = "0d3e0000-0000-4000-8000-000000000002";
pub const DEMO_SUBACCOUNT: &str = "AC0000000000000000000000000000d3e0";
pub const DEMO_NUMBERS: [&str; 3] = ["+14155550100", "+14155550101", "+14155550102"];
pub const OTHER_NUMBER: &str = "+14155550199";

fn number_sid(e164: &str) -> String {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    format!("PN{digits:0>32}")
}

fn vapi_phone_id(e164: &str) -> String {
    format!("vapi-phone-{}", &e164[1..])
}

pub async fn seed(functions: &Functions, standins: &Standins) -> Result<(), BoxError> {
    let db = &functions.list.db;
    for (org, name) in [(DEMO_ORG, "Demo org"), (OTHER_ORG, "Another org")] {
        let id: uuid::Uuid = org.parse()?;
        db.query(
            "INSERT INTO organizations (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[
                (&id, tokio_postgres::types::Type::UUID),
                (&name, tokio_postgres::types::Type::TEXT),
            ],
        )
        .await?;
    }
    let numbers = DEMO_NUMBERS
        .iter()
        .map(|n| (DEMO_ORG, *n))
        .chain([(OTHER_ORG, OTHER_NUMBER)]);
    for (org, e164) in numbers {
        let org_id: uuid::Uuid = org.parse()?;
        let (sid, vapi) = (number_sid(e164), vapi_phone_id(e164));
        use tokio_postgres::types::Type;
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 5] = [
            (&org_id, Type::UUID),
            (&e164, Type::TEXT),
            (&sid, Type::TEXT),
            (&DEMO_SUBACCOUNT, Type::TEXT),
            (&vapi, Type::TEXT),
        ];
        db.query(
            "INSERT INTO managed_phone_numbers (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid, vapi_phone_id)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &params,
        )
        .await?;
        db.query(
            "INSERT INTO phone_number_mapping (org_id, inbound_phone_number, vapi_phone_id)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[
                (&org_id, Type::UUID),
                (&e164, Type::TEXT),
                (&vapi, Type::TEXT),
            ],
        )
        .await?;
    }
    // The stand-ins start empty: they hold whatever the database says is still held
    // at each provider (a restart against the same database keeps them in step).
    let held = db
        .query(
            "SELECT phone_number, twilio_subaccount_sid, twilio_phone_sid, vapi_phone_id,
                    twilio_released_at IS NULL, vapi_released_at IS NULL
               FROM managed_phone_numbers WHERE status <> 'released'",
            &[],
        )
        .await?;
    for row in held {
        if row.get::<_, bool>(4) {
            standins.add_twilio_number(row.get(1), row.get(2), row.get(0));
        }
        if let (Some(id), true) = (row.get::<_, Option<&str>>(3), row.get::<_, bool>(5)) {
            standins.add_vapi_phone_number(id);
        }
    }
    // The managed credential, through the same code the platform's provisioning uses.
    let org = DEMO_ORG.parse::<OrgId>()?;
    let has_slot = !db
        .query(
            "SELECT 1 FROM org_credentials WHERE org_id = $1",
            &[(&org.as_uuid(), tokio_postgres::types::Type::UUID)],
        )
        .await?
        .is_empty();
    if !has_slot {
        let cred: TwilioCredential = serde_json::from_value(serde_json::json!({
            "accountSid": DEMO_SUBACCOUNT,
            "authToken": "d3e0d3e0d3e0d3e0d3e0d3e0d3e0d3e0",
            "phoneNumber": DEMO_NUMBERS[0],
        }))?;
        let caller = Caller::system(org, "system:local-demo");
        functions
            .save
            .store()
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
