//! The shared corpus and every example ruleset run natively and in wasmtime with zero
//! disagreements and zero failed expectations.

use flagforge_cli::conformance::run_dir;

#[test]
fn the_correctness_corpus_agrees_on_every_engine() {
    let report = run_dir(&rules_examples::corpus()).unwrap();
    report.print();
    assert_eq!(report.disagreements, 0);
    assert_eq!(report.failed, 0, "{:#?}", report.failures);
    assert!(report.passed >= 75, "corpus shrank: {}", report.passed);
    assert!(
        report.untested_flags.is_empty(),
        "{:?}",
        report.untested_flags
    );
}

#[test]
fn every_example_ruleset_passes_and_tests_every_flag() {
    for name in rules_examples::RULESETS {
        let report = run_dir(&rules_examples::dir(name)).unwrap();
        report.print();
        assert_eq!(report.disagreements, 0, "{name}");
        assert_eq!(report.failed, 0, "{name}: {:#?}", report.failures);
        assert!(
            report.untested_flags.is_empty(),
            "{name}: untested {:?}",
            report.untested_flags
        );
    }
}

#[test]
fn a_wrong_expectation_is_reported_as_a_failure() {
    // Guards against a runner that cannot fail: copy the corpus and break one expectation.
    let dir = tempfile::tempdir().unwrap();
    let src = rules_examples::corpus();
    for f in ["ruleset.yaml", "big.yaml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/wrong.yaml"),
        "cases:\n  - { name: wrong on purpose, flag: StaticFlag, context: {}, expect: { variant: off } }\n",
    )
    .unwrap();
    let report = run_dir(dir.path()).unwrap();
    assert_eq!((report.passed, report.failed), (0, 1));
    assert!(
        report.failures[0]
            .detail
            .contains("variant: expected `off`"),
        "{:?}",
        report.failures
    );
}
