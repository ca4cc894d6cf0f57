//! Who is calling: the org and subject from the claims API Gateway's JWT authorizer
//! verified (`requestContext.authorizer.jwt`). Never from the body or the path.

use std::collections::HashMap;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::config::IdentityConfig;
use crate::error::ApiError;
use crate::ids::OrgId;

/// The longest `sub` the audit log records (`audit_log.actor`, 1 to 256 characters).
pub const MAX_SUBJECT_CHARS: usize = 256;

/// Whether `subject` can be written to the audit log as it is. A token whose `sub`
/// cannot is refused (401 `unrecordable_subject`) before anything happens, rather
/// than recorded altered or escaped: the audit row must name exactly who acted, as
/// the identity provider wrote it, and read as what it is. So no control character
/// (Unicode category Cc), and no format character (category Cf: U+202E right-to-left
/// override and the other bidirectional controls, zero-width spaces and joiners
/// U+200B–U+200F, U+2060–U+2064, U+FEFF…), which are invisible or reorder the text
/// around them, so a `sub` carrying one can read as someone else in the log; nor
/// U+2028/U+2029, the line and paragraph separators, which break a line as `\n` does.
fn recordable(subject: &str) -> bool {
    subject.chars().count() <= MAX_SUBJECT_CHARS
        && !subject
            .chars()
            .any(|c| c.is_control() || is_format_char(c) || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Unicode's format characters (General_Category Cf), as of Unicode 18.0
/// (`DerivedGeneralCategory.txt`). A test holds this table against the
/// `unicode-properties` crate's full table, so a newer Unicode that adds one fails it.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is a format character (Unicode General_Category Cf).
fn is_format_char(c: char) -> bool {
    FORMAT_CHARS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The verified caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub org_id: OrgId,
    /// The JWT `sub`: who acted, for the audit log.
    pub subject: String,
    scopes: Vec<String>,
}

impl Caller {
    /// From the authorizer context of `req`. Also records the org id on the current
    /// request span, so every later log line of the request carries it.
    pub fn from_request(req: &Request, cfg: &IdentityConfig) -> Result<Self, ApiError> {
        let jwt = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref())
            }
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let Some(jwt) = jwt else {
            return Err(ApiError::unauthenticated(
                "no verified token: the request carries no JWT authorizer claims",
            ));
        };
        let caller = Self::from_claims(&jwt.claims, jwt.scopes.as_deref(), cfg)?;
        tracing::Span::current().record("org_id", tracing::field::display(caller.org_id));
        Ok(caller)
    }

    /// From the claims map (API Gateway hands every claim over as a string).
    pub fn from_claims(
        claims: &HashMap<String, String>,
        scopes: Option<&[String]>,
        cfg: &IdentityConfig,
    ) -> Result<Self, ApiError> {
        let org = claims
            .get(&cfg.org_claim)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::unauthenticated(format!("the token carries no {} claim", cfg.org_claim))
            })?;
        let org_id = org.parse().map_err(|_| {
            ApiError::unauthenticated(format!("the token's {} claim is not a UUID", cfg.org_claim))
        })?;
        let subject = claims
            .get("sub")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("the token carries no sub claim"))?
            .to_owned();
        if !recordable(&subject) {
            return Err(ApiError::Unauthenticated {
                code: "unrecordable_subject",
                message: format!(
                    "the token's sub claim must be 1 to {MAX_SUBJECT_CHARS} characters without control or invisible format characters"
                ),
            });
        }
        // Scopes arrive in the authorizer's `scopes` list and/or in the `scope` (OAuth)
        // or `scp` claim, space separated; array claims arrive as "[a b]".
        let mut all: Vec<String> = scopes.unwrap_or_default().to_vec();
        for name in ["scope", "scp"] {
            if let Some(v) = claims.get(name) {
                let v = v.trim().trim_start_matches('[').trim_end_matches(']');
                all.extend(
                    v.split([' ', ','])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        Ok(Self {
            org_id,
            subject,
            scopes: all,
        })
    }

    /// The platform acting on its own (a scheduled job), for the audit log.
    pub fn system(org_id: OrgId, subject: &str) -> Self {
        Self {
            org_id,
            subject: subject.to_owned(),
            scopes: Vec::new(),
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// 403 unless the token carries `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this action needs the {scope} scope, which the token does not carry"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "7b0c2e1a-3f4d-4c5b-9a8e-1f2d3c4b5a69";

    fn claims(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn org_and_subject_from_claims() {
        let cfg = IdentityConfig::default();
        let c = Caller::from_claims(&claims(&[("org_id", ORG), ("sub", "user-1")]), None, &cfg)
            .unwrap();
        assert_eq!(c.org_id.to_string(), ORG);
        assert_eq!(c.subject, "user-1");
    }

    #[test]
    fn missing_empty_or_malformed_org_is_401() {
        let cfg = IdentityConfig::default();
        for bad in [
            claims(&[("sub", "u")]),
            claims(&[("org_id", ""), ("sub", "u")]),
            claims(&[("org_id", "acme"), ("sub", "u")]),
            claims(&[("org_id", ORG)]),
        ] {
            let e = Caller::from_claims(&bad, None, &cfg).unwrap_err();
            assert_eq!(e.status(), 401, "{bad:?}");
        }
    }

    #[test]
    fn unrecordable_subject_is_401_before_anything() {
        let cfg = IdentityConfig::default();
        let long = "u".repeat(MAX_SUBJECT_CHARS + 1);
        for bad in [long.as_str(), "user\u{0}1", "user\n1", "a\u{7f}b"] {
            let e = Caller::from_claims(&claims(&[("org_id", ORG), ("sub", bad)]), None, &cfg)
                .unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (401, "unrecordable_subject"),
                "{bad:?}"
            );
        }
        let longest = "é".repeat(MAX_SUBJECT_CHARS);
        assert!(
            Caller::from_claims(&claims(&[("org_id", ORG), ("sub", &longest)]), None, &cfg).is_ok()
        );
    }

    #[test]
    fn a_subject_with_format_characters_is_refused_like_control_characters() {
        let cfg = IdentityConfig::default();
        for bad in [
            "admin\u{202E}nimda",      // right-to-left override: shows as "adminadmin"
            "ad\u{200B}min",           // zero-width space
            "ad\u{200C}min",           // zero-width non-joiner
            "ad\u{200D}min",           // zero-width joiner
            "\u{200E}admin",           // left-to-right mark
            "admin\u{200F}",           // right-to-left mark
            "ad\u{2060}min",           // word joiner
            "ad\u{2064}min",           // invisible plus
            "\u{FEFF}admin",           // zero-width no-break space (BOM)
            "admin\u{2066}x\u{2069}",  // isolates
            "ad\u{00AD}min",           // soft hyphen
            "admin\u{E0041}",          // tag latin capital A
            "user\u{2028}forged line", // line separator
            "user\u{2029}1",           // paragraph separator
        ] {
            let e = Caller::from_claims(&claims(&[("org_id", ORG), ("sub", bad)]), None, &cfg)
                .unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (401, "unrecordable_subject"),
                "{bad:?}"
            );
        }
        // Letters and marks of any script, emoji (with their variation selector, Mn,
        // and the joiner-free sequence) and ordinary punctuation are recorded.
        for good in [
            "auth0|5f7c8ec7c33c6c004bbafe82",
            "Émilie Dupont",
            "Łukasz",
            "مستخدم",
            "ユーザー",
            "user+tag@example.com",
            "👍\u{FE0F}",
        ] {
            let c = Caller::from_claims(&claims(&[("org_id", ORG), ("sub", good)]), None, &cfg);
            assert_eq!(c.ok().map(|c| c.subject), Some(good.to_owned()), "{good:?}");
        }
    }

    #[test]
    fn the_format_character_table_is_unicodes_category_cf() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        assert!(FORMAT_CHARS.windows(2).all(|w| w[0].1 < w[1].0), "sorted");
        let mismatches: Vec<String> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|&c| is_format_char(c) != (c.general_category() == GeneralCategory::Format))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        assert!(mismatches.is_empty(), "differ from Cf: {mismatches:?}");
    }

    #[test]
    fn claim_name_is_configurable() {
        let cfg = IdentityConfig {
            org_claim: "custom:org".into(),
            write_scope: "w".into(),
            read_scope: "r".into(),
            offboard_scope: "o".into(),
        };
        let c = Caller::from_claims(&claims(&[("custom:org", ORG), ("sub", "u")]), None, &cfg);
        assert!(c.is_ok());
        let c = Caller::from_claims(&claims(&[("org_id", ORG), ("sub", "u")]), None, &cfg);
        assert_eq!(c.unwrap_err().status(), 401);
    }

    #[test]
    fn scopes_from_list_or_claim() {
        let cfg = IdentityConfig::default();
        let base = [("org_id", ORG), ("sub", "u")];
        let c = Caller::from_claims(&claims(&base), Some(&["telephony:write".to_string()]), &cfg)
            .unwrap();
        assert!(c.require_scope("telephony:write").is_ok());
        let mut with_claim = base.to_vec();
        with_claim.push(("scope", "openid telephony:write"));
        let c = Caller::from_claims(&claims(&with_claim), None, &cfg).unwrap();
        assert!(c.has_scope("telephony:write"));
        let c = Caller::from_claims(&claims(&base), None, &cfg).unwrap();
        assert_eq!(
            c.require_scope("telephony:write").unwrap_err().status(),
            403
        );
        let mut look_alike = base.to_vec();
        look_alike.push(("scope", "telephony:write-not"));
        let c = Caller::from_claims(&claims(&look_alike), None, &cfg).unwrap();
        assert!(!c.has_scope("telephony:write"));
    }
}
