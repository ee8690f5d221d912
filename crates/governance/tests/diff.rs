//! The semantic diff on variants of the checkout example: reformatting is no change, each kind
//! of edit yields exactly its event, and migration jumps are named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

use flagforge_governance::{diff, forbidden_transitions, module_rules, Change};
use flagforge_model::ir::RulesetIr;

fn checkout(edit: impl Fn(&str, String) -> String) -> RulesetIr {
    let compiled =
        flagforge_compiler::compile_path_edited(&rules_examples::dir("checkout"), |path, text| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            edit(&name, text)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Always from the module's bytes: what a host or `flagforge diff A.wasm B.wasm` sees.
    module_rules(&compiled.module).unwrap()
}

fn original() -> RulesetIr {
    checkout(|_, t| t)
}

fn replace(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "edit target `{from}` not found");
    text.replace(from, to)
}

/// (event, flag, detail) of each change, for exact comparison.
fn events(changes: &[Change]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = changes
        .iter()
        .map(|c| {
            let detail = match c {
                Change::FlagMetadataChanged { field, .. } => field.clone(),
                Change::FlagStateChanged {
                    scope, from, to, ..
                } => {
                    format!("{scope}: {} -> {}", from.join("|"), to.join("|"))
                }
                Change::FlagTargetingChanged { added, removed, .. } => {
                    format!("+{} -{}", added.join(","), removed.join(","))
                }
                Change::FlagDefaultChanged { from, to, .. } => format!("{from} -> {to}"),
                Change::FlagRulesChanged { rules, .. } => format!("{} rule(s)", rules.len()),
                _ => String::new(),
            };
            (c.name().to_owned(), c.flag().key.clone(), detail)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn reformatting_and_reordering_the_sources_is_no_change() {
    let reordered = checkout(|name, text| match name {
        // Keys in another order, flags in another order, other quoting and comments.
        "policy.yaml" => replace(
            replace(
                text,
                "    kind: policy\n    owner: pricing-team\n",
                "    owner: pricing-team   # moved\n    kind: \"policy\"\n",
            ),
            "serve: active\n",
            "serve: 'active'\n",
        ),
        "migration.yaml" => {
            let (head, flags) = text.split_once("flags:\n").unwrap();
            let (first, second) = flags.split_once("\n  - key: LegacyOrderWriteMode").unwrap();
            format!("{head}flags:\n  - key: LegacyOrderWriteMode{second}\n\n{first}\n")
        }
        "ruleset.yaml" => replace(
            text,
            "  pilot_tenants: { members: [acme-fr, globex-de] }\n",
            "",
        )
        .replace(
            "segments:\n",
            "segments:\n  pilot_tenants:\n    members:\n      - globex-de\n      - acme-fr\n",
        ),
        _ => text,
    });
    assert_eq!(events(&diff(Some(&original()), &reordered)), vec![]);
    assert_eq!(diff(Some(&original()), &original()), vec![]);
}

#[test]
fn each_kind_of_edit_yields_exactly_its_event() {
    let edited = checkout(|name, text| match name {
        "policy.yaml" => replace(
            replace(
                text,
                "'market == \"DE\" || market == \"AT\"'",
                "'market == \"DE\" || market == \"AT\" || market == \"CH\"'",
            ),
            "    default: inactive\n",
            "    default: active\n",
        ),
        "ruleset.yaml" => replace(
            text,
            "[fr-paris, fr-lyon, de-berlin, nl-amsterdam]",
            "[fr-paris, de-berlin, nl-amsterdam, nl-rotterdam]",
        ),
        "ops.yaml" => replace(text, "owner: risk-team", "owner: fraud-team"),
        "experience.yaml" => replace(text, "expires: 2027-01-31", "expires: 2027-02-28"),
        "migration.yaml" => replace(
            text,
            "        serve: DUAL_WRITE\n",
            "        serve: SHADOW_READ\n",
        ),
        _ => text,
    });
    let changes = diff(Some(&original()), &edited);
    let expected: Vec<(String, String, String)> =
        vec![
        ("FlagDefaultChanged", "PromotionPolicyActivation", "inactive -> active"),
        ("FlagMetadataChanged", "CheckoutExperienceVariant", "expires"),
        ("FlagMetadataChanged", "FraudEngineRoutingMode", "owner"),
        ("FlagRulesChanged", "TaxCalculationMode", "1 rule(s)"),
        (
            "FlagStateChanged",
            "LegacyOrderWriteMode",
            "rule 1: when market in [\"FR\", \"NL\"] serve SHADOW_READ: DUAL_WRITE -> SHADOW_READ",
        ),
        ("FlagTargetingChanged", "SameDayDispatchEligibility", "+nl-rotterdam -fr-lyon"),
        ("FlagTargetingChanged", "SameDayDispatchEligibility", "+nl-rotterdam -fr-lyon"),
    ]
        .into_iter()
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        .collect();
    assert_eq!(events(&changes), expected);
    // The owner change names both owners; the rule change shows old and new rule text.
    let text: Vec<String> = changes.iter().map(Change::summary).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("owner: risk-team → fraud-team")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("- rule 2: when (market == \"DE\") || (market == \"AT\") serve vertex_v2")
            && t.contains("+ rule 2: when (market == \"DE\") || (market == \"AT\") || (market == \"CH\") serve vertex_v2")),
        "{text:#?}"
    );
    assert!(forbidden_transitions(&changes, &edited).is_empty());
}

#[test]
fn a_retired_and_a_new_flag_are_named() {
    let edited = checkout(|name, text| match name {
        "ops.yaml" => replace(
            text,
            "  - key: FraudEngineRoutingMode",
            "  - key: PaymentsKillSwitch",
        ),
        _ => text,
    });
    assert_eq!(
        events(&diff(Some(&original()), &edited)),
        vec![
            (
                "FlagDefined".into(),
                "PaymentsKillSwitch".into(),
                String::new()
            ),
            (
                "FlagRetired".into(),
                "FraudEngineRoutingMode".into(),
                String::new()
            ),
        ]
    );
    let first = diff(None, &original());
    assert_eq!(first.len(), 9);
    assert!(first.iter().all(|c| c.name() == "FlagDefined"));
}

#[test]
fn a_migration_jumping_legacy_only_to_new_only_is_named_with_its_transition() {
    let jump = checkout(|name, text| match name {
        "migration.yaml" => {
            text.replacen("    default: LEGACY_ONLY\n", "    default: NEW_ONLY\n", 1)
        }
        _ => text,
    });
    let changes = diff(Some(&original()), &jump);
    let forbidden = forbidden_transitions(&changes, &jump);
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    let message = forbidden[0].to_string();
    assert!(
        message.starts_with(
            "FulfillmentRoutingMode: LEGACY_ONLY → NEW_ONLY is not an allowed transition"
        ),
        "{message}"
    );
    assert!(
        message.contains("allowed from LEGACY_ONLY: DUAL_WRITE"),
        "{message}"
    );

    // A step to the neighbour is allowed; a new rule is checked from the old default.
    let step = checkout(|name, text| match name {
        "migration.yaml" => text
            .replacen("    default: LEGACY_ONLY\n", "    default: DUAL_WRITE\n", 1)
            .replacen(
                "    rules:\n",
                "    rules:\n      - when: 'market == \"ES\"'\n        serve: NEW_ONLY\n",
                1,
            ),
        _ => text,
    });
    let forbidden = forbidden_transitions(&diff(Some(&original()), &step), &step);
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    assert_eq!(
        (forbidden[0].from.as_str(), forbidden[0].to.as_str()),
        ("LEGACY_ONLY", "NEW_ONLY")
    );
    assert!(
        forbidden[0]
            .scope
            .starts_with("new rule 1: when market == \"ES\""),
        "{forbidden:?}"
    );

    // Declared transitions replace the neighbour default.
    let declared = checkout(|name, text| {
        match name {
        "migration.yaml" => text.replacen(
            "    default: LEGACY_ONLY\n",
            "    default: NEW_ONLY\n    transitions: { LEGACY_ONLY: [DUAL_WRITE, NEW_ONLY], DUAL_WRITE: [LEGACY_ONLY] }\n",
            1,
        ),
        _ => text,
    }
    });
    let changes = diff(Some(&original()), &declared);
    assert!(forbidden_transitions(&changes, &declared).is_empty());
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::FlagMetadataChanged { field, .. } if field == "transitions")));
}

#[test]
fn a_new_bucketing_algorithm_and_new_metadata_are_changes() {
    // A new bucketing re-buckets every user of the rollout, so it must show in the diff.
    let edited = checkout(|name, text| {
        match name {
        "migration.yaml" => replace(
            replace(
                text,
                "        rollout: { SHADOW_READ: 50, DUAL_WRITE: 50 }\n        by: customer_id\n",
                "        rollout: { SHADOW_READ: 50, DUAL_WRITE: 50 }\n        by: customer_id\n        bucketing: unleash\n",
            ),
            "    on_error: LEGACY_ONLY\n",
            "    on_error: LEGACY_ONLY\n    metadata: { ticket: FUL-7 }\n",
        ),
        _ => text,
    }
    });
    let changes = diff(Some(&original()), &edited);
    let text: Vec<String> = changes.iter().map(Change::summary).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("by customer_id bucketing unleash")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("metadata") && t.contains("ticket: \"FUL-7\"")),
        "{text:#?}"
    );
}
