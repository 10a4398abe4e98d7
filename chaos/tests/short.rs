//! The short fault-injection run of the test suite: every fault kind once, under a
//! fixed seed, against three real brokers behind link proxies; every check must hold.
//! The long soak is `strait-chaos --duration SECS --seed N` (TESTING.md).

use strait_chaos::{RunConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_once_and_no_check_fails() -> anyhow::Result<()> {
    let report = run(RunConfig {
        seed: 7,
        ..RunConfig::default()
    })
    .await?;
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.faults.len() + report.skipped.len(),
        strait_chaos::FaultKind::ALL.len()
    );
    assert!(report.outcomes.get("acked").copied().unwrap_or(0) > 1000);
    Ok(())
}
