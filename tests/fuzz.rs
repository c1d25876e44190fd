//! The whole API fuzzed from its own `/openapi.json` by schemathesis (PyPI),
//! an independent judge: with a valid key, no request may get a 5xx, and every
//! answer must match the document (status codes, content types, headers,
//! bodies). `.ci/run` installs schemathesis; so can `pip install schemathesis`.

mod support;

use std::process::Command;
use support::{Bida, ADMIN_KEY};

/// The checks that must pass. Schemathesis' `positive_data_acceptance` and
/// `negative_data_rejection` still find limits the schemas do not state
/// (see the README's security section); they are not part of this gate yet.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

#[tokio::test]
async fn the_api_matches_its_document_under_fuzzing() {
    let bida = Bida::start("").await;
    let examples = std::env::var("BIDA_TEST_FUZZ_EXAMPLES").unwrap_or_else(|_| "30".into());
    // One seed by default, so that a run is repeatable; set another (or
    // more examples) to explore further.
    let seed = std::env::var("BIDA_TEST_FUZZ_SEED").unwrap_or_else(|_| "20261203".into());
    // schemathesis keeps a cache where it runs: not in the checkout.
    let scratch = std::env::temp_dir().join(format!("bida-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let output = Command::new("st")
        .current_dir(&scratch)
        .args(["run", &format!("{}/openapi.json", bida.url)])
        // The examples phase trips an internal error of schemathesis 4.32 on
        // one schema (a recursion in its code generator), not an answer of Bida's.
        .args(["--phases", "coverage,fuzzing,stateful", "--checks", CHECKS])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args([
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--workers",
            "2",
            "--no-color",
        ])
        .args(["--request-timeout", "30"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run schemathesis' `st` ({e}): pip install schemathesis"));
    let report = String::from_utf8_lossy(&output.stdout);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed"), "{report}");
}
