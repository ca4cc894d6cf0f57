//! `search-numbers` — `GET /api/managed-telephony/available-numbers`.
//!
//! Query: `country` (an assigned ISO 3166-1 alpha-2 code, either case, default
//! `US`; a well-formed code that is no country, `XX`, is a 400 naming it), `type`
//! (`local` | `toll_free`, default `local`), `areaCode` (US/CA, three digits),
//! `contains` (2–16 digits, letters or `*`), `limit` (1–50, default 20),
//! `addressRequired` (`none`, the default; `any` is refused with 422
//! `address_required_unsupported`: regulatory bundles are out of scope). A bad
//! filter is a 400 naming the parameter.
//!
//! Answers `200 {country, type, numbers: [{phoneNumber, friendlyName, locality,
//! region, isoCountry, capabilities {voice, sms, mms}, addressRequirements,
//! monthlyPrice {amount, currency} | null}], pricesAvailable}`. A result is not a
//! reservation. Needs only the Twilio main account (no database): Twilio's search
//! and its Pricing API (prices cached per instance for an hour), concurrently.
//!
//! Needs the read scope (`READ_SCOPE`, default `telephony:read`; 403 `forbidden`
//! before Twilio is called), as the template's authorizer does. The write scope
//! does not imply it (least privilege: a frontend that searches and buys asks for
//! both).

use lambda_http::{Body, Request, RequestExt, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::http::{Reply, lambda_deadline, reject_unknown_query, respond};
use shared::identity::Caller;
use shared::search::{self, PriceBook, SearchQuery};
use shared::steps::StepsConfig;
use shared::twilio::TwilioClient;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct State {
    pub twilio: TwilioClient,
    pub prices: PriceBook,
    pub identity: IdentityConfig,
    pub steps: StepsConfig,
}

impl State {
    /// Loads the Twilio main account, the only secret this route needs.
    pub async fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> Result<Self, Error> {
        let secrets = SecretLoader::new(env, aws);
        let main = secrets.twilio_main().await?;
        Ok(Self {
            twilio: ClientKit::from_env(env, &secrets)?.twilio_main(main),
            prices: PriceBook::default(),
            identity: IdentityConfig::from_env(env),
            steps: StepsConfig::from_env(env)?,
        })
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "search-numbers", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.read_scope)?;
        reject_unknown_query(&req, search::PARAMETERS)?;
        let params = req.query_string_parameters_ref();
        let query =
            SearchQuery::parse(|name| params.and_then(|q| q.all(name)).unwrap_or_default())?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let found = search::search(&state.twilio, &state.prices, &query, deadline).await?;
        Reply::ok(found)
    })
    .await
}
