use super::*;

const SUB: &str = "AC0000000000000000000000000000aa01";
const PN: &str = "PN0000000000000000000000000000aa01";
const ASSISTANT: &str = "0e5d1c2b-0000-4000-8000-000000000001";
const OTHER_ASSISTANT: &str = "0e5d1c2b-0000-4000-8000-000000000002";

fn at(hours_ago: i64) -> DateTime<Utc> {
    now() - Duration::hours(hours_ago)
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .expect("time")
        .to_utc()
}

fn clock() -> Clock {
    Clock {
        now: now(),
        grace: Duration::hours(1),
        vapi_read_at: now() - Duration::minutes(5),
    }
}

fn account(status: &str) -> ListedAccount {
    ListedAccount {
        sid: SUB.into(),
        friendly_name: Some(format!("org:{}", org())),
        status: status.into(),
        date_created: Some(at(48)),
        token: None,
    }
}

fn org() -> Uuid {
    Uuid::from_u128(0x1111)
}

fn held(number: &str, sid: &str, friendly: &str, voice_url: &str, hours_ago: i64) -> HeldNumber {
    HeldNumber {
        sid: sid.into(),
        phone_number: number.into(),
        friendly_name: Some(friendly.into()),
        voice_url: Some(voice_url.into()),
        date_created: Some(at(hours_ago)),
    }
}

fn row(number: &str, vapi: Option<&str>) -> LiveRow {
    LiveRow {
        id: Uuid::from_u128(0x2222),
        org_id: org(),
        phone_number: number.into(),
        status: "active".into(),
        twilio_phone_sid: Some(PN.into()),
        subaccount_sid: Some(SUB.into()),
        vapi_phone_id: vapi.map(str::to_owned),
        assistant_id: Some(ASSISTANT.into()),
        assistant_pending: false,
        route_gave_up: false,
        twilio_token_fp: None,
        claimed: false,
        created_at: at(48),
        updated_at: at(48),
    }
}

fn vapi(id: &str, number: &str, assistant: Option<&str>, hours_ago: i64) -> VapiNumber {
    VapiNumber {
        id: id.into(),
        number: number.into(),
        twilio_account_sid: Some(SUB.into()),
        assistant_id: assistant.map(str::to_owned),
        created_at: Some(at(hours_ago)),
        twilio_token: None,
    }
}

const URL: &str = "https://api.vapi.ai/twilio/inbound_call";

/// No token fingerprints known: `token_mismatch` is not compared.
static NO_TOKENS: std::sync::LazyLock<TokenFingerprints> =
    std::sync::LazyLock::new(TokenFingerprints::default);

/// Compare with these sources (the org exists and records SUB).
fn run(held: &[HeldNumber], vapi: &[VapiNumber], rows: &[LiveRow]) -> Comparison {
    let acc = account("active");
    let refs: Vec<&VapiNumber> = vapi.iter().collect();
    let by_id: HashMap<&str, &VapiNumber> = vapi.iter().map(|v| (v.id.as_str(), v)).collect();
    let scope = Scope {
        subaccount: SUB,
        org: Some(org()),
        org_exists: true,
        org_recorded_subaccount: Some(SUB),
        org_offboarding: false,
        org_offboarded: false,
        account: Some(&acc),
        held: Some(held),
        vapi: &refs,
        vapi_by_id: &by_id,
        vapi_complete: true,
        rows,
        org_rotating: false,
        slot_token_fp: None,
        tokens: &NO_TOKENS,
    };
    compare(&scope, &clock(), URL)
}

fn kinds(c: &Comparison) -> Vec<DriftKind> {
    c.candidates.iter().map(|c| c.kind).collect()
}

#[test]
fn agreeing_sources_find_nothing() {
    let c = run(
        &[held("+14155550100", PN, "purchase x", URL, 48)],
        &[vapi("v1", "+14155550100", Some(ASSISTANT), 48)],
        &[row("+14155550100", Some("v1"))],
    );
    assert_eq!(c, Comparison::default());
}

#[test]
fn a_number_of_ours_without_a_row_is_recorded_for_release_with_its_import() {
    let op = Uuid::from_u128(0x3333);
    let c = run(
        &[held("+14155550100", PN, &format!("purchase {op}"), URL, 48)],
        &[vapi("v1", "+14155550100", None, 48)],
        &[],
    );
    assert_eq!(kinds(&c), [DriftKind::BilledUnknown]);
    assert_eq!(
        c.candidates[0].action,
        Action::RecordRelease {
            org: org(),
            number_sid: PN.into(),
            operation_id: op,
            vapi_phone_id: Some("v1".into()),
        }
    );
}

#[test]
fn a_number_bought_by_hand_and_its_import_are_flagged_only() {
    let c = run(
        &[held("+14155550100", PN, "(415) 555-0100", URL, 48)],
        &[vapi("v1", "+14155550100", None, 48)],
        &[],
    );
    assert_eq!(kinds(&c), [DriftKind::BilledUnknown, DriftKind::VapiOrphan]);
    assert_eq!(c.candidates[0].action, Action::Flag);
    // Deleting its import would leave a number that bills and answers nothing.
    assert_eq!(c.candidates[1].action, Action::Flag);
    // An import of our subaccount with no number at Twilio is ours to delete.
    let c = run(&[], &[vapi("v2", "+14155550109", None, 48)], &[]);
    assert_eq!(
        c.candidates[0].action,
        Action::DeleteAtVapi { id: "v2".into() }
    );
}

#[test]
fn nothing_is_repaired_under_a_subaccount_the_org_does_not_record_or_while_it_offboards() {
    let acc = account("active");
    let v = [vapi("v2", "+14155550109", None, 48)];
    let refs: Vec<&VapiNumber> = v.iter().collect();
    let by_id: HashMap<&str, &VapiNumber> = v.iter().map(|v| (v.id.as_str(), v)).collect();
    let held_numbers = [held(
        "+14155550100",
        PN,
        "purchase 00000000-0000-0000-0000-000000003333",
        URL,
        48,
    )];
    let mut scope = Scope {
        subaccount: SUB,
        org: Some(org()),
        org_exists: true,
        org_recorded_subaccount: Some("AC0000000000000000000000000000aa02"),
        org_offboarding: false,
        org_offboarded: false,
        account: Some(&acc),
        held: Some(&held_numbers),
        vapi: &refs,
        vapi_by_id: &by_id,
        vapi_complete: true,
        rows: &[],
        org_rotating: false,
        slot_token_fp: None,
        tokens: &NO_TOKENS,
    };
    let c = compare(&scope, &clock(), URL);
    let orphan = c
        .candidates
        .iter()
        .find(|c| c.kind == DriftKind::VapiOrphan);
    assert_eq!(orphan.map(|c| &c.action), Some(&Action::Flag), "{c:?}");
    scope.org_recorded_subaccount = Some(SUB);
    scope.org_offboarding = true;
    let c = compare(&scope, &clock(), URL);
    assert!(
        c.candidates.iter().all(|c| c.action == Action::Flag),
        "{c:?}"
    );
}

#[test]
fn a_change_reconcile_still_sends_is_undecided_and_one_it_gave_up_stays_flagged() {
    let mut pending = row("+14155550100", Some("v1"));
    pending.assistant_pending = true;
    let sources = (
        [held("+14155550100", PN, "purchase x", URL, 48)],
        [vapi("v1", "+14155550100", Some(OTHER_ASSISTANT), 48)],
    );
    let c = run(&sources.0, &sources.1, std::slice::from_ref(&pending));
    assert!(c.candidates.is_empty(), "{c:?}");
    assert_eq!(c.skipped, ["+14155550100"]);
    pending.route_gave_up = true;
    let c = run(&sources.0, &sources.1, &[pending]);
    assert_eq!(kinds(&c), [DriftKind::AssistantMismatch]);
    assert_eq!(c.candidates[0].action, Action::Flag);
}

#[test]
fn a_voice_url_is_kept_without_credentials_or_query() {
    let c = run(
        &[held(
            "+14155550100",
            PN,
            "purchase x",
            "https://user:secret@example.com/voice?token=abc",
            48,
        )],
        &[vapi("v1", "+14155550100", Some(ASSISTANT), 48)],
        &[row("+14155550100", Some("v1"))],
    );
    let detail = c.candidates[0].detail.to_string();
    assert!(
        !detail.contains("secret") && !detail.contains("abc"),
        "{detail}"
    );
    assert!(detail.contains("https://example.com/voice"), "{detail}");
}

#[test]
fn fresh_or_claimed_numbers_are_not_drift_yet() {
    let fresh = run(&[held("+14155550100", PN, "purchase x", URL, 0)], &[], &[]);
    assert!(fresh.candidates.is_empty());
    assert_eq!(fresh.skipped, ["+14155550100"]);
    let mut claimed = row("+14155550100", Some("v1"));
    claimed.claimed = true;
    claimed.assistant_id = Some(OTHER_ASSISTANT.into());
    let c = run(
        &[],
        &[vapi("v1", "+14155550100", Some(ASSISTANT), 48)],
        &[claimed],
    );
    assert!(c.candidates.is_empty(), "{c:?}");
    let young_import = run(&[], &[vapi("v9", "+14155550199", None, 0)], &[]);
    assert!(young_import.candidates.is_empty());
}

#[test]
fn an_import_a_purchase_may_still_adopt_is_no_orphan() {
    let mut provisioning = row("+14155550100", None);
    provisioning.status = "provisioning".into();
    let c = run(
        &[],
        &[vapi("v1", "+14155550100", None, 48)],
        &[provisioning],
    );
    assert!(c.candidates.is_empty(), "{c:?}");
}

#[test]
fn another_assistant_at_vapi_is_resent_unless_a_change_is_pending() {
    let c = run(
        &[held("+14155550100", PN, "purchase x", URL, 48)],
        &[vapi("v1", "+14155550100", Some(OTHER_ASSISTANT), 48)],
        &[row("+14155550100", Some("v1"))],
    );
    assert_eq!(kinds(&c), [DriftKind::AssistantMismatch]);
    assert!(
        matches!(&c.candidates[0].action, Action::ResendAssistant { assistant, .. } if assistant == ASSISTANT)
    );
    let mut pending = row("+14155550100", Some("v1"));
    pending.assistant_pending = true;
    let c = run(
        &[held("+14155550100", PN, "purchase x", URL, 48)],
        &[vapi("v1", "+14155550100", Some(OTHER_ASSISTANT), 48)],
        &[pending],
    );
    assert!(c.candidates.is_empty());
    // Changed after Vapi's list was read: the list may be behind.
    let mut changed = row("+14155550100", Some("v1"));
    changed.updated_at = now() - Duration::minutes(1);
    let c = run(
        &[held("+14155550100", PN, "purchase x", URL, 48)],
        &[vapi("v1", "+14155550100", Some(OTHER_ASSISTANT), 48)],
        &[changed],
    );
    assert!(c.candidates.is_empty());
}

#[test]
fn a_vapi_number_gone_and_a_number_twilio_dropped_wait_for_confirmation() {
    let c = run(&[], &[], &[row("+14155550100", Some("v1"))]);
    assert_eq!(
        kinds(&c),
        [DriftKind::CarrierMissing, DriftKind::VapiMissing]
    );
    assert_eq!(
        c.candidates[0].action,
        Action::ConfirmCarrierMissing {
            number_sid: PN.into()
        }
    );
    assert_eq!(
        c.candidates[1].action,
        Action::ConfirmVapiMissing { id: "v1".into() }
    );
}

#[test]
fn a_voice_url_that_is_not_vapis_is_flagged() {
    let c = run(
        &[held(
            "+14155550100",
            PN,
            "purchase x",
            "https://example.com/voice",
            48,
        )],
        &[vapi("v1", "+14155550100", Some(ASSISTANT), 48)],
        &[row("+14155550100", Some("v1"))],
    );
    assert_eq!(kinds(&c), [DriftKind::VoiceUrlMismatch]);
}

#[test]
fn subaccounts_named_after_no_org_or_closed_under_an_org_are_flagged() {
    let acc = account("active");
    let none: HashMap<&str, &VapiNumber> = HashMap::new();
    let mut scope = Scope {
        subaccount: SUB,
        org: Some(org()),
        org_exists: false,
        org_recorded_subaccount: None,
        org_offboarding: false,
        org_offboarded: false,
        account: Some(&acc),
        held: Some(&[]),
        vapi: &[],
        vapi_by_id: &none,
        vapi_complete: true,
        rows: &[],
        org_rotating: false,
        slot_token_fp: None,
        tokens: &NO_TOKENS,
    };
    let c = compare(&scope, &clock(), URL);
    assert_eq!(kinds(&c), [DriftKind::SubaccountOrphan]);
    assert_eq!(c.candidates[0].org, None);
    let closed = account("closed");
    scope.org_exists = true;
    scope.org_recorded_subaccount = Some(SUB);
    scope.account = Some(&closed);
    scope.held = None;
    assert_eq!(
        kinds(&compare(&scope, &clock(), URL)),
        [DriftKind::SubaccountOrphan]
    );
    // Closed on purpose: the org is being, or was, offboarded.
    scope.org_offboarding = true;
    assert!(compare(&scope, &clock(), URL).candidates.is_empty());
    scope.org_offboarding = false;
    scope.org_offboarded = true;
    assert!(compare(&scope, &clock(), URL).candidates.is_empty());
    scope.org_offboarded = false;
    scope.account = None;
    assert_eq!(
        kinds(&compare(&scope, &clock(), URL)),
        [DriftKind::SubaccountOrphan]
    );
    // The org's own, active: nothing.
    scope.account = Some(&acc);
    scope.held = Some(&[]);
    assert!(compare(&scope, &clock(), URL).candidates.is_empty());
    // Just created by a purchase that has not recorded it on the org yet.
    let mut fresh = account("active");
    fresh.date_created = Some(now());
    scope.org_recorded_subaccount = None;
    scope.account = Some(&fresh);
    let c = compare(&scope, &clock(), URL);
    assert!(c.candidates.is_empty(), "{c:?}");
    assert_eq!(c.skipped, [SUB]);
}

#[test]
fn every_kind_has_a_stable_code_the_migration_lists() {
    // The latest migration that sets the kinds' CHECK.
    let migration = include_str!("../../../../migrations/V9__token_rotation.sql");
    for k in DriftKind::ALL {
        assert_eq!(DriftKind::from_code(k.code()), Some(k));
        assert!(
            migration.contains(&format!("'{}'", k.code())),
            "{}",
            k.code()
        );
    }
    assert_eq!(
        purchase_operation(Some("purchase 00000000-0000-0000-0000-000000003333")),
        Some(Uuid::from_u128(0x3333))
    );
    assert_eq!(purchase_operation(Some("purchase later")), None);
    assert_eq!(purchase_operation(None), None);
}

/// `token_mismatch`, with the subaccount's current token fingerprinted as "cur".
fn run_tokens(
    vapi_numbers: &[VapiNumber],
    rows: &[LiveRow],
    tokens: &TokenFingerprints,
    rotating: bool,
    recorded: &str,
) -> Comparison {
    let acc = account("active");
    let held_numbers: Vec<HeldNumber> = rows
        .iter()
        .map(|r| {
            held(
                &r.phone_number,
                PN,
                "purchase 00000000-0000-0000-0000-000000003333",
                URL,
                48,
            )
        })
        .collect();
    let refs: Vec<&VapiNumber> = vapi_numbers.iter().collect();
    let by_id: HashMap<&str, &VapiNumber> =
        vapi_numbers.iter().map(|v| (v.id.as_str(), v)).collect();
    let scope = Scope {
        subaccount: SUB,
        org: Some(org()),
        org_exists: true,
        org_recorded_subaccount: Some(recorded),
        org_offboarding: false,
        org_offboarded: false,
        account: Some(&acc),
        held: Some(&held_numbers),
        vapi: &refs,
        vapi_by_id: &by_id,
        vapi_complete: true,
        rows,
        org_rotating: rotating,
        slot_token_fp: None,
        tokens,
    };
    compare(&scope, &clock(), URL)
}

fn mismatches(c: &Comparison) -> Vec<&Candidate> {
    c.candidates
        .iter()
        .filter(|c| c.kind == DriftKind::TokenMismatch)
        .collect()
}

#[test]
fn a_vapi_number_holding_another_token_than_the_subaccounts_opens_an_adopt_job() {
    let v = vapi("v1", "+14155550100", Some(ASSISTANT), 48);
    let r = row("+14155550100", Some("v1"));
    let tokens = |vapi_fp: Option<&str>| TokenFingerprints {
        account: Some("cur".into()),
        vapi: vapi_fp
            .map(|fp| [("v1".to_owned(), fp.to_owned())].into())
            .unwrap_or_default(),
    };
    // Vapi reports the old token.
    let c = run_tokens(
        std::slice::from_ref(&v),
        std::slice::from_ref(&r),
        &tokens(Some("old")),
        false,
        SUB,
    );
    let m = mismatches(&c);
    assert_eq!(m.len(), 1, "{c:?}");
    assert_eq!(
        m[0].action,
        Action::AdoptToken {
            org: org(),
            vapi_phone_id: Some("v1".into())
        }
    );
    assert_eq!(m[0].detail["compared"], "vapi");
    // Vapi reports the current one: nothing, whatever the row recorded.
    let mut stale = r.clone();
    stale.twilio_token_fp = Some("old".into());
    let c = run_tokens(
        std::slice::from_ref(&v),
        std::slice::from_ref(&stale),
        &tokens(Some("cur")),
        false,
        SUB,
    );
    assert!(mismatches(&c).is_empty(), "{c:?}");
    // Vapi does not say: what this service last sent counts.
    let c = run_tokens(
        std::slice::from_ref(&v),
        std::slice::from_ref(&stale),
        &tokens(None),
        false,
        SUB,
    );
    assert_eq!(mismatches(&c)[0].detail["compared"], "recorded");
    // Neither known: not compared.
    let c = run_tokens(
        std::slice::from_ref(&v),
        std::slice::from_ref(&r),
        &tokens(None),
        false,
        SUB,
    );
    assert!(mismatches(&c).is_empty(), "{c:?}");
    // While the org's token is being rotated: left alone (an open finding stays).
    let c = run_tokens(
        std::slice::from_ref(&v),
        std::slice::from_ref(&stale),
        &tokens(Some("old")),
        true,
        SUB,
    );
    assert!(mismatches(&c).is_empty(), "{c:?}");
    assert!(c.skipped.contains(&stale.phone_number), "{c:?}");
    // A subaccount the org does not record: flagged only.
    let c = run_tokens(
        &[v],
        &[stale],
        &tokens(Some("old")),
        false,
        "AC0000000000000000000000000000aa02",
    );
    assert_eq!(mismatches(&c)[0].action, Action::Flag);
}

#[test]
fn a_slot_holding_another_token_than_the_subaccounts_opens_an_adopt_job_even_without_numbers() {
    let acc = account("active");
    let by_id: HashMap<&str, &VapiNumber> = HashMap::new();
    let tokens = TokenFingerprints {
        account: Some("cur".into()),
        vapi: HashMap::new(),
    };
    let mut scope = Scope {
        subaccount: SUB,
        org: Some(org()),
        org_exists: true,
        org_recorded_subaccount: Some(SUB),
        org_offboarding: false,
        org_offboarded: false,
        account: Some(&acc),
        held: Some(&[]),
        vapi: &[],
        vapi_by_id: &by_id,
        vapi_complete: true,
        rows: &[],
        org_rotating: false,
        slot_token_fp: Some("old"),
        tokens: &tokens,
    };
    let c = compare(&scope, &clock(), URL);
    let m = mismatches(&c);
    assert_eq!(m.len(), 1, "{c:?}");
    assert_eq!(m[0].subject, SUB);
    assert_eq!(
        m[0].action,
        Action::AdoptToken {
            org: org(),
            vapi_phone_id: None
        }
    );
    scope.slot_token_fp = Some("cur");
    assert!(mismatches(&compare(&scope, &clock(), URL)).is_empty());
    scope.slot_token_fp = Some("old");
    scope.org_rotating = true;
    let c = compare(&scope, &clock(), URL);
    assert!(mismatches(&c).is_empty());
    assert!(c.skipped.contains(&SUB.to_owned()), "{c:?}");
}

/// Seed 40178 of the fault-schedule test: another org's row of the same E.164
/// (its own purchase, not yet imported) does not keep this subaccount's orphan.
#[test]
fn another_orgs_row_of_the_same_number_does_not_keep_a_vapi_orphan() {
    let mut theirs = row("+14155550100", None);
    theirs.org_id = Uuid::from_u128(0x9999);
    theirs.subaccount_sid = Some("AC0000000000000000000000000000aa09".into());
    theirs.status = "provisioning".into();
    let c = run(&[], &[vapi("v9", "+14155550100", None, 48)], &[theirs]);
    assert!(
        c.candidates
            .iter()
            .any(|c| c.kind == DriftKind::VapiOrphan && c.subject == "v9"),
        "{c:?}"
    );
}
