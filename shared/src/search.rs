//! Numbers an org could buy: Twilio's available numbers (searched as the platform's
//! main account) with their monthly price (Twilio's Pricing API, cached per
//! instance). Only numbers that need no address: regulatory bundles are out of
//! scope, so `addressRequired=any` is refused with a 422 that says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::ApiError;
use crate::ids::E164;
use crate::providers::ProviderError;
use crate::steps::Deadline;
use crate::twilio::{AvailableSearch, CountryPrices, TwilioClient};

/// Query parameters the search takes.
pub const PARAMETERS: &[&str] = &[
    "country",
    "type",
    "areaCode",
    "contains",
    "limit",
    "addressRequired",
];

/// What kind of number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    Local,
    TollFree,
}

impl NumberKind {
    /// Twilio's resource name.
    fn resource(self) -> &'static str {
        match self {
            Self::Local => "Local",
            Self::TollFree => "TollFree",
        }
    }

    /// The Pricing API's `number_type`.
    fn price_type(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::TollFree => "toll free",
        }
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// ISO 3166-1 alpha-2, upper case. Default `US`.
    pub country: String,
    pub kind: NumberKind,
    /// Three digits, US and Canada only.
    pub area_code: Option<String>,
    /// 2 to 16 digits, letters or `*` (Twilio's pattern).
    pub contains: Option<String>,
    /// 1 to 50, default 20.
    pub limit: u32,
}

/// Every officially assigned ISO 3166-1 alpha-2 code (249), sorted: the countries a
/// search may name. From the ISO 3166 Maintenance Agency's list (as Debian's
/// `iso-codes` 4.15 ships it); exceptionally or transitionally reserved codes (`UK`,
/// `EU`, `XK`…) and user-assigned ones (`XX`, `ZZ`, `AA`…) are not countries here.
/// A well-formed code that is none of these is a 400 naming `country`, rather than a
/// question to Twilio. openapi.yaml's `country` pattern lists the same codes (a
/// search-numbers test checks that they agree).
pub const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Whether `code` (two upper-case letters) is an assigned ISO 3166-1 alpha-2 code.
pub fn is_iso_country(code: &str) -> bool {
    ISO_3166_ALPHA2.binary_search(&code).is_ok()
}

fn bad(name: &str, why: &str) -> ApiError {
    ApiError::bad_request("invalid_query_parameter", format!("{name}: {why}"))
}

impl SearchQuery {
    /// From the query string: `get(name)` gives every value of a parameter. Each
    /// parameter at most once; a bad one is a 400 naming it.
    pub fn parse<'a>(get: impl Fn(&str) -> Vec<&'a str>) -> Result<Self, ApiError> {
        let one = |name: &str| -> Result<Option<&'a str>, ApiError> {
            match get(name).as_slice() {
                [] => Ok(None),
                [v] => Ok(Some(*v)),
                _ => Err(bad(name, "give it once")),
            }
        };
        match one("addressRequired")? {
            None | Some("none") => {}
            Some("any") => {
                return Err(ApiError::Unprocessable {
                    code: "address_required_unsupported",
                    message: "addressRequired=any: numbers that need a registered address (and regulatory bundles) are not supported yet; only numbers that need none can be bought".into(),
                });
            }
            Some(_) => return Err(bad("addressRequired", "must be none or any")),
        }
        let country = match one("country")? {
            None => "US".to_owned(),
            Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                let code = c.to_ascii_uppercase();
                if !is_iso_country(&code) {
                    return Err(bad(
                        "country",
                        &format!("{code} is not an ISO 3166-1 country code (e.g. US, CA, GB)"),
                    ));
                }
                code
            }
            Some(_) => {
                return Err(bad(
                    "country",
                    "must be a two-letter ISO 3166-1 country code, e.g. US",
                ));
            }
        };
        let kind = match one("type")? {
            None | Some("local") => NumberKind::Local,
            Some("toll_free") => NumberKind::TollFree,
            Some(_) => return Err(bad("type", "must be local or toll_free")),
        };
        let area_code = match one("areaCode")? {
            None => None,
            Some(_) if !["US", "CA"].contains(&country.as_str()) => {
                return Err(bad("areaCode", "is for US and CA numbers only"));
            }
            Some(a)
                if a.len() == 3
                    && a.bytes().all(|b| b.is_ascii_digit())
                    && !a.starts_with(['0', '1']) =>
            {
                Some(a.to_owned())
            }
            Some(_) => {
                return Err(bad(
                    "areaCode",
                    "must be three digits, not starting with 0 or 1",
                ));
            }
        };
        let contains = match one("contains")? {
            None => None,
            Some(c)
                if (2..=16).contains(&c.len())
                    && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'*') =>
            {
                Some(c.to_owned())
            }
            Some(_) => return Err(bad("contains", "must be 2 to 16 digits, letters or *")),
        };
        let limit = match one("limit")? {
            None => 20,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if (1..=50).contains(&n) && !l.starts_with('+') => n,
                _ => return Err(bad("limit", "must be a whole number from 1 to 50")),
            },
        };
        Ok(Self {
            country,
            kind,
            area_code,
            contains,
            limit,
        })
    }
}

/// A monthly price, as Twilio states it (a decimal string and its currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthlyPrice {
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub voice: bool,
    pub sms: bool,
    pub mms: bool,
}

/// One number the org could buy (not a reservation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferedNumber {
    pub phone_number: E164,
    pub friendly_name: Option<String>,
    pub locality: Option<String>,
    pub region: Option<String>,
    pub iso_country: Option<String>,
    pub capabilities: Capabilities,
    pub address_requirements: &'static str,
    /// `null` when the Pricing API could not be reached.
    pub monthly_price: Option<MonthlyPrice>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    pub country: String,
    #[serde(rename = "type")]
    pub kind: NumberKind,
    pub numbers: Vec<OfferedNumber>,
    /// `false` when prices could not be fetched (the numbers are still listed).
    pub prices_available: bool,
}

/// Country prices, cached per instance for an hour: they change rarely, and every
/// search would otherwise pay a second Twilio round trip.
#[derive(Default)]
pub struct PriceBook {
    cache: Mutex<HashMap<String, (Instant, CountryPrices)>>,
}

const PRICE_TTL: Duration = Duration::from_secs(3600);

impl PriceBook {
    fn cached(&self, country: &str) -> Option<CountryPrices> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(country)
            .filter(|(at, _)| at.elapsed() < PRICE_TTL)
            .map(|(_, prices)| prices.clone())
    }

    fn keep(&self, country: &str, prices: CountryPrices) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(country.to_owned(), (Instant::now(), prices));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the number search failed: {0}")]
pub struct SearchError(pub ProviderError);

impl From<SearchError> for ApiError {
    fn from(SearchError(e): SearchError) -> Self {
        tracing::warn!(error = %e, code = e.stable_code(), "number search failed");
        match e {
            // Twilio's 404 for a search: it offers no numbers of that type in that
            // country (an ISO country it does not serve, or toll-free where there is
            // none). The country itself was checked against ISO 3166-1 before.
            ProviderError::Status {
                status: 404, code, ..
            } => ApiError::Unprocessable {
                code: "search_refused",
                message: format!(
                    "Twilio offers no numbers of this type in this country{}; try another country or type",
                    code.map(|c| format!(" (code {c})")).unwrap_or_default()
                ),
            },
            // Twilio's 400s for a search are about the filters (21451 invalid area
            // code and the like): the caller's to fix.
            ProviderError::Status {
                status: 400, code, ..
            } => ApiError::Unprocessable {
                code: "search_refused",
                message: format!(
                    "Twilio refused this search{}; check the filters",
                    code.map(|c| format!(" (code {c})")).unwrap_or_default()
                ),
            },
            _ => ApiError::Unavailable {
                code: "twilio_unavailable",
                message: "Twilio could not be reached to search numbers; try again shortly.".into(),
            },
        }
    }
}

/// Search, with the price (cached, or fetched concurrently with the search).
pub async fn search(
    twilio: &TwilioClient,
    prices: &PriceBook,
    query: &SearchQuery,
    deadline: Deadline,
) -> Result<SearchResult, SearchError> {
    let request = AvailableSearch {
        country: &query.country,
        resource: query.kind.resource(),
        area_code: query.area_code.as_deref(),
        contains: query.contains.as_deref(),
        page_size: query.limit,
    };
    let cached = prices.cached(&query.country);
    let fetch_prices = async {
        match &cached {
            Some(p) => Some(p.clone()),
            None => match deadline
                .run("twilio", twilio.number_prices(&query.country))
                .await
            {
                Ok(p) => {
                    prices.keep(&query.country, p.clone());
                    Some(p)
                }
                Err(e) => {
                    tracing::warn!(error = %e, code = e.stable_code(), "number prices unavailable; listing without them");
                    None
                }
            },
        }
    };
    let (found, country_prices) = tokio::join!(
        deadline.run("twilio", twilio.available_numbers(&request)),
        fetch_prices
    );
    let found = found.map_err(SearchError)?;
    let price = country_prices.as_ref().and_then(|p| {
        let row = p
            .phone_number_prices
            .iter()
            .find(|r| r.number_type == query.kind.price_type())?;
        Some(MonthlyPrice {
            amount: row
                .current_price
                .clone()
                .or_else(|| row.base_price.clone())?,
            currency: p.price_unit.clone().unwrap_or_else(|| "USD".into()),
        })
    });
    let numbers = found
        .into_iter()
        // Twilio was asked to exclude them; checked again, as the rule is ours.
        .filter(|n| {
            n.address_requirements
                .as_deref()
                .is_none_or(|r| r == "none")
        })
        .filter_map(|n| {
            Some(OfferedNumber {
                phone_number: n.phone_number.parse().ok()?,
                friendly_name: n.friendly_name,
                locality: n.locality,
                region: n.region,
                iso_country: n.iso_country,
                capabilities: Capabilities {
                    voice: n.capabilities.voice,
                    sms: n.capabilities.sms,
                    mms: n.capabilities.mms,
                },
                address_requirements: "none",
                monthly_price: price.clone(),
            })
        })
        .take(query.limit as usize)
        .collect();
    Ok(SearchResult {
        country: query.country.clone(),
        kind: query.kind,
        numbers,
        prices_available: price.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<SearchQuery, ApiError> {
        SearchQuery::parse(|name| {
            pairs
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .collect()
        })
    }

    #[test]
    fn defaults_and_good_filters() {
        let q = parse(&[]).unwrap();
        assert_eq!(
            (q.country.as_str(), q.kind, q.limit),
            ("US", NumberKind::Local, 20)
        );
        let q = parse(&[
            ("country", "ca"),
            ("type", "toll_free"),
            ("areaCode", "416"),
            ("contains", "55*"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(q.country, "CA");
        assert_eq!(q.kind, NumberKind::TollFree);
        assert_eq!(q.area_code.as_deref(), Some("416"));
        assert_eq!(q.contains.as_deref(), Some("55*"));
        assert_eq!(q.limit, 5);
    }

    #[test]
    fn countries_are_the_assigned_iso_3166_codes() {
        assert!(
            ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(
            ISO_3166_ALPHA2
                .iter()
                .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        );
        for assigned in ["US", "CA", "GB", "DE", "AQ", "SS", "CW", "AX", "ZW", "AD"] {
            assert!(is_iso_country(assigned), "{assigned}");
        }
        // User-assigned, reserved or withdrawn: not countries.
        for not_assigned in ["XX", "ZZ", "AA", "QM", "UK", "EU", "XK", "AN", "YU", "us"] {
            assert!(!is_iso_country(not_assigned), "{not_assigned}");
        }
        for (given, country) in [("gb", "GB"), ("De", "DE"), ("AQ", "AQ")] {
            assert_eq!(parse(&[("country", given)]).unwrap().country, country);
        }
        let e = parse(&[("country", "xx")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "country: XX is not an ISO 3166-1 country code (e.g. US, CA, GB)"
        );
    }

    #[test]
    fn bad_filters_name_the_parameter() {
        for (pairs, name) in [
            (vec![("country", "USA")], "country"),
            (vec![("country", "XX")], "country"),
            (vec![("country", "uk")], "country"),
            (vec![("country", "ZZ")], "country"),
            (vec![("country", "É")], "country"),
            (vec![("type", "mobile")], "type"),
            (vec![("areaCode", "41")], "areaCode"),
            (vec![("areaCode", "115")], "areaCode"),
            (vec![("country", "GB"), ("areaCode", "415")], "areaCode"),
            (vec![("contains", "5")], "contains"),
            (vec![("contains", "55 5")], "contains"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "51")], "limit"),
            (vec![("limit", "+5")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("limit", "5"), ("limit", "6")], "limit"),
            (vec![("addressRequired", "maybe")], "addressRequired"),
        ] {
            let e = parse(&pairs).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (400, "invalid_query_parameter"),
                "{pairs:?}"
            );
            assert!(e.to_string().starts_with(name), "{pairs:?}: {e}");
        }
        let e = parse(&[("addressRequired", "any")]).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (422, "address_required_unsupported")
        );
    }
}
