//! The whole API fuzzed from its own `/openapi.json` by schemathesis (PyPI),
//! an independent judge, with all its checks: with a valid key, no request
//! may get a 5xx; every answer must match the document (status codes, content
//! types, headers, bodies); requests the document allows are accepted and
//! those it does not are refused; deleted things are gone. `.ci/run` installs
//! schemathesis; so can `pip install schemathesis`.

mod support;

use std::process::Command;
use support::{Bida, ADMIN_KEY};

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
    // Which 422s no schema can foresee (a referenced broker that must exist,
    // the SSRF guard), and why: in the config file.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let output = Command::new("st")
        .current_dir(&scratch)
        .args(["--config-file", config])
        .args(["run", &format!("{}/openapi.json", bida.url)])
        // The examples phase trips an internal error of schemathesis 4.32 on
        // one schema (a recursion in its code generator), not an answer of Bida's.
        .args(["--phases", "coverage,fuzzing,stateful", "--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args([
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            // One worker: with two, hypothesis 6 sometimes fails inside
            // Python's parser while describing its own strategies.
            "--workers",
            "1",
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
