//! Drift made by hand, as someone would in Twilio's console or Vapi's dashboard:
//! what the control endpoints `/__control/twilio/…` and `/__control/vapi/…` do
//! (`control.rs`), callable in-process too. Each change is one change of what the
//! providers hold ([`Standins::version`], the journal).

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::twilio::{AccountStatus, NewIncoming, StatusRefused};
use super::vapi::{SeededVapiNumber, knows_assistant};
use super::{Inner, LOCAL_TWILIO_MAIN_SID, Standins, is_account_sid, is_e164, subaccount_token};

/// Why a change by hand was refused: the control endpoints answer 400, 404 or 409
/// with `{"message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// 400: the request makes no sense.
    Invalid(String),
    /// 404: no such account, number or id.
    NotFound(String),
    /// 409: it clashes with what is held (a number held already, a closed account).
    Conflict(String),
}

impl ControlError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Invalid(m) | Self::NotFound(m) | Self::Conflict(m) => m,
        }
    }
}

/// A Twilio number bought by hand in the console.
#[derive(Debug, Clone, Copy)]
pub struct HandNumber<'a> {
    pub account_sid: &'a str,
    pub phone_number: &'a str,
    /// Twilio's display form of the number (`(415) 555-0150`) when not given, as
    /// the console leaves it.
    pub friendly_name: Option<&'a str>,
    /// Bought this long ago (zero: now).
    pub age: Duration,
}

/// `age` before now, at Vapi's millisecond precision.
fn ago(age: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    let then = TimeDelta::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(now);
    DateTime::from_timestamp_millis(then.timestamp_millis()).unwrap_or(then)
}

impl Inner {
    /// A Vapi phone number as the control state shows it (with `twilioToken`).
    fn vapi_number_state(&self, id: &str) -> Option<Value> {
        let status = |sid: &str, token: Option<&str>| self.token_status(sid, token);
        self.vapi.phone_number_state(id, &status)
    }

    /// A creation time for something made by hand `age` ago: a fresh stamp (later
    /// than every other) when `age` is zero.
    fn made_ago(&mut self, age: Duration) -> DateTime<Utc> {
        if age.is_zero() {
            self.stamp()
        } else {
            ago(age)
        }
    }
}

impl Standins {
    /// A number bought by hand on a subaccount (Twilio's console): no purchase
    /// operation in its name, `voice_url` `""`. Answers the number (`sid`,
    /// `accountSid`, `phoneNumber`, `friendlyName`, `voiceUrl`, `smsUrl`).
    pub fn buy_by_hand(&self, n: HandNumber<'_>) -> Result<Value, ControlError> {
        if !is_e164(n.phone_number) {
            return Err(ControlError::Invalid(format!(
                "phoneNumber {} is not E.164",
                n.phone_number
            )));
        }
        if n.friendly_name.is_some_and(|f| f.chars().count() > 64) {
            return Err(ControlError::Invalid(
                "friendlyName must be 64 characters or fewer".into(),
            ));
        }
        let mut inner = self.lock();
        match inner.twilio.status(n.account_sid) {
            None => {
                return Err(ControlError::NotFound(format!(
                    "Twilio has no subaccount {}",
                    n.account_sid
                )));
            }
            Some(AccountStatus::Closed) => {
                return Err(ControlError::Conflict(format!(
                    "subaccount {} is closed",
                    n.account_sid
                )));
            }
            Some(_) => {}
        }
        if let Some((holder, _)) = inner.twilio.holder(n.phone_number) {
            return Err(ControlError::Conflict(format!(
                "{} is held already (by {holder})",
                n.phone_number
            )));
        }
        let offer = inner.twilio.available.get(n.phone_number).cloned();
        let pn = format!("PN{}", uuid::Uuid::new_v4().simple());
        let created = inner.made_ago(n.age);
        inner.twilio.insert_incoming(NewIncoming {
            account_sid: n.account_sid,
            sid: &pn,
            e164: n.phone_number,
            friendly_name: n.friendly_name.map(str::to_owned),
            offer,
            created,
            voice_url: Cow::Borrowed(""),
            sms_url: Cow::Borrowed(""),
        });
        inner.changed();
        inner
            .twilio
            .number_state_json(n.account_sid, &pn)
            .ok_or_else(|| ControlError::NotFound(pn.clone()))
    }

    /// A subaccount created by hand (Twilio's console), active, with the token
    /// [`subaccount_token`] derives from its SID. Answers `sid`, `friendlyName`,
    /// `status`.
    pub fn create_subaccount_by_hand(
        &self,
        friendly_name: &str,
        age: Duration,
    ) -> Result<Value, ControlError> {
        if friendly_name.chars().count() > 64 {
            return Err(ControlError::Invalid(
                "friendlyName must be 64 characters or fewer".into(),
            ));
        }
        let sid = format!("AC{}", uuid::Uuid::new_v4().simple());
        let mut inner = self.lock();
        let created = inner.made_ago(age);
        inner
            .twilio
            .add_subaccount_at(&sid, friendly_name, &subaccount_token(&sid), created);
        inner.changed();
        inner
            .twilio
            .account_state_json(&sid)
            .ok_or_else(|| ControlError::NotFound(sid.clone()))
    }

    /// A subaccount's status set by hand (Twilio's console), with the effects of
    /// `POST /Accounts/{sid}.json`: `closed` releases its numbers and is for good
    /// (a later change is a 409; "closing" it again changes nothing). Answers
    /// `sid`, `friendlyName`, `status` and `releasedNumbers`.
    pub fn set_subaccount_status(&self, sid: &str, status: &str) -> Result<Value, ControlError> {
        let Some(status) = AccountStatus::parse(status) else {
            return Err(ControlError::Invalid(format!(
                "status must be active, suspended or closed (not {status})"
            )));
        };
        let mut inner = self.lock();
        let released = match inner.twilio.set_status(sid, status, None) {
            Ok(n) => n,
            Err(StatusRefused::Unknown) => {
                return Err(ControlError::NotFound(format!(
                    "Twilio has no subaccount {sid}"
                )));
            }
            Err(StatusRefused::Closed) => {
                return Err(ControlError::Conflict(format!(
                    "subaccount {sid} is closed: a closed account cannot be changed"
                )));
            }
        };
        inner.changed();
        let mut answer = inner
            .twilio
            .account_state_json(sid)
            .ok_or_else(|| ControlError::NotFound(sid.to_owned()))?;
        answer["releasedNumbers"] = json!(released);
        Ok(answer)
    }

    /// A subaccount's auth token rotated by hand (Twilio's console): its primary is
    /// replaced at once by a new random token and retired, and so is any secondary
    /// (both fail from now on). A suspended account's too; not a closed one's
    /// (409), nor the main account's (404: the stand-ins never rotate it). Answers
    /// `{"accountSid", "rotated": true}`, never a token (the main account reads
    /// the new one as the account's `auth_token`).
    pub fn rotate_token_by_hand(&self, sid: &str) -> Result<Value, ControlError> {
        let mut inner = self.lock();
        match inner.twilio.status(sid) {
            None if sid == LOCAL_TWILIO_MAIN_SID => {
                return Err(ControlError::NotFound(format!(
                    "{sid} is the main account: the stand-ins never rotate the platform's main token"
                )));
            }
            None => {
                return Err(ControlError::NotFound(format!(
                    "Twilio has no subaccount {sid}"
                )));
            }
            Some(AccountStatus::Closed) => {
                return Err(ControlError::Conflict(format!(
                    "subaccount {sid} is closed: a closed account cannot be changed"
                )));
            }
            Some(_) => {}
        }
        if !inner.twilio.rotate_primary(sid, Utc::now()) {
            return Err(ControlError::NotFound(format!(
                "Twilio has no subaccount {sid}"
            )));
        }
        inner.changed();
        Ok(json!({ "accountSid": sid, "rotated": true }))
    }

    /// A number's voice URL changed by hand (Twilio's console). Answers the number.
    pub fn set_voice_url(
        &self,
        phone_number: &str,
        voice_url: &str,
    ) -> Result<Value, ControlError> {
        let mut inner = self.lock();
        let Some((account, pn)) = inner.twilio.set_voice_url(phone_number, voice_url) else {
            return Err(ControlError::NotFound(format!(
                "Twilio holds no {phone_number}"
            )));
        };
        inner.changed();
        inner
            .twilio
            .number_state_json(&account, &pn)
            .ok_or_else(|| ControlError::NotFound(pn.clone()))
    }

    /// A Twilio number imported into Vapi by hand (Vapi's dashboard), with the
    /// account's token if Twilio knows the account. Unlike `POST /phone-number`,
    /// Twilio need not hold the number (drift may be anything); if the account
    /// holds it, its voice and messaging URLs now point at Vapi, as an import sets
    /// them. Answers the number as the control state shows it (with its `id`).
    pub fn import_by_hand(
        &self,
        number: &str,
        twilio_account_sid: &str,
        assistant_id: Option<&str>,
        name: Option<&str>,
        age: Duration,
    ) -> Result<Value, ControlError> {
        if !is_e164(number) {
            return Err(ControlError::Invalid(format!(
                "number {number} is not E.164"
            )));
        }
        if !is_account_sid(twilio_account_sid) {
            return Err(ControlError::Invalid(format!(
                "twilioAccountSid {twilio_account_sid} is not AC + 32 lowercase hex"
            )));
        }
        if let Some(a) = assistant_id
            && !knows_assistant(a)
        {
            return Err(ControlError::Invalid(format!(
                "assistantId {a} is not an assistant the stand-in knows (a lowercase UUID not starting 00000000-)"
            )));
        }
        if name.is_some_and(|n| n.chars().count() > 40) {
            return Err(ControlError::Invalid(
                "name must be 40 characters or fewer".into(),
            ));
        }
        let mut inner = self.lock();
        let id = inner.vapi_id();
        let created = inner.made_ago(age);
        let token = inner
            .twilio
            .account_token(twilio_account_sid)
            .map(str::to_owned);
        inner.twilio.point_to_vapi(twilio_account_sid, number, true);
        inner.vapi.add_phone_number(
            SeededVapiNumber {
                id: &id,
                number,
                twilio_account_sid,
                assistant_id,
                name,
            },
            token,
            created,
        );
        inner.changed();
        inner
            .vapi_number_state(&id)
            .ok_or_else(|| ControlError::NotFound(id.clone()))
    }

    /// A Vapi phone number deleted by hand (Vapi's dashboard). The Twilio number's
    /// URLs stay (as `DELETE /phone-number/{id}` leaves them).
    pub fn delete_vapi_number(&self, id: &str) -> Result<(), ControlError> {
        let mut inner = self.lock();
        if !inner.vapi.remove_phone_number(id) {
            return Err(ControlError::NotFound(format!(
                "Vapi has no phone number {id}"
            )));
        }
        inner.changed();
        Ok(())
    }

    /// A Vapi phone number's assistant changed by hand (Vapi's dashboard); `None`
    /// detaches it. Answers the number as the control state shows it.
    pub fn set_vapi_assistant(
        &self,
        id: &str,
        assistant_id: Option<&str>,
    ) -> Result<Value, ControlError> {
        if let Some(a) = assistant_id
            && !knows_assistant(a)
        {
            return Err(ControlError::Invalid(format!(
                "assistantId {a} is not an assistant the stand-in knows (a lowercase UUID not starting 00000000-)"
            )));
        }
        let mut inner = self.lock();
        if !inner.vapi.has_phone_number(id) {
            return Err(ControlError::NotFound(format!(
                "Vapi has no phone number {id}"
            )));
        }
        let now = inner.stamp();
        if !inner
            .vapi
            .set_assistant(id, assistant_id.map(str::to_owned), now)
        {
            return Err(ControlError::NotFound(format!(
                "Vapi has no phone number {id}"
            )));
        }
        inner.changed();
        inner
            .vapi_number_state(id)
            .ok_or_else(|| ControlError::NotFound(format!("Vapi has no phone number {id}")))
    }
}
