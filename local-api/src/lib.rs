//! The whole API on localhost, for people and for the browser and contract tests:
//!
//! - [`gateway`]: what API Gateway does in front of the functions — verifies a bearer
//!   JWT ([`authorizer`]: RS256 as deployed, its JWKS at `/.well-known/jwks.json`,
//!   checking `kid`, `exp`, `nbf`, `iss`, `aud`), builds
//!   the same HTTP API 2.0 event Lambda receives, with the claims under
//!   `requestContext.authorizer.jwt`, and calls the functions' own handlers.
//! - [`standins`]: stateful Vapi and Twilio stand-ins that speak their APIs
//!   (credentials, subaccounts, number search, purchase, import, routing, release,
//!   prices), check auth and bodies, answer the providers' error JSON, and can be
//!   told to fail, per provider or per endpoint.
//! - [`demo`]: a demo org with a credential and managed numbers, held at the
//!   stand-ins as if the platform had bought them.
//! - [`database`]: the owner migrates and seeds; the functions log in as their own
//!   roles (`telephony_route`, `telephony_read`), as deployed.
//! - [`reconcile`]: reconcile on a schedule (`LOCAL_RECONCILE_SECS`) and on demand
//!   (`POST /__control/reconcile`), as the deployed stack runs it.
//! - [`server`]: starts all of it (and the telephony page on its own origin).

pub mod audit;
pub mod authorizer;
pub mod database;
pub mod demo;
pub mod gateway;
pub mod reconcile;
pub mod server;
pub mod standins;
