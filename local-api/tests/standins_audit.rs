//! The stand-ins' endpoints a carrier audit reads, over HTTP: Twilio's paged
//! account and number lists (`next_page_uri`, page tokens as cursors, filters
//! kept), `voice_url` set by a Vapi import, closed and suspended subaccounts, 429
//! with `Retry-After` on the lists, Vapi's list walked newest first by
//! `createdAtLe`, drift made by hand through `/__control/…`, and a fleet seeded in
//! bulk (small, and one at the benchmark's scale).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use local_api::demo::DEMO_SUBACCOUNT;
use local_api::server::Running;
use local_api::standins::{
    LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, VAPI_TWILIO_SMS_URL,
    VAPI_TWILIO_VOICE_URL, subaccount_token,
};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use testkit::TestDb;

mod common;

const MAIN: (&str, &str) = (LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN);

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

struct Standins {
    _db: TestDb,
    running: Running,
    http: reqwest::Client,
}

impl Standins {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let running = common::start_local(&db).await;
        Self {
            _db: db,
            running,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.standins)
    }

    async fn send(req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("stand-ins answer");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A Twilio call with Basic auth; `path` after `/2010-04-01`, `form` as a
    /// POST's body.
    async fn twilio(
        &self,
        method: &str,
        path: &str,
        auth: (&str, &str),
        form: &[(&str, &str)],
    ) -> Answer {
        self.twilio_uri(method, &format!("/2010-04-01{path}"), auth, form)
            .await
    }

    /// A Twilio call to a URI as Twilio names one (`/2010-04-01/…`, as in
    /// `next_page_uri`).
    async fn twilio_uri(
        &self,
        method: &str,
        uri: &str,
        (user, pass): (&str, &str),
        form: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                self.url(&format!("/twilio{uri}")),
            )
            .basic_auth(user, Some(pass));
        if !form.is_empty() {
            req = req.form(form);
        }
        Self::send(req).await
    }

    async fn vapi(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                self.url(&format!("/vapi{path}")),
            )
            .bearer_auth(LOCAL_VAPI_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::send(req).await
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.http.request(
            method.parse().expect("method"),
            self.url(&format!("/__control{path}")),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::send(req).await
    }

    fn state(&self) -> Value {
        self.running.standins_state.state()
    }

    /// A subaccount made through Twilio's API as the main account: its SID and
    /// token.
    async fn subaccount(&self, name: &str) -> (String, String) {
        let a = self
            .twilio("POST", "/Accounts.json", MAIN, &[("FriendlyName", name)])
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        (text(&a.body["sid"]), text(&a.body["auth_token"]))
    }

    /// A number bought by hand on `account`: its PN SID.
    async fn bought_by_hand(&self, account: &str, e164: &str, name: Option<&str>) -> String {
        let mut body = json!({"accountSid": account, "phoneNumber": e164});
        if let Some(n) = name {
            body["friendlyName"] = json!(n);
        }
        let a = self.control("POST", "/twilio/numbers", Some(body)).await;
        assert_eq!(a.status, 201, "{}", a.body);
        text(&a.body["sid"])
    }

    /// Every page of a Twilio list from `first` (a `/2010-04-01/…` URI), following
    /// `next_page_uri`: each page's answer.
    async fn pages(&self, first: &str, auth: (&str, &str)) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(uri) = next {
            let a = self.twilio_uri("GET", &uri, auth, &[]).await;
            assert_eq!(a.status, 200, "{uri}: {}", a.body);
            next = a.body["next_page_uri"].as_str().map(str::to_owned);
            pages.push(a.body);
            assert!(pages.len() < 10_000, "the walk never ends");
        }
        pages
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The values of `field` of the items under `key` of every page, in order.
fn items(pages: &[Value], key: &str, field: &str) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p[key].as_array().cloned().unwrap_or_default())
        .map(|i| text(&i[field]))
        .collect()
}

/// Twilio's error JSON with this status and code.
fn twilio_refusal(a: &Answer, status: u16, code: u32) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert_eq!(a.body["status"], status, "{}", a.body);
    assert!(
        a.body["message"].is_string() && a.body["more_info"].is_string(),
        "{}",
        a.body
    );
}

/// A `/proc/self/status` figure in kB (Linux; 0 elsewhere).
fn rss(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn retry_after(a: &Answer) -> Option<&str> {
    a.headers.get("retry-after").and_then(|v| v.to_str().ok())
}

/// Every distinct SID once, in order; panics on a repeat.
fn once_each(sids: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for s in sids {
        assert!(seen.insert(s.clone()), "{s} listed twice: {sids:?}");
    }
    seen
}

fn subaccounts_in_state(state: &Value) -> Vec<String> {
    state["twilio_subaccounts"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_account_list_pages_by_cursor_and_keeps_its_filters() {
    let s = Standins::start().await;
    for _ in 0..5 {
        let a = s
            .control(
                "POST",
                "/twilio/accounts",
                Some(json!({"friendlyName": "org:paging"})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(a.body["friendlyName"], "org:paging");
        assert_eq!(a.body["status"], "active");
    }
    s.subaccount("org:other").await;

    // Every account once: the main account first, then the subaccounts by SID.
    let pages = s.pages("/2010-04-01/Accounts.json?PageSize=2", MAIN).await;
    let listed = items(&pages, "accounts", "sid");
    once_each(&listed);
    let mut expected = subaccounts_in_state(&s.state());
    expected.sort();
    expected.insert(0, LOCAL_TWILIO_MAIN_SID.to_owned());
    assert_eq!(listed, expected);
    assert!(pages.len() >= 4, "{}", pages.len());
    for (n, page) in pages.iter().enumerate() {
        assert_eq!(page["page"], n, "{page}");
        assert_eq!(page["page_size"], 2, "{page}");
        assert_eq!(page["start"], 2 * n, "{page}");
        let len = page["accounts"].as_array().map_or(0, Vec::len);
        assert_eq!(page["end"], 2 * n + len.max(1) - 1, "{page}");
        assert_eq!(
            page["first_page_uri"], "/2010-04-01/Accounts.json?PageSize=2&Page=0",
            "{page}"
        );
        let uri = text(&page["uri"]);
        assert!(
            uri.starts_with("/2010-04-01/Accounts.json?PageSize=2&Page="),
            "{uri}"
        );
        if n == 0 {
            assert_eq!(page["previous_page_uri"], Value::Null, "{page}");
        } else {
            let previous = text(&page["previous_page_uri"]);
            assert!(previous.contains("PageToken=PB"), "{previous}");
        }
        match page["next_page_uri"].as_str() {
            Some(next) => {
                let last = text(&page["accounts"][1]["sid"]);
                assert_eq!(
                    next,
                    format!(
                        "/2010-04-01/Accounts.json?PageSize=2&Page={}&PageToken=PA{last}",
                        n + 1
                    )
                );
            }
            None => assert_eq!(n, pages.len() - 1, "only the last page has none"),
        }
    }
    // Followed on the host's root, as a client joins a Twilio page URI to its base
    // URL's origin: the same page.
    let at_root = Standins::send(
        s.http
            .get(s.url(&text(&pages[0]["next_page_uri"])))
            .basic_auth(MAIN.0, Some(MAIN.1)),
    )
    .await;
    assert_eq!(at_root.status, 200, "{}", at_root.body);
    assert_eq!(at_root.body["accounts"], pages[1]["accounts"]);
    let nowhere = Standins::send(
        s.http
            .get(s.url("/2010-04-01/Nowhere.json"))
            .basic_auth(MAIN.0, Some(MAIN.1)),
    )
    .await;
    twilio_refusal(&nowhere, 404, 20404);

    // The previous page of the second is the first.
    let back = s
        .twilio_uri("GET", &text(&pages[1]["previous_page_uri"]), MAIN, &[])
        .await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.body["accounts"], pages[0]["accounts"]);
    assert_eq!(back.body["page"], 0);

    // Filters stay in every page's URIs.
    let pages = s
        .pages(
            "/2010-04-01/Accounts.json?FriendlyName=org%3Apaging&Status=active&PageSize=2",
            MAIN,
        )
        .await;
    assert_eq!(pages.len(), 3);
    assert_eq!(once_each(&items(&pages, "accounts", "sid")).len(), 5);
    assert!(
        items(&pages, "accounts", "friendly_name")
            .iter()
            .all(|n| n == "org:paging")
    );
    let next = text(&pages[0]["next_page_uri"]);
    assert!(
        next.starts_with(
            "/2010-04-01/Accounts.json?FriendlyName=org%3Apaging&Status=active&PageSize=2&Page=1&PageToken=PAAC"
        ),
        "{next}"
    );
    assert_eq!(pages[2]["next_page_uri"], Value::Null);
    let none = s
        .twilio("GET", "/Accounts.json?Status=closed", MAIN, &[])
        .await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body["accounts"], json!([]));
    assert_eq!(none.body["next_page_uri"], Value::Null);
}

#[tokio::test]
async fn a_walk_by_page_token_sees_every_account_once_while_accounts_are_added() {
    let s = Standins::start().await;
    for _ in 0..8 {
        s.subaccount("org:before").await;
    }
    let before: BTreeSet<String> = subaccounts_in_state(&s.state()).into_iter().collect();

    let mut listed = Vec::new();
    let mut next = Some("/2010-04-01/Accounts.json?PageSize=3".to_owned());
    let mut added = 0;
    while let Some(uri) = next {
        let a = s.twilio_uri("GET", &uri, MAIN, &[]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        listed.extend(items(std::slice::from_ref(&a.body), "accounts", "sid"));
        next = a.body["next_page_uri"].as_str().map(str::to_owned);
        // Between pages: new accounts, their SIDs before and after the cursor.
        if added < 12 {
            for _ in 0..4 {
                s.subaccount("org:between").await;
                added += 1;
            }
        }
    }
    let seen = once_each(&listed);
    assert!(seen.contains(LOCAL_TWILIO_MAIN_SID));
    assert!(
        before.is_subset(&seen),
        "every account there before the walk is seen: missing {:?}",
        before.difference(&seen).collect::<Vec<_>>()
    );
    // Accounts added behind the cursor are not seen by this walk (the next one
    // sees them); nothing is seen twice, and the order stays by SID.
    let mut sorted = listed[1..].to_vec();
    sorted.sort();
    assert_eq!(listed[1..], sorted[..], "in SID order");
}

#[tokio::test]
async fn page_size_page_and_page_token_are_checked() {
    let s = Standins::start().await;
    for query in [
        "PageSize=0",
        "PageSize=1001",
        "PageSize=ten",
        "Page=-1",
        "PageToken=XYZ",
        "PageToken=PA",
    ] {
        for path in [
            format!("/Accounts.json?{query}"),
            format!("/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json?{query}"),
        ] {
            twilio_refusal(&s.twilio("GET", &path, MAIN, &[]).await, 400, 20001);
        }
    }
    let a = s.twilio("GET", "/Accounts.json", MAIN, &[]).await;
    assert_eq!((a.status, a.body["page_size"].as_u64()), (200, Some(50)));
    let a = s
        .twilio("GET", "/Accounts.json?PageSize=1000", MAIN, &[])
        .await;
    assert_eq!((a.status, a.body["page_size"].as_u64()), (200, Some(1000)));
    let a = s
        .twilio("GET", "/Accounts.json?PageSize=1", MAIN, &[])
        .await;
    assert_eq!(a.body["accounts"].as_array().map(Vec::len), Some(1));
    assert_eq!(a.body["accounts"][0]["sid"], LOCAL_TWILIO_MAIN_SID);
    // `Page` without a token: an offset.
    let second = s
        .twilio("GET", "/Accounts.json?PageSize=1&Page=1", MAIN, &[])
        .await;
    let by_token = s
        .twilio_uri("GET", &text(&a.body["next_page_uri"]), MAIN, &[])
        .await;
    assert_eq!(second.body["accounts"], by_token.body["accounts"]);
    assert_eq!(second.body["start"], 1);
}

#[tokio::test]
async fn the_number_list_pages_one_accounts_numbers_and_keeps_its_filters() {
    let s = Standins::start().await;
    let (sub, token) = s.subaccount("org:numbers").await;
    let mut pns = BTreeSet::new();
    for n in 0..7 {
        let name = (n < 4).then_some("purchase paged");
        pns.insert(
            s.bought_by_hand(&sub, &format!("+1202555{:04}", 100 + n), name)
                .await,
        );
    }
    // Another account's numbers stay out of it.
    s.bought_by_hand(DEMO_SUBACCOUNT, "+12025559999", Some("purchase paged"))
        .await;

    let list = format!("/2010-04-01/Accounts/{sub}/IncomingPhoneNumbers.json");
    for auth in [MAIN, (sub.as_str(), token.as_str())] {
        let pages = s.pages(&format!("{list}?PageSize=3"), auth).await;
        assert_eq!(pages.len(), 3);
        let listed = items(&pages, "incoming_phone_numbers", "sid");
        assert_eq!(once_each(&listed), pns);
        assert_eq!(listed, pns.iter().cloned().collect::<Vec<_>>(), "by SID");
        let next = text(&pages[0]["next_page_uri"]);
        assert_eq!(
            next,
            format!("{list}?PageSize=3&Page=1&PageToken=PA{}", listed[2])
        );
        assert_eq!(pages[2]["next_page_uri"], Value::Null);
        assert_eq!(
            pages[2]["incoming_phone_numbers"].as_array().map(Vec::len),
            Some(1)
        );
    }

    // An item: what the audit reads.
    let first = s
        .twilio_uri("GET", &format!("{list}?PageSize=1"), MAIN, &[])
        .await;
    let item = &first.body["incoming_phone_numbers"][0];
    for field in [
        "sid",
        "account_sid",
        "phone_number",
        "friendly_name",
        "date_created",
    ] {
        assert!(item[field].is_string(), "{field}: {item}");
    }
    assert_eq!(item["account_sid"], sub.as_str());
    assert_eq!(item["voice_url"], "", "bought, never imported");
    assert_eq!(item["sms_url"], "");
    assert!(item["capabilities"]["voice"].is_boolean(), "{item}");
    assert!(
        chrono::DateTime::parse_from_rfc2822(&text(&item["date_created"])).is_ok(),
        "{item}"
    );

    // FriendlyName and PhoneNumber stay in next_page_uri.
    let pages = s
        .pages(
            &format!("{list}?FriendlyName=purchase%20paged&PageSize=3"),
            MAIN,
        )
        .await;
    assert_eq!(items(&pages, "incoming_phone_numbers", "sid").len(), 4);
    let next = text(&pages[0]["next_page_uri"]);
    assert!(
        next.starts_with(&format!(
            "{list}?FriendlyName=purchase%20paged&PageSize=3&Page=1&PageToken=PAPN"
        )),
        "{next}"
    );
    let one = s
        .twilio_uri(
            "GET",
            &format!("{list}?PhoneNumber=%2B12025550103&PageSize=1"),
            MAIN,
            &[],
        )
        .await;
    assert_eq!(
        items(
            std::slice::from_ref(&one.body),
            "incoming_phone_numbers",
            "phone_number"
        ),
        ["+12025550103"]
    );
    assert_eq!(one.body["next_page_uri"], Value::Null);
    assert_eq!(
        one.body["first_page_uri"],
        format!("{list}?PhoneNumber=%2B12025550103&PageSize=1&Page=0")
    );
    let digits = s
        .pages(&format!("{list}?PhoneNumber=55501&PageSize=1"), MAIN)
        .await;
    assert_eq!(items(&digits, "incoming_phone_numbers", "sid").len(), 7);
    assert!(
        text(&digits[0]["next_page_uri"]).contains("PhoneNumber=55501&PageSize=1&Page=1"),
        "{}",
        digits[0]
    );
}

#[tokio::test]
async fn a_closed_subaccount_loses_its_numbers_and_its_credentials_for_good() {
    let s = Standins::start().await;
    let (sub, token) = s.subaccount("org:closing").await;
    let (other, other_token) = s.subaccount("org:bystander").await;
    let own = (sub.as_str(), token.as_str());
    let pn = s.bought_by_hand(&sub, "+12025550201", None).await;
    s.bought_by_hand(&sub, "+12025550202", None).await;
    let numbers = format!("/Accounts/{sub}/IncomingPhoneNumbers.json");
    assert_eq!(s.twilio("GET", &numbers, own, &[]).await.status, 200);

    // Only the main account changes an account's status.
    twilio_refusal(
        &s.twilio(
            "POST",
            &format!("/Accounts/{sub}.json"),
            (other.as_str(), other_token.as_str()),
            &[("Status", "closed")],
        )
        .await,
        401,
        20003,
    );
    twilio_refusal(
        &s.twilio(
            "POST",
            &format!("/Accounts/{sub}.json"),
            own,
            &[("Status", "closed")],
        )
        .await,
        401,
        20003,
    );
    twilio_refusal(
        &s.twilio(
            "POST",
            &format!("/Accounts/{sub}.json"),
            MAIN,
            &[("Status", "gone")],
        )
        .await,
        400,
        20001,
    );
    twilio_refusal(
        &s.twilio(
            "POST",
            "/Accounts/AC0123456789abcdef0123456789abcdef.json",
            MAIN,
            &[("Status", "closed")],
        )
        .await,
        404,
        20404,
    );
    // An account is updated by POST, never deleted: Twilio's 405.
    twilio_refusal(
        &s.twilio("DELETE", &format!("/Accounts/{sub}.json"), MAIN, &[])
            .await,
        405,
        20004,
    );
    // A POST that changes nothing answers the account as it is.
    let unchanged = s
        .twilio("POST", &format!("/Accounts/{sub}.json"), MAIN, &[])
        .await;
    assert_eq!(
        (unchanged.status, unchanged.body["status"].as_str()),
        (200, Some("active")),
        "{}",
        unchanged.body
    );

    let closed = s
        .twilio(
            "POST",
            &format!("/Accounts/{sub}.json"),
            MAIN,
            &[("Status", "closed")],
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["sid"], sub.as_str());
    assert_eq!(closed.body["status"], "closed");

    // Its numbers are released: gone from the list and from the state.
    let list = s.twilio("GET", &numbers, MAIN, &[]).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["incoming_phone_numbers"], json!([]));
    let state = s.state();
    assert_eq!(state["twilio_subaccounts"][&sub]["status"], "closed");
    assert!(
        !state["twilio_numbers"]
            .as_object()
            .expect("numbers")
            .values()
            .any(|n| n["account_sid"] == sub.as_str()),
        "{}",
        state["twilio_numbers"]
    );
    // As itself: refused everywhere, as Twilio refuses a closed account's
    // credentials.
    for path in [
        format!("/Accounts/{sub}.json"),
        numbers.clone(),
        "/Accounts.json".into(),
    ] {
        twilio_refusal(&s.twilio("GET", &path, own, &[]).await, 401, 20003);
    }
    // The main account still reads it, as closed; its numbers are 404.
    let read = s
        .twilio("GET", &format!("/Accounts/{sub}.json"), MAIN, &[])
        .await;
    assert_eq!(
        (read.status, read.body["status"].as_str()),
        (200, Some("closed"))
    );
    let listed = s
        .twilio("GET", "/Accounts.json?Status=closed", MAIN, &[])
        .await;
    assert_eq!(
        items(std::slice::from_ref(&listed.body), "accounts", "sid"),
        std::slice::from_ref(&sub)
    );
    twilio_refusal(
        &s.twilio(
            "DELETE",
            &format!("/Accounts/{sub}/IncomingPhoneNumbers/{pn}.json"),
            MAIN,
            &[],
        )
        .await,
        404,
        20404,
    );
    twilio_refusal(
        &s.twilio("POST", &numbers, MAIN, &[("PhoneNumber", "+14155550151")])
            .await,
        404,
        20404,
    );
    // For good: no change afterwards, by the API or by hand; closing again is
    // no change.
    for status in ["active", "suspended"] {
        let again = s
            .twilio(
                "POST",
                &format!("/Accounts/{sub}.json"),
                MAIN,
                &[("Status", status)],
            )
            .await;
        twilio_refusal(&again, 400, 20001);
        assert!(
            text(&again.body["message"]).contains("closed"),
            "{}",
            again.body
        );
        let by_hand = s
            .control(
                "POST",
                &format!("/twilio/accounts/{sub}/status"),
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(by_hand.status, 409, "{}", by_hand.body);
    }
    let again = s
        .twilio(
            "POST",
            &format!("/Accounts/{sub}.json"),
            MAIN,
            &[("Status", "closed")],
        )
        .await;
    assert_eq!(
        (again.status, again.body["status"].as_str()),
        (200, Some("closed"))
    );
    // The bystander is untouched.
    assert_eq!(
        s.twilio(
            "GET",
            &format!("/Accounts/{other}.json"),
            (other.as_str(), other_token.as_str()),
            &[],
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn a_suspended_subaccount_keeps_its_numbers_and_is_refused_as_itself() {
    let s = Standins::start().await;
    let (sub, token) = s.subaccount("org:suspended").await;
    let own = (sub.as_str(), token.as_str());
    s.bought_by_hand(&sub, "+12025550301", None).await;
    let numbers = format!("/Accounts/{sub}/IncomingPhoneNumbers.json");

    let suspended = s
        .twilio(
            "POST",
            &format!("/Accounts/{sub}.json"),
            MAIN,
            &[("Status", "suspended"), ("FriendlyName", "org:suspended!")],
        )
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.body);
    assert_eq!(suspended.body["status"], "suspended");
    assert_eq!(suspended.body["friendly_name"], "org:suspended!");
    let list = s.twilio("GET", &numbers, MAIN, &[]).await;
    assert_eq!(
        list.body["incoming_phone_numbers"].as_array().map(Vec::len),
        Some(1),
        "still held, still billing"
    );
    assert_eq!(s.state()["twilio_subaccounts"][&sub]["status"], "suspended");
    twilio_refusal(&s.twilio("GET", &numbers, own, &[]).await, 401, 20003);
    twilio_refusal(
        &s.twilio("GET", &format!("/Accounts/{sub}.json"), own, &[])
            .await,
        401,
        20003,
    );
    // Vapi checks the credentials with Twilio: refused too.
    let import = s
        .vapi(
            "POST",
            "/phone-number",
            Some(json!({"provider": "twilio", "number": "+12025550301",
                        "twilioAccountSid": sub, "twilioAuthToken": token})),
        )
        .await;
    assert_eq!(import.status, 400, "{}", import.body);

    // Active again, by hand: its credentials work again.
    let active = s
        .control(
            "POST",
            &format!("/twilio/accounts/{sub}/status"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(active.status, 200, "{}", active.body);
    assert_eq!(
        active.body,
        json!({"sid": sub, "friendlyName": "org:suspended!", "status": "active", "releasedNumbers": 0})
    );
    assert_eq!(s.twilio("GET", &numbers, own, &[]).await.status, 200);
}

#[tokio::test]
async fn a_vapi_import_points_the_twilio_number_at_vapi_and_a_delete_leaves_it() {
    let s = Standins::start().await;
    let (sub, token) = s.subaccount("org:voice").await;
    s.bought_by_hand(&sub, "+12025550401", None).await;
    s.bought_by_hand(&sub, "+12025550402", None).await;
    let urls = |number: &str| {
        let state = s.state();
        let n = state["twilio_numbers"]
            .as_object()
            .expect("numbers")
            .values()
            .find(|n| n["phone_number"] == number)
            .cloned()
            .expect("held");
        (text(&n["voice_url"]), text(&n["sms_url"]))
    };
    assert_eq!(urls("+12025550401"), (String::new(), String::new()));

    let import = |number: &'static str, sms: Option<bool>| {
        let mut body = json!({"provider": "twilio", "number": number,
                              "twilioAccountSid": sub, "twilioAuthToken": token});
        if let Some(sms) = sms {
            body["smsEnabled"] = json!(sms);
        }
        s.vapi("POST", "/phone-number", Some(body))
    };
    let first = import("+12025550401", None).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(
        urls("+12025550401"),
        (VAPI_TWILIO_VOICE_URL.into(), VAPI_TWILIO_SMS_URL.into())
    );
    assert_eq!(
        VAPI_TWILIO_VOICE_URL,
        "https://api.vapi.ai/twilio/inbound_call"
    );
    let second = import("+12025550402", Some(false)).await;
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(
        urls("+12025550402"),
        (VAPI_TWILIO_VOICE_URL.into(), String::new()),
        "smsEnabled false leaves the messaging URL"
    );
    // What Twilio's list answers.
    let list = s
        .twilio(
            "GET",
            &format!("/Accounts/{sub}/IncomingPhoneNumbers.json?PhoneNumber=%2B12025550401"),
            MAIN,
            &[],
        )
        .await;
    assert_eq!(
        list.body["incoming_phone_numbers"][0]["voice_url"],
        VAPI_TWILIO_VOICE_URL
    );

    // Deleting the Vapi number leaves Twilio's URLs as they are.
    let id = text(&first.body["id"]);
    let deleted = s.vapi("DELETE", &format!("/phone-number/{id}"), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        urls("+12025550401"),
        (VAPI_TWILIO_VOICE_URL.into(), VAPI_TWILIO_SMS_URL.into())
    );
}

#[tokio::test]
async fn the_control_endpoints_seed_drift_by_hand() {
    let s = Standins::start().await;

    // A subaccount made by hand, for an org that does not exist.
    let org = "0d3e0000-0000-4000-8000-00000000dead";
    let made = s
        .control(
            "POST",
            "/twilio/accounts",
            Some(json!({"friendlyName": format!("org:{org}")})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let sub = text(&made.body["sid"]);
    assert!(sub.starts_with("AC") && sub.len() == 34, "{sub}");
    let own = (sub.as_str(), subaccount_token(&sub));
    let read = s
        .twilio(
            "GET",
            &format!("/Accounts/{sub}.json"),
            (own.0, own.1.as_str()),
            &[],
        )
        .await;
    assert_eq!(read.status, 200, "its token is subaccount_token(sid)");
    assert_eq!(read.body["friendly_name"], format!("org:{org}"));
    let long = s
        .control(
            "POST",
            "/twilio/accounts",
            Some(json!({"friendlyName": "x".repeat(65)})),
        )
        .await;
    assert_eq!(long.status, 400, "{}", long.body);

    // A number bought in the console.
    let bought = s
        .control(
            "POST",
            "/twilio/numbers",
            Some(json!({"accountSid": sub, "phoneNumber": "+12025550501"})),
        )
        .await;
    assert_eq!(bought.status, 201, "{}", bought.body);
    let pn = text(&bought.body["sid"]);
    assert!(pn.starts_with("PN") && pn.len() == 34, "{pn}");
    assert_eq!(
        bought.body,
        json!({"sid": pn, "accountSid": sub, "phoneNumber": "+12025550501",
               "friendlyName": "(202) 555-0501", "voiceUrl": "", "smsUrl": ""})
    );
    let fetched = s
        .twilio(
            "GET",
            &format!("/Accounts/{sub}/IncomingPhoneNumbers/{pn}.json"),
            MAIN,
            &[],
        )
        .await;
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert_eq!(fetched.body["phone_number"], "+12025550501");
    for (body, status) in [
        (
            json!({"accountSid": sub, "phoneNumber": "+12025550501"}),
            409,
        ),
        (
            json!({"accountSid": DEMO_SUBACCOUNT, "phoneNumber": "+12025550501"}),
            409,
        ),
        (
            json!({"accountSid": "AC0123456789abcdef0123456789abcdef", "phoneNumber": "+12025550502"}),
            404,
        ),
        (json!({"accountSid": sub, "phoneNumber": "2025550502"}), 400),
        (json!({"accountSid": sub}), 400),
        (
            json!({"accountSid": sub, "phoneNumber": "+12025550502", "extra": 1}),
            400,
        ),
    ] {
        let a = s
            .control("POST", "/twilio/numbers", Some(body.clone()))
            .await;
        assert_eq!(a.status, status, "{body}: {}", a.body);
        assert!(a.body["message"].is_string(), "{}", a.body);
    }
    // Bought long ago, named as a purchase would name it.
    let aged = s
        .control(
            "POST",
            "/twilio/numbers",
            Some(json!({"accountSid": sub, "phoneNumber": "+12025550503",
                        "friendlyName": "purchase 0d3e0000-0000-4000-8000-0000000000b1",
                        "ageSecs": 86400})),
        )
        .await;
    assert_eq!(aged.status, 201, "{}", aged.body);
    let aged_item = s
        .twilio(
            "GET",
            &format!("/Accounts/{sub}/IncomingPhoneNumbers.json?PhoneNumber=%2B12025550503"),
            MAIN,
            &[],
        )
        .await;
    let created = chrono::DateTime::parse_from_rfc2822(&text(
        &aged_item.body["incoming_phone_numbers"][0]["date_created"],
    ))
    .expect("date_created");
    assert!(
        chrono::Utc::now().signed_duration_since(created) > chrono::TimeDelta::hours(23),
        "{created}"
    );

    // Its voice URL changed in the console.
    let changed = s
        .control(
            "POST",
            "/twilio/voice-url",
            Some(json!({"phoneNumber": "+12025550501", "voiceUrl": "https://example.com/voice"})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["voiceUrl"], "https://example.com/voice");
    assert_eq!(
        s.state()["twilio_numbers"][format!("{sub}/{pn}")]["voice_url"],
        "https://example.com/voice"
    );
    let nobody = s
        .control(
            "POST",
            "/twilio/voice-url",
            Some(json!({"phoneNumber": "+12025550599", "voiceUrl": ""})),
        )
        .await;
    assert_eq!(nobody.status, 404, "{}", nobody.body);

    // A Vapi number imported in the dashboard: the Twilio number points at Vapi.
    let assistant = "0d3e0000-0000-4000-8000-0000000000a1";
    let imported = s
        .control(
            "POST",
            "/vapi/numbers",
            Some(json!({"number": "+12025550501", "twilioAccountSid": sub, "assistantId": assistant})),
        )
        .await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let id = text(&imported.body["id"]);
    assert_eq!(imported.body["assistantId"], assistant);
    assert!(
        imported.body.get("twilioAuthToken").is_none(),
        "never a token"
    );
    let at_vapi = s.vapi("GET", &format!("/phone-number/{id}"), None).await;
    assert_eq!(at_vapi.status, 200, "{}", at_vapi.body);
    assert_eq!(at_vapi.body["number"], "+12025550501");
    assert_eq!(at_vapi.body["twilioAccountSid"], sub.as_str());
    assert_eq!(at_vapi.body["assistantId"], assistant);
    assert_eq!(
        s.state()["twilio_numbers"][format!("{sub}/{pn}")]["voice_url"],
        VAPI_TWILIO_VOICE_URL
    );
    // One Twilio does not hold (an orphan at Vapi), without an assistant.
    let orphan = s
        .control(
            "POST",
            "/vapi/numbers",
            Some(json!({"number": "+12025550598", "twilioAccountSid": sub})),
        )
        .await;
    assert_eq!(orphan.status, 201, "{}", orphan.body);
    assert_eq!(orphan.body["assistantId"], Value::Null);
    for body in [
        json!({"number": "+12025550598", "twilioAccountSid": sub, "assistantId": "nope"}),
        json!({"number": "+12025550598", "twilioAccountSid": sub,
               "assistantId": "00000000-0000-4000-8000-000000000000"}),
        json!({"number": "12025550598", "twilioAccountSid": sub}),
        json!({"number": "+12025550598", "twilioAccountSid": "AC1"}),
    ] {
        let a = s.control("POST", "/vapi/numbers", Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
    }

    // Its assistant changed in the dashboard, then detached.
    let other = "0d3e0000-0000-4000-8000-0000000000a2";
    let path = format!("/vapi/numbers/{id}/assistant");
    let moved = s
        .control("POST", &path, Some(json!({"assistantId": other})))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(
        s.vapi("GET", &format!("/phone-number/{id}"), None)
            .await
            .body["assistantId"],
        other
    );
    let detached = s
        .control("POST", &path, Some(json!({"assistantId": null})))
        .await;
    assert_eq!(detached.status, 200, "{}", detached.body);
    assert_eq!(
        s.vapi("GET", &format!("/phone-number/{id}"), None)
            .await
            .body["assistantId"],
        Value::Null
    );
    for (body, status) in [(json!({}), 400), (json!({"assistantId": 7}), 400)] {
        let a = s.control("POST", &path, Some(body.clone())).await;
        assert_eq!(a.status, status, "{body}: {}", a.body);
    }
    let unknown = s
        .control(
            "POST",
            "/vapi/numbers/no-such-id/assistant",
            Some(json!({"assistantId": other})),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // Deleted in the dashboard: Vapi's 404 afterwards; Twilio's URL stays.
    let deleted = s
        .control("DELETE", &format!("/vapi/numbers/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    let gone = s.vapi("GET", &format!("/phone-number/{id}"), None).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(gone.body["statusCode"], 404);
    assert!(gone.body["message"].is_string(), "{}", gone.body);
    assert_eq!(
        s.control("DELETE", &format!("/vapi/numbers/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        s.state()["twilio_numbers"][format!("{sub}/{pn}")]["voice_url"],
        VAPI_TWILIO_VOICE_URL
    );

    // Closed in the console: its numbers are released.
    let closed = s
        .control(
            "POST",
            &format!("/twilio/accounts/{sub}/status"),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["status"], "closed");
    assert_eq!(closed.body["releasedNumbers"], 2);
    assert!(
        s.state()["twilio_numbers"]
            .get(format!("{sub}/{pn}"))
            .is_none()
    );
    for (path, body, status) in [
        (
            "/twilio/accounts/AC0123456789abcdef0123456789abcdef/status".to_owned(),
            json!({"status": "closed"}),
            404,
        ),
        (
            format!("/twilio/accounts/{DEMO_SUBACCOUNT}/status"),
            json!({"status": "gone"}),
            400,
        ),
    ] {
        let a = s.control("POST", &path, Some(body)).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
    }
    let on_closed = s
        .control(
            "POST",
            "/twilio/numbers",
            Some(json!({"accountSid": sub, "phoneNumber": "+12025550504"})),
        )
        .await;
    assert_eq!(on_closed.status, 409, "{}", on_closed.body);
}

#[tokio::test]
async fn a_429_on_the_twilio_lists_carries_retry_after() {
    let s = Standins::start().await;
    let fail = |body: Value| s.control("POST", "/fail", Some(body));
    let accounts = || s.twilio("GET", "/Accounts.json", MAIN, &[]);
    let numbers_path = format!("/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json");
    let numbers = || s.twilio("GET", &numbers_path, MAIN, &[]);

    let planned =
        fail(json!({"endpoint": "accounts_list", "mode": "429", "times": 2, "retryAfter": 7}))
            .await;
    assert_eq!(planned.status, 200, "{}", planned.body);
    assert_eq!(
        planned.body["endpoint_fail"]["accounts_list"],
        json!({"mode": "429", "retryAfter": 7, "remaining": 2})
    );
    // Reading one account is not the list.
    assert_eq!(
        s.twilio(
            "GET",
            &format!("/Accounts/{DEMO_SUBACCOUNT}.json"),
            MAIN,
            &[]
        )
        .await
        .status,
        200
    );
    for _ in 0..2 {
        let a = accounts().await;
        twilio_refusal(&a, 429, 20429);
        assert_eq!(retry_after(&a), Some("7"));
    }
    assert_eq!(accounts().await.status, 200);

    // The numbers list, with the default Retry-After.
    assert_eq!(
        fail(json!({"provider": "twilio", "endpoint": "numbers_list", "mode": "429", "times": 1}))
            .await
            .status,
        200
    );
    let a = numbers().await;
    twilio_refusal(&a, 429, 20429);
    assert_eq!(retry_after(&a), Some("1"));
    assert_eq!(numbers().await.status, 200);

    // The broader endpoints' plans reach the lists too (their names still work).
    assert_eq!(
        fail(json!({"endpoint": "bought", "mode": "429", "times": 1, "retryAfter": 0}))
            .await
            .status,
        200
    );
    let a = numbers().await;
    twilio_refusal(&a, 429, 20429);
    assert_eq!(retry_after(&a), Some("0"));
    assert_eq!(
        fail(json!({"endpoint": "subaccount", "mode": "429", "times": 1}))
            .await
            .status,
        200
    );
    let a = accounts().await;
    twilio_refusal(&a, 429, 20429);
    assert_eq!(retry_after(&a), Some("1"));
    assert_eq!(accounts().await.status, 200);

    // A provider-wide 429, and Vapi's.
    assert_eq!(
        fail(json!({"provider": "twilio", "mode": "429", "times": 1, "retryAfter": 3}))
            .await
            .status,
        200
    );
    assert_eq!(retry_after(&accounts().await), Some("3"));
    assert_eq!(
        fail(json!({"endpoint": "list", "mode": "429", "times": 1, "retryAfter": 2}))
            .await
            .status,
        200
    );
    let v = s.vapi("GET", "/phone-number", None).await;
    assert_eq!((v.status, retry_after(&v)), (429, Some("2")));
    for bad in [
        json!({"endpoint": "accounts_list", "mode": "500", "retryAfter": 1}),
        json!({"endpoint": "accounts_list", "mode": "429", "retryAfter": 3601}),
    ] {
        assert_eq!(fail(bad.clone()).await.status, 400, "{bad}");
    }
}

/// Walks Vapi's phone numbers as `shared::vapi`'s `find_listed` does: newest
/// first, each page bounded by `createdAtLe` of the oldest item seen, repeats
/// skipped by id. Answers every id once (panics on a stuck walk) and the pages
/// read.
async fn walk_vapi(s: &Standins, limit: usize) -> (Vec<String>, usize) {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut until: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/phone-number?limit={limit}");
        if let Some(at) = &until {
            path.push_str(&format!("&createdAtLe={at}"));
        }
        let a = s.vapi("GET", &path, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        pages += 1;
        let page = a.body.as_array().cloned().unwrap_or_default();
        let created: Vec<String> = page.iter().map(|i| text(&i["createdAt"])).collect();
        let mut newest_first = created.clone();
        newest_first.sort_by(|a, b| b.cmp(a));
        assert_eq!(created, newest_first, "newest first");
        let mut fresh = 0;
        for item in &page {
            if seen.insert(text(&item["id"])) {
                fresh += 1;
                order.push(text(&item["id"]));
            }
        }
        if page.len() < limit {
            return (order, pages);
        }
        assert!(
            fresh > 0,
            "a full page of items already seen: the walk is stuck"
        );
        until = created.last().cloned();
    }
}

#[tokio::test]
async fn vapis_list_is_bounded_newest_first_and_walks_by_created_at() {
    let s = Standins::start().await;
    let sub = s
        .control(
            "POST",
            "/twilio/accounts",
            Some(json!({"friendlyName": "org:walk"})),
        )
        .await
        .body["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    for n in 0..25 {
        let a = s
            .control(
                "POST",
                "/vapi/numbers",
                Some(json!({"number": format!("+1202555{:04}", 600 + n), "twilioAccountSid": sub})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    // Limit: at most 1000, Vapi's validation error otherwise.
    let over = s.vapi("GET", "/phone-number?limit=1001", None).await;
    assert_eq!(over.status, 400, "{}", over.body);
    assert_eq!(over.body["statusCode"], 400);
    assert_eq!(over.body["error"], "Bad Request");
    assert!(
        over.body["message"]
            .as_array()
            .is_some_and(|m| m.iter().all(Value::is_string) && !m.is_empty()),
        "{}",
        over.body
    );
    assert_eq!(
        s.vapi("GET", "/phone-number?limit=1000", None).await.status,
        200
    );
    let all = s.vapi("GET", "/phone-number", None).await.body;
    let total = all.as_array().map_or(0, Vec::len);
    assert!(total >= 25, "{all}");
    let item = &all[0];
    for field in ["id", "number", "twilioAccountSid", "createdAt", "updatedAt"] {
        assert!(item[field].is_string(), "{field}: {item}");
    }
    assert_eq!(item["provider"], "twilio");
    assert!(item.get("assistantId").is_some(), "null when none: {item}");
    assert_eq!(item["number"], "+12025550624", "the newest first");

    // The walk sees each once, however the pages fall.
    // (A page of one would only ever show its boundary item again.)
    for limit in [2, 7, 10, 100] {
        let (ids, pages) = walk_vapi(&s, limit).await;
        assert_eq!(ids.len(), total, "limit {limit}");
        assert!(pages >= total / limit, "limit {limit}: {pages} pages");
    }

    // The bounds, at one item's createdAt.
    let at = text(&all[3]["createdAt"]);
    let standins = &s;
    let count = |query: String| async move {
        standins
            .vapi("GET", &format!("/phone-number?limit=1000&{query}"), None)
            .await
            .body
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(format!("createdAtGe={at}")).await, 4);
    assert_eq!(count(format!("createdAtGt={at}")).await, 3);
    assert_eq!(count(format!("createdAtLe={at}")).await, total - 3);
    assert_eq!(count(format!("createdAtLt={at}")).await, total - 4);
    assert_eq!(count(format!("createdAtGe={at}&createdAtLe={at}")).await, 1);
    assert_eq!(count(format!("createdAtGt={at}&createdAtLt={at}")).await, 0);

    // One by its id; an unknown id is Vapi's JSON 404.
    let id = text(&all[0]["id"]);
    let one = s.vapi("GET", &format!("/phone-number/{id}"), None).await;
    assert_eq!((one.status, &one.body), (200, &all[0]));
    let unknown = s.vapi("GET", "/phone-number/no-such-id", None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["statusCode"], 404);
    assert_eq!(unknown.body["error"], "Not Found");
}

#[tokio::test]
async fn a_small_fleet_is_seeded_deterministically_and_uniquely() {
    let s = Standins::start().await;
    let body = json!({"orgs": 3, "numbersPerOrg": 4, "seed": 42});
    let a = s.control("POST", "/fleet", Some(body.clone())).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let fleet = a.body;
    assert_eq!(
        (
            &fleet["subaccounts"],
            &fleet["twilioNumbers"],
            &fleet["vapiNumbers"]
        ),
        (&json!(3), &json!(12), &json!(12))
    );
    let orgs = fleet["fleet"].as_array().expect("described").clone();
    assert_eq!(orgs.len(), 3);
    let mut seen = HashSet::new();
    let mut created = BTreeSet::new();
    for org in &orgs {
        let org_id = text(&org["orgId"]);
        assert!(uuid::Uuid::parse_str(&org_id).is_ok(), "{org}");
        let sub = text(&org["subaccountSid"]);
        assert!(sub.starts_with("AC") && sub.len() == 34, "{sub}");
        assert_eq!(org["friendlyName"], format!("org:{org_id}"));
        assert!(seen.insert(org_id) && seen.insert(sub.clone()));
        let numbers = org["numbers"].as_array().expect("numbers");
        assert_eq!(numbers.len(), 4);
        for (j, n) in numbers.iter().enumerate() {
            let e164 = text(&n["e164"]);
            assert!(
                e164.len() == 12
                    && e164.starts_with("+1")
                    && e164[1..].bytes().all(|b| b.is_ascii_digit()),
                "{e164}"
            );
            for key in ["e164", "pnSid", "vapiId", "purchaseOperationId"] {
                assert!(seen.insert(text(&n[key])), "{key} repeats: {n}");
            }
            assert!(created.insert(text(&n["createdAt"])), "createdAt repeats");
            if j % 4 == 3 {
                assert_eq!(n["assistantId"], Value::Null);
            } else {
                assert_eq!(n["assistantId"], org["assistantId"]);
            }
            // At Vapi, as described.
            let v = s
                .vapi(
                    "GET",
                    &format!("/phone-number/{}", text(&n["vapiId"])),
                    None,
                )
                .await;
            assert_eq!(v.status, 200, "{}", v.body);
            assert_eq!(v.body["number"], n["e164"]);
            assert_eq!(v.body["twilioAccountSid"], sub.as_str());
            assert_eq!(v.body["assistantId"], n["assistantId"]);
            assert_eq!(v.body["createdAt"], n["createdAt"]);
            assert_eq!(v.body["twilioAuthToken"], subaccount_token(&sub));
        }
        // At Twilio: the org's subaccount holds its numbers, bought by purchases and
        // pointed at Vapi, a day ago.
        let list = s
            .twilio(
                "GET",
                &format!("/Accounts/{sub}/IncomingPhoneNumbers.json"),
                MAIN,
                &[],
            )
            .await;
        assert_eq!(list.status, 200, "{}", list.body);
        let held = list.body["incoming_phone_numbers"]
            .as_array()
            .expect("list");
        assert_eq!(held.len(), 4);
        for h in held {
            let described = numbers
                .iter()
                .find(|n| n["pnSid"] == h["sid"])
                .expect("described");
            assert_eq!(h["phone_number"], described["e164"]);
            assert_eq!(
                h["friendly_name"],
                format!("purchase {}", text(&described["purchaseOperationId"]))
            );
            assert_eq!(h["voice_url"], VAPI_TWILIO_VOICE_URL);
            assert_eq!(h["date_created"], described["dateCreated"]);
        }
        let account = s
            .twilio("GET", &format!("/Accounts/{sub}.json"), MAIN, &[])
            .await;
        assert_eq!(account.body["status"], "active");
    }
    let last = chrono::DateTime::parse_from_rfc3339(&text(&fleet["lastCreatedAt"]))
        .expect("lastCreatedAt");
    assert!(
        chrono::Utc::now().signed_duration_since(last) > chrono::TimeDelta::hours(23),
        "a day old by default: {last}"
    );

    // Deterministic: the same seed describes the same fleet (and is refused as held).
    let again = s.control("POST", "/fleet", Some(body)).await;
    assert_eq!(again.status, 409, "{}", again.body);
    let other = s
        .control(
            "POST",
            "/fleet",
            Some(
                json!({"orgs": 2, "numbersPerOrg": 1, "seed": 43, "describe": false, "ageSecs": 0}),
            ),
        )
        .await;
    assert_eq!(other.status, 201, "{}", other.body);
    assert!(other.body.get("fleet").is_none(), "{}", other.body);
    assert_eq!(other.body["twilioNumbers"], 2);
    for bad in [
        json!({"orgs": 0, "numbersPerOrg": 1, "seed": 1}),
        json!({"orgs": 1, "numbersPerOrg": 1001, "seed": 1}),
        json!({"orgs": 100000, "numbersPerOrg": 11, "seed": 1}),
        json!({"orgs": 1, "numbersPerOrg": 1}),
        json!({"orgs": 1, "numbersPerOrg": 1, "seed": 1, "size": 2}),
    ] {
        let a = s.control("POST", "/fleet", Some(bad.clone())).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    let fresh = Standins::start().await;
    let same = fresh
        .control(
            "POST",
            "/fleet",
            Some(json!({"orgs": 3, "numbersPerOrg": 4, "seed": 42})),
        )
        .await;
    assert_eq!(same.status, 201);
    let ids = |f: &Value| -> Vec<Value> {
        f["fleet"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|o| {
                let mut v = vec![o["orgId"].clone(), o["subaccountSid"].clone()];
                for n in o["numbers"].as_array().into_iter().flatten() {
                    v.extend(
                        [
                            "e164",
                            "pnSid",
                            "vapiId",
                            "purchaseOperationId",
                            "assistantId",
                        ]
                        .map(|k| n[k].clone()),
                    );
                }
                v
            })
            .collect()
    };
    assert_eq!(ids(&same.body), ids(&fleet), "the same seed, the same ids");
}

/// The benchmark's scale: 10,000 subaccounts × 10 numbers seeded, Vapi's 100,000
/// numbers walked page by page (limit 1000, `createdAtLe`) and Twilio's 10,000
/// subaccounts walked (PageSize 1000), and a few subaccounts' numbers listed. Each
/// page costs O(page) at the stand-ins, so the whole runs in a few seconds in a
/// debug build (the assertion leaves room for a loaded machine).
#[tokio::test]
async fn a_fleet_of_ten_thousand_orgs_is_seeded_and_walked_quickly() {
    let s = Standins::start().await;
    let rss_before = rss("VmRSS:");
    let started = Instant::now();
    let a = s
        .control(
            "POST",
            "/fleet",
            Some(json!({"orgs": 10000, "numbersPerOrg": 10, "seed": 7, "describe": false})),
        )
        .await;
    let seeded = started.elapsed();
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["vapiNumbers"], 100_000);
    let rss_seeded = rss("VmRSS:");

    let walk = Instant::now();
    let (ids, pages) = walk_vapi(&s, 1000).await;
    let walked = walk.elapsed();
    assert!(ids.len() >= 100_000, "{}", ids.len());
    assert!(pages <= 102, "{pages}");

    let accounts = Instant::now();
    let pages = s
        .pages("/2010-04-01/Accounts.json?PageSize=1000", MAIN)
        .await;
    let sids = items(&pages, "accounts", "sid");
    assert!(once_each(&sids).len() > 10_000, "{}", sids.len());
    let fleet_subs: Vec<&String> = sids
        .iter()
        .zip(items(&pages, "accounts", "friendly_name"))
        .filter(|(sid, name)| name.starts_with("org:") && sid.as_str() != DEMO_SUBACCOUNT)
        .map(|(sid, _)| sid)
        .take(5)
        .collect();
    for sub in fleet_subs {
        let list = s
            .pages(
                &format!("/2010-04-01/Accounts/{sub}/IncomingPhoneNumbers.json?PageSize=1000"),
                MAIN,
            )
            .await;
        let held = items(&list, "incoming_phone_numbers", "voice_url");
        if held.len() == 10 {
            assert!(held.iter().all(|u| u == VAPI_TWILIO_VOICE_URL));
        }
    }
    let listed = accounts.elapsed();
    let total = started.elapsed();
    eprintln!(
        "fleet 10000x10: seeded in {seeded:?}, Vapi walk ({pages} pages) {walked:?}, accounts and numbers {listed:?}, total {total:?}; test process RSS {rss_before} kB before seeding, {rss_seeded} kB after, peak {} kB",
        rss("VmHWM:"),
        pages = (ids.len() / 1000) + 1
    );
    assert!(total < Duration::from_secs(30), "{total:?}");
}
