//! Identifiers of this domain as types that can only hold valid values.
//!
//! Parse, don't validate: every value that crosses a boundary (request body, path,
//! claims, database row) becomes one of these, so the code after the boundary never
//! re-checks a format.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why a value was rejected, phrased for the caller (it ends up in a 400 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub &'static str);

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn prefixed_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && is_lower_hex(&s[2..])
}

macro_rules! string_newtype_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// An organisation (tenant). Always taken from the caller's verified claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(Uuid);

impl OrgId {
    pub fn new(id: Uuid) -> Self {
        Self(id)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::str::FromStr for OrgId {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| FormatError("org id must be a UUID"))
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Twilio account (or subaccount) SID: `AC` followed by 32 lowercase hex digits,
/// exactly as Twilio issues them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountSid(String);

impl AccountSid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for AccountSid {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if prefixed_sid(s, "AC") {
            Ok(Self(s.to_owned()))
        } else {
            Err(FormatError(
                "accountSid must be \"AC\" followed by 32 lowercase hex characters",
            ))
        }
    }
}
string_newtype_serde!(AccountSid);

/// A Twilio incoming phone number SID: `PN` followed by 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumberSid(String);

impl PhoneNumberSid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PhoneNumberSid {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if prefixed_sid(s, "PN") {
            Ok(Self(s.to_owned()))
        } else {
            Err(FormatError(
                "phone number SID must be \"PN\" followed by 32 lowercase hex characters",
            ))
        }
    }
}
string_newtype_serde!(PhoneNumberSid);

/// A phone number in E.164 form: `+`, a non-zero country-code digit, at most 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the routes' warm-ups at init ask about, so that their statements match
/// nothing: the nil org, and `+0`, which no row can hold (not E.164: the
/// `phone_number` column's CHECK refuses it, as [`E164`]'s parser does). The one
/// `E164` that is not a valid number, so it stays inside this crate.
pub(crate) fn nobodys_number() -> (OrgId, E164) {
    (OrgId::new(Uuid::nil()), E164("+0".to_owned()))
}

impl std::str::FromStr for E164 {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('+').unwrap_or("");
        let ok = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FormatError(
                "phone number must be E.164: '+' then 2 to 15 digits, not starting with 0",
            ))
        }
    }
}
string_newtype_serde!(E164);

/// A Vapi assistant id: a UUID in its lowercase hyphenated form (how Vapi writes
/// ids), so what is stored and sent is exactly what Vapi answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssistantId(String);

impl AssistantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for AssistantId {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Uuid::try_parse(s) {
            Ok(id) if id.hyphenated().to_string() == s => Ok(Self(s.to_owned())),
            _ => Err(FormatError(
                "assistantId must be a Vapi assistant id: a lowercase UUID",
            )),
        }
    }
}
string_newtype_serde!(AssistantId);

/// The name a managed number carries at Vapi: 1 to 40 UTF-16 units (Vapi's limit,
/// as JavaScript counts), no control characters, not only spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NumberName(String);

impl NumberName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NumberName {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Vapi counts JavaScript string length (UTF-16 units): an emoji is two.
        let ok = (1..=40).contains(&s.encode_utf16().count())
            && !s.chars().any(char::is_control)
            && !s.trim().is_empty();
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FormatError(
                "name must be 1 to 40 characters without control characters",
            ))
        }
    }
}
string_newtype_serde!(NumberName);

/// A Twilio auth token: 32 lowercase hex characters. Kept secret: its `Debug` is
/// redacted and it has no `Display` or `Serialize`.
#[derive(Clone)]
pub struct AuthToken(SecretString);

impl AuthToken {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken([REDACTED])")
    }
}

impl std::str::FromStr for AuthToken {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && is_lower_hex(s) {
            Ok(Self(SecretString::from(s.to_owned())))
        } else {
            Err(FormatError("authToken must be 32 lowercase hex characters"))
        }
    }
}

impl<'de> Deserialize<'de> for AuthToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Deserialise into a zeroizing secret first, so a rejected token is still wiped.
        let raw = SecretString::deserialize(d)?;
        raw.expose_secret()
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A Twilio token as a provider's answer reported it (Twilio's account list, Vapi's
/// phone-number list), whatever its shape: read only to be fingerprinted
/// ([`crate::credential::fingerprint::FingerprintKey::of_reported`]), never shown.
#[derive(Clone)]
pub struct ReportedToken(SecretString);

impl ReportedToken {
    /// As an [`AuthToken`], if it has a token's shape.
    pub fn as_auth_token(&self) -> Option<AuthToken> {
        self.0.expose_secret().parse().ok()
    }
}

impl fmt::Debug for ReportedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReportedToken([REDACTED])")
    }
}

/// For the listings' derived comparisons (tests).
impl PartialEq for ReportedToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for ReportedToken {}

impl<'de> Deserialize<'de> for ReportedToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SecretString::deserialize(d).map(Self)
    }
}

/// The telephony provider a credential slot belongs to. One slot per org and provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Twilio,
    /// A token rotation's secondary Twilio token, kept sealed until the slot holds
    /// it: a context of its own, so the key policy can let the rotating functions
    /// open these and nothing else.
    TwilioSecondary,
}

impl Provider {
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::TwilioSecondary => "twilio-secondary",
        }
    }
}

/// Where a credential came from: the org's own Twilio account, or a subaccount the
/// platform created for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    Byoc,
    Managed,
}

impl CredentialSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialSource::Byoc => "byoc",
            CredentialSource::Managed => "managed",
        }
    }
}

impl std::str::FromStr for CredentialSource {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "byoc" => Ok(Self::Byoc),
            "managed" => Ok(Self::Managed),
            _ => Err(FormatError("source must be byoc or managed")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn assistant_ids_and_names() {
        use super::{AssistantId, NumberName};
        assert!(
            "0d3e0000-0000-4000-8000-0000000000aa"
                .parse::<AssistantId>()
                .is_ok()
        );
        for bad in [
            "",
            "asst_1",
            "0D3E0000-0000-4000-8000-0000000000AA",
            "0d3e00000000400080000000000000aa",
        ] {
            assert!(bad.parse::<AssistantId>().is_err(), "{bad}");
        }
        assert!("Front desk".parse::<NumberName>().is_ok());
        assert!("é".repeat(40).parse::<NumberName>().is_ok());
        assert!("😀".repeat(20).parse::<NumberName>().is_ok());
        for bad in [
            String::new(),
            "   ".into(),
            "a".repeat(41),
            "a\nb".into(),
            "😀".repeat(21),
        ] {
            assert!(bad.parse::<NumberName>().is_err(), "{bad:?}");
        }
    }

    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn account_sid_accepts_only_twilio_shape() {
        assert!(SID.parse::<AccountSid>().is_ok());
        for bad in [
            "",
            "AC",
            "PN0123456789abcdef0123456789abcdef",
            "AC0123456789ABCDEF0123456789ABCDEF",
            "AC0123456789abcdef0123456789abcde",
            "AC0123456789abcdef0123456789abcdef0",
            "AC0123456789abcdef0123456789abcdeg",
            " AC0123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<AccountSid>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn phone_number_sid_needs_pn() {
        assert!(
            "PN0123456789abcdef0123456789abcdef"
                .parse::<PhoneNumberSid>()
                .is_ok()
        );
        assert!(SID.parse::<PhoneNumberSid>().is_err());
    }

    #[test]
    fn e164_shape() {
        for ok in ["+14155550100", "+442071838750", "+12", "+123456789012345"] {
            assert!(ok.parse::<E164>().is_ok(), "{ok} rejected");
        }
        for bad in [
            "",
            "+",
            "14155550100",
            "+0155550100",
            "+1234567890123456",
            "+1 415 555 0100",
            "+1415555010a",
            "%2B14155550100",
            "++14155550100",
        ] {
            assert!(bad.parse::<E164>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn auth_token_is_redacted_and_checked() {
        let t: AuthToken = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(format!("{t:?}"), "AuthToken([REDACTED])");
        assert!("0123".parse::<AuthToken>().is_err());
        let e =
            serde_json::from_str::<AuthToken>("\"nothex-nothex-nothex-nothex-1234\"").unwrap_err();
        assert!(
            !e.to_string().contains("nothex"),
            "error echoes the token: {e}"
        );
    }

    #[test]
    fn org_id_must_be_uuid() {
        assert!(
            "7b0c2e1a-3f4d-4c5b-9a8e-1f2d3c4b5a69"
                .parse::<OrgId>()
                .is_ok()
        );
        assert!("acme".parse::<OrgId>().is_err());
        assert!("".parse::<OrgId>().is_err());
    }
}
