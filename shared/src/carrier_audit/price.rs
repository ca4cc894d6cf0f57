//! What a number Twilio holds costs per month, for the money at risk: the country
//! and type from the number itself, the price from Twilio's Pricing API (one call
//! per country per run).
//!
//! Twilio's number resource carries no country, so the country comes from the
//! calling code of the countries this service buys in most; `+1` is priced as the
//! US (the NANP countries share it; their prices differ a little). A number of
//! another calling code has no price: the finding is kept, its price is `null`.

use std::collections::HashMap;

use crate::twilio::{CountryPrices, TwilioClient};

/// Calling code → ISO country, longest codes first.
const CALLING_CODES: &[(&str, &str)] = &[
    ("+353", "IE"),
    ("+44", "GB"),
    ("+61", "AU"),
    ("+49", "DE"),
    ("+33", "FR"),
    ("+31", "NL"),
    ("+34", "ES"),
    ("+46", "SE"),
    ("+1", "US"),
];

/// Toll-free prefixes, by calling code: `+1` 800/833/844/855/866/877/888, `+44` 800/808.
fn toll_free(number: &str) -> bool {
    const NANP: [&str; 7] = ["800", "833", "844", "855", "866", "877", "888"];
    if let Some(rest) = number.strip_prefix("+1") {
        return NANP.iter().any(|p| rest.starts_with(p));
    }
    if let Some(rest) = number.strip_prefix("+44") {
        return rest.starts_with("800") || rest.starts_with("808");
    }
    false
}

/// The country and Pricing API `number_type` of `number`, if this service knows its
/// calling code.
pub fn classify(number: &str) -> Option<(&'static str, &'static str)> {
    let (_, country) = CALLING_CODES
        .iter()
        .find(|(code, _)| number.starts_with(code))?;
    Some((
        country,
        if toll_free(number) {
            "toll free"
        } else {
            "local"
        },
    ))
}

/// A monthly price.
#[derive(Debug, Clone, PartialEq)]
pub struct Monthly {
    pub amount: f64,
    pub unit: String,
}

/// Prices fetched during one run; a country whose prices could not be read stays
/// unpriced for the run (the call is not repeated).
#[derive(Default)]
pub struct PriceBook {
    countries: HashMap<&'static str, Option<CountryPrices>>,
    pub calls: usize,
}

impl PriceBook {
    pub async fn monthly(&mut self, twilio: &TwilioClient, number: &str) -> Option<Monthly> {
        let (country, kind) = classify(number)?;
        if !self.countries.contains_key(country) {
            self.calls += 1;
            let prices = match twilio.number_prices(country).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(country, error = e.stable_code(), "no monthly prices");
                    None
                }
            };
            self.countries.insert(country, prices);
        }
        let prices = self.countries.get(country)?.as_ref()?;
        let row = prices
            .phone_number_prices
            .iter()
            .find(|p| p.number_type == kind)?;
        let amount = row
            .current_price
            .as_deref()
            .or(row.base_price.as_deref())?
            .parse::<f64>()
            .ok()
            .filter(|a| a.is_finite() && *a >= 0.0)?;
        Some(Monthly {
            amount,
            unit: prices.price_unit.clone().unwrap_or_else(|| "USD".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_classified_by_calling_code_and_prefix() {
        assert_eq!(classify("+14155550100"), Some(("US", "local")));
        assert_eq!(classify("+18885550100"), Some(("US", "toll free")));
        assert_eq!(classify("+442071234567"), Some(("GB", "local")));
        assert_eq!(classify("+448001234567"), Some(("GB", "toll free")));
        assert_eq!(classify("+35312345678"), Some(("IE", "local")));
        assert_eq!(classify("+81312345678"), None);
    }
}
