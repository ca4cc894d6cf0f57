//! Twilio's paging of its lists (`GET /Accounts.json`, `GET
//! …/IncomingPhoneNumbers.json`): `PageSize` 1–1000 (default 50), `Page` and
//! `PageToken`, and the answer's `page`, `page_size`, `start`, `end`, `uri`,
//! `first_page_uri`, `previous_page_uri` and `next_page_uri`.
//!
//! As Twilio's, a page token is a cursor: `PA<key of the last item>` for the next
//! page, `PB<key of the first item>` for the previous one, so following
//! `next_page_uri` yields every item once even while items are added between
//! pages (an item added before the cursor is not seen; one after it is). `Page`
//! without a token is an offset (`Page × PageSize` items skipped), as a client that
//! builds page URIs by hand would use it.

use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{bad_request, param};

/// What a query string's value escapes: everything but RFC 3986's unreserved
/// characters (so `+` is `%2B`, `:` is `%3A`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A Twilio `PageSize`: 1 to 1000 (default 50).
pub(super) fn page_size(pairs: &[(String, String)]) -> Result<usize, Box<Response>> {
    match param(pairs, "PageSize") {
        None => Ok(50),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(Box::new(bad_request(
                20001,
                "PageSize must be an integer from 1 to 1000",
            ))),
        },
    }
}

/// Where a page starts, from its `PageToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cursor {
    /// `PA<key>`: the items after `key`.
    After(String),
    /// `PB<key>`: the items before `key`.
    Before(String),
}

/// Which page of a list a request asks for.
#[derive(Debug, Clone)]
pub(super) struct Paging {
    pub size: usize,
    /// `Page` (default 0): the answer's `page`, and an offset when no token is given.
    pub page: usize,
    pub cursor: Option<Cursor>,
    /// The token as given, for the page's own `uri`.
    token: Option<String>,
}

impl Paging {
    /// `PageSize`, `Page` and `PageToken`; a malformed one is Twilio's 400 (20001).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Box<Response>> {
        let size = page_size(pairs)?;
        let page = match param(pairs, "Page") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| Box::new(bad_request(20001, "Page must be a non-negative integer")))?,
        };
        let token = param(pairs, "PageToken").map(str::to_owned);
        let cursor = match token.as_deref() {
            None => None,
            Some(t) => match (t.get(..2), t.get(2..)) {
                (Some("PA"), Some(key)) if !key.is_empty() => Some(Cursor::After(key.to_owned())),
                (Some("PB"), Some(key)) if !key.is_empty() => Some(Cursor::Before(key.to_owned())),
                _ => {
                    return Err(Box::new(bad_request(
                        20001,
                        &format!("Invalid PageToken: {t}"),
                    )));
                }
            },
        };
        Ok(Self {
            size,
            page,
            cursor,
            token,
        })
    }

    /// The page's items (with their keys) and whether more follow it. `after(None)`
    /// walks the whole list in order, `after(Some(k))` the items after `k`;
    /// `before(k)` the items before `k`, nearest first. Each reads only what the
    /// page needs (one item more, to know whether a next page exists).
    pub fn take<'a, I, J>(
        &self,
        after: impl FnOnce(Option<&str>) -> I,
        before: impl FnOnce(&str) -> J,
    ) -> (Vec<(String, Value)>, bool)
    where
        I: Iterator<Item = (String, Value)> + 'a,
        J: Iterator<Item = (String, Value)> + 'a,
    {
        let mut items: Vec<(String, Value)> = match &self.cursor {
            None => after(None)
                .skip(self.page.saturating_mul(self.size))
                .take(self.size + 1)
                .collect(),
            Some(Cursor::After(key)) => after(Some(key)).take(self.size + 1).collect(),
            Some(Cursor::Before(key)) => {
                let mut back: Vec<_> = before(key).take(self.size).collect();
                back.reverse();
                // What follows is at least the item the token names.
                return (back, true);
            }
        };
        let more = items.len() > self.size;
        items.truncate(self.size);
        (items, more)
    }
}

/// A list's page as Twilio answers it: the items under `key`, and the paging
/// fields. `path` is the list's path (`/2010-04-01/…json`), `filters` the filters
/// given (kept in every page URI, in this order).
pub(super) fn answer(
    key: &str,
    path: &str,
    filters: &[(&str, &str)],
    paging: &Paging,
    items: Vec<(String, Value)>,
    more: bool,
) -> Value {
    let uri = |page: usize, token: Option<&str>| {
        let mut query: Vec<String> = filters
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
            .collect();
        query.push(format!("PageSize={}", paging.size));
        query.push(format!("Page={page}"));
        if let Some(t) = token {
            query.push(format!("PageToken={}", utf8_percent_encode(t, QUERY_VALUE)));
        }
        format!("{path}?{}", query.join("&"))
    };
    let next = match items.last() {
        Some((last, _)) if more => json!(uri(paging.page + 1, Some(&format!("PA{last}")))),
        _ => Value::Null,
    };
    let previous = match items.first() {
        Some((first, _)) if paging.page > 0 => {
            json!(uri(paging.page - 1, Some(&format!("PB{first}"))))
        }
        _ => Value::Null,
    };
    let start = paging.page.saturating_mul(paging.size);
    let end = start + items.len().saturating_sub(1);
    let mut v = json!({
        "first_page_uri": uri(0, None),
        "next_page_uri": next,
        "previous_page_uri": previous,
        "page": paging.page,
        "page_size": paging.size,
        "start": start,
        "end": end,
        "uri": uri(paging.page, paging.token.as_deref()),
    });
    v[key] = Value::Array(items.into_iter().map(|(_, item)| item).collect());
    v
}
