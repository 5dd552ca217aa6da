//! Test reports too big for one statement: a completion with thousands of cases (which SQLite stores off the
//! async threads, in statements of 1,000, 100, 10 and 1 rows) keeps every case, in order, once.

use super::{Db, case, one_running_job, report};
use gantry_model::junit::TestStatus;

pub(super) async fn a_report_of_thousands_of_test_cases_is_stored_whole_and_once(db: Db) {
    let (job, lease) = one_running_job(&db, "big-report").await;
    let mut done = report(1);
    // 1,234 cases: one statement of each size at least, and a remainder of each.
    done.tests = (0..1234)
        .map(|i| {
            let status = if i % 100 == 7 {
                TestStatus::Failed
            } else {
                TestStatus::Passed
            };
            case("suite", &format!("case-{i:04}"), status)
        })
        .collect();
    db.complete_job(job, lease, &done).await.unwrap();
    // The worker retrying a completion whose answer it lost stores nothing twice.
    db.complete_job(job, lease, &done).await.unwrap();
    let pipeline = db.get_job(job).await.unwrap().unwrap().pipeline_id;
    let tests = db.pipeline_tests(pipeline).await.unwrap().unwrap();
    assert_eq!((tests.total, tests.passed, tests.failed), (1234, 1221, 13));
    let failed: Vec<_> = tests.failures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(failed.first(), Some(&"case-0007"), "in the report's order");
    assert_eq!(failed.get(1), Some(&"case-0107"));
}
