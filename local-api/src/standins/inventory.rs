//! The numbers Twilio's stand-in offers: what a search finds and a purchase may buy.

use serde::Serialize;

/// Twilio's number types the stand-in offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NumberType {
    Local,
    TollFree,
}

/// One available number (Twilio's `AvailablePhoneNumber`).
#[derive(Debug, Clone, Serialize)]
pub struct Offer {
    pub phone_number: String,
    pub number_type: NumberType,
    pub locality: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub iso_country: String,
    pub voice: bool,
    pub sms: bool,
    pub mms: bool,
    /// `none`, `any`, `local` or `foreign`.
    pub address_requirements: String,
}

impl Offer {
    /// A US number in San Francisco (area code 415) that needs no address.
    pub fn san_francisco(e164: &str) -> Self {
        Self {
            phone_number: e164.to_owned(),
            number_type: NumberType::Local,
            locality: Some("San Francisco".into()),
            region: Some("CA".into()),
            postal_code: Some("94103".into()),
            iso_country: "US".into(),
            voice: true,
            sms: true,
            mms: true,
            address_requirements: "none".into(),
        }
    }

    /// A US toll-free number.
    pub fn toll_free(e164: &str) -> Self {
        Self {
            phone_number: e164.to_owned(),
            number_type: NumberType::TollFree,
            locality: None,
            region: None,
            postal_code: None,
            iso_country: "US".into(),
            voice: true,
            sms: true,
            mms: false,
            address_requirements: "none".into(),
        }
    }

    /// Twilio's display form: `(415) 555-0150` for a North American number.
    pub fn friendly_name(&self) -> String {
        friendly_name(&self.phone_number)
    }

    /// The area code of a North American number.
    pub fn area_code(&self) -> Option<&str> {
        self.phone_number
            .strip_prefix("+1")
            .filter(|d| d.len() == 10)
            .map(|d| &d[..3])
    }
}

/// `(415) 555-0150` for `+14155550150`; other numbers as they are.
pub fn friendly_name(e164: &str) -> String {
    match e164.strip_prefix("+1") {
        Some(d) if d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..])
        }
        _ => e164.to_owned(),
    }
}

/// What the stand-in offers when it starts: area code 415 (San Francisco)
/// `+14155550150`…`159` needing no address (`…159` voice only), `+14155550160`
/// (needs a local address) and `…161` (needs any address), which a search with
/// `ExcludeAllAddressRequired=true` hides and a purchase refuses (21631),
/// `+14155550162` (SMS only, hidden by `VoiceEnabled=true`), and toll-free
/// `+18335550100`…`104`.
pub fn seed_numbers() -> Vec<Offer> {
    let mut offers: Vec<Offer> = (150..=159)
        .map(|n| Offer::san_francisco(&format!("+1415555{n:04}")))
        .collect();
    if let Some(last) = offers.last_mut() {
        last.sms = false;
        last.mms = false;
    }
    for (n, needs) in [(160, "local"), (161, "any")] {
        offers.push(Offer {
            address_requirements: needs.into(),
            ..Offer::san_francisco(&format!("+1415555{n:04}"))
        });
    }
    offers.push(Offer {
        voice: false,
        mms: false,
        ..Offer::san_francisco("+14155550162")
    });
    offers.extend((100..=104).map(|n| Offer::toll_free(&format!("+1833555{n:04}"))));
    offers
}
