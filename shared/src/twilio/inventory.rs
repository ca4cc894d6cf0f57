//! What the platform holds at Twilio, read page by page as the main account for the
//! carrier audit: its subaccounts (`GET /Accounts.json`) and each one's numbers
//! (`GET /Accounts/{Sub}/IncomingPhoneNumbers.json`), following Twilio's
//! `next_page_uri`, and a single number read directly.
//!
//! The Accounts list carries every subaccount's `auth_token`: it is held only as a
//! [`ReportedToken`] (redacted, zeroized), for the audit to fingerprint and compare
//! with the token Vapi's numbers hold; never logged or stored.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;

use super::{MainCall, PROVIDER, TwilioClient, bad_body};
use crate::ids::{AccountSid, E164, PhoneNumberSid, ReportedToken};
use crate::providers::ProviderError;
use crate::vapi::urlencode;

/// Twilio's page size bound (`PageSize` 1–1000).
pub const MAX_PAGE_SIZE: usize = 1000;

/// An account as the main account's list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedAccount {
    pub sid: String,
    /// Its current (primary) token, only to be fingerprinted.
    #[serde(default, rename = "auth_token")]
    pub token: Option<ReportedToken>,
    #[serde(default)]
    pub friendly_name: Option<String>,
    /// `active`, `suspended` or `closed`.
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "rfc2822")]
    pub date_created: Option<DateTime<Utc>>,
}

/// A number an account holds (and is billed for).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HeldNumber {
    pub sid: String,
    pub phone_number: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub voice_url: Option<String>,
    /// RFC 2822, as Twilio's 2010 API writes dates.
    #[serde(default, deserialize_with = "rfc2822")]
    pub date_created: Option<DateTime<Utc>>,
}

/// One page and where the next one is.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The path of the next page on Twilio's API host, `None` on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct AccountsPage {
    /// Required: a 200 without the list is not Twilio's list.
    accounts: Vec<ListedAccount>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct NumbersPage {
    incoming_phone_numbers: Vec<HeldNumber>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// What a direct read of one number found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberRead {
    Held(HeldNumber),
    /// Twilio's 20404, confirmed by the subaccount's number list (see
    /// [`TwilioClient::confirm_gone`]).
    Gone,
}

fn rfc2822<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    Ok(raw
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
        .map(|t| t.to_utc()))
}

impl TwilioClient {
    /// A page of the main account's accounts (itself and its subaccounts): the
    /// first when `next` is `None`, else the page `next` names.
    pub async fn accounts_page(
        &self,
        page_size: usize,
        next: Option<&str>,
    ) -> Result<Page<ListedAccount>, ProviderError> {
        let call = match next {
            Some(uri) => MainCall::idempotent(Method::GET, "/Accounts.json", String::new())
                .absolute(self.next_page_url(uri)?),
            None => MainCall::idempotent(Method::GET, "/Accounts.json", "/Accounts.json".into())
                .query(&[("PageSize", page_size.clamp(1, MAX_PAGE_SIZE))]),
        };
        let page: AccountsPage = self.as_main(call).await?.json(PROVIDER)?;
        Ok(Page {
            items: page.accounts,
            next: page.next_page_uri.filter(|u| !u.is_empty()),
        })
    }

    /// A page of the numbers `subaccount` holds, read as the main account.
    pub async fn numbers_page(
        &self,
        subaccount: &AccountSid,
        page_size: usize,
        next: Option<&str>,
    ) -> Result<Page<HeldNumber>, ProviderError> {
        const TEMPLATE: &str = "/Accounts/{AccountSid}/IncomingPhoneNumbers.json";
        let call = match next {
            Some(uri) => MainCall::idempotent(Method::GET, TEMPLATE, String::new())
                .absolute(self.next_page_url(uri)?),
            None => {
                let path = format!(
                    "/Accounts/{}/IncomingPhoneNumbers.json",
                    urlencode(subaccount.as_str())
                );
                MainCall::idempotent(Method::GET, TEMPLATE, path)
                    .query(&[("PageSize", page_size.clamp(1, MAX_PAGE_SIZE))])
            }
        };
        let page: NumbersPage = self.as_main(call).await?.json(PROVIDER)?;
        Ok(Page {
            items: page.incoming_phone_numbers,
            next: page.next_page_uri.filter(|u| !u.is_empty()),
        })
    }

    /// `GET /Accounts/{Sub}/IncomingPhoneNumbers/{PN}.json` as the main account:
    /// the number, or [`NumberRead::Gone`] when Twilio's 20404 is confirmed by the
    /// subaccount's list (a 20404 alone may be a wrong base URL).
    pub async fn read_number(
        &self,
        subaccount: &AccountSid,
        number_sid: &PhoneNumberSid,
        number: &E164,
    ) -> Result<NumberRead, ProviderError> {
        let path = format!(
            "/Accounts/{}/IncomingPhoneNumbers/{}.json",
            urlencode(subaccount.as_str()),
            urlencode(number_sid.as_str())
        );
        let call = MainCall::idempotent(
            Method::GET,
            "/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json",
            path,
        );
        match self.as_main(call).await {
            Ok(answer) => Ok(NumberRead::Held(answer.json(PROVIDER)?)),
            Err(e) if e.says_not_found() => self
                .confirm_gone(subaccount, number_sid, number)
                .await
                .map(|()| NumberRead::Gone),
            Err(e) => Err(e),
        }
    }

    /// `next_page_uri` is a path on Twilio's API host (`/2010-04-01/…`). Only a
    /// path is followed, on the configured base's own scheme and host, so the main
    /// account's credentials never go to a host an answer names.
    fn next_page_url(&self, uri: &str) -> Result<String, ProviderError> {
        let base = reqwest::Url::parse(&self.base).map_err(|_| bad_body(200))?;
        if !uri.starts_with('/') || uri.starts_with("//") {
            return Err(bad_body(200));
        }
        let mut url = base;
        url.set_query(None);
        let origin = url.origin().ascii_serialization();
        Ok(format!("{origin}{uri}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_account_never_holds_the_token() {
        let page: AccountsPage = serde_json::from_str(
            r#"{"accounts":[{"sid":"AC00000000000000000000000000000001","friendly_name":"org:x",
                "status":"active","auth_token":"0123456789abcdef0123456789abcdef"}],
                "next_page_uri":null}"#,
        )
        .expect("page");
        let debug = format!("{:?}", page.accounts);
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert_eq!(page.accounts[0].status, "active");
        assert!(page.next_page_uri.is_none());
    }

    #[test]
    fn dates_are_read_as_twilio_writes_them() {
        let n: HeldNumber = serde_json::from_str(
            r#"{"sid":"PN1","phone_number":"+14155550100","date_created":"Fri, 04 Dec 2026 10:00:00 +0000"}"#,
        )
        .expect("number");
        assert_eq!(
            n.date_created.map(|d| d.to_rfc3339()),
            Some("2026-12-04T10:00:00+00:00".into())
        );
        let unreadable: HeldNumber =
            serde_json::from_str(r#"{"sid":"PN1","phone_number":"+1","date_created":"yesterday"}"#)
                .expect("number");
        assert_eq!(unreadable.date_created, None);
    }

    #[test]
    fn only_a_path_on_the_configured_host_is_followed() {
        let client = TwilioClient::new(
            reqwest::Client::new(),
            "https://api.twilio.com/2010-04-01",
            crate::providers::CallPolicy::default(),
        );
        assert_eq!(
            client
                .next_page_url("/2010-04-01/Accounts.json?PageSize=2&Page=1&PageToken=PAx")
                .ok(),
            Some(
                "https://api.twilio.com/2010-04-01/Accounts.json?PageSize=2&Page=1&PageToken=PAx"
                    .into()
            )
        );
        for hostile in [
            "https://evil.example/2010-04-01/Accounts.json",
            "//evil.example/x",
            "Accounts.json",
        ] {
            assert!(client.next_page_url(hostile).is_err(), "{hostile}");
        }
    }
}
