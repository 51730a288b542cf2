//! A run executes its tasks in the order the user wrote them: the file's
//! for `--all`, the schedule's list, the command line's.

use crate::common;

use common::TestDb;

const CONFIG: &str = "[tasks.zz_old_events]\nkind = \"purge\"\ntable = \"events\"\nwhere = \"at < now() - interval '30 days'\"\n\n\
[tasks.aa_tidy]\nkind = \"vacuum\"\nauto = true\n\n\
[tasks.mm_count]\nkind = \"sql\"\nsql = \"SELECT 1\"\n\n\
[schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"mm_count\", \"zz_old_events\", \"aa_tidy\"]\n";

fn names(report: &serde_json::Value) -> Vec<String> {
    report["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("tasks: {report}"))
        .iter()
        .map(|t| {
            t["task"]
                .as_str()
                .or(t["name"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn tasks_run_in_the_order_they_are_written() {
    let db = TestDb::with_sql(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL) WITH (autovacuum_enabled = false);
         INSERT INTO events SELECT g, now() - (g % 100) * interval '1 day' FROM generate_series(1, 20000) g;",
    )
    .await;
    db.client()
        .await
        .batch_execute("VACUUM ANALYZE events")
        .await
        .unwrap();
    db.config(CONFIG);
    db.pgmaint(&["init"]).await.assert_code(0);
    let written = ["zz_old_events", "aa_tidy", "mm_count"];

    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(names(&plan.json()), written);
    let listed = db.pgmaint(&["tasks", "--json"]).await;
    listed.assert_code(0);
    assert_eq!(names(&listed.json()), written, "{}", listed.stdout);

    // The vacuum, written after the purge, runs after it and so finds the
    // rows the purge left dead.
    let run = db.pgmaint(&["run", "--all", "--json"]).await;
    run.assert_code(0);
    let run = run.json();
    assert_eq!(names(&run), written);
    let vacuumed = run["tasks"][1]["details"]["tables"].to_string();
    assert!(vacuumed.contains("public.events"), "{vacuumed}");

    let run = db
        .pgmaint(&["run", "--schedule", "nightly", "--json"])
        .await;
    run.assert_code(0);
    assert_eq!(names(&run.json()), ["mm_count", "zz_old_events", "aa_tidy"]);
    let run = db.pgmaint(&["run", "mm_count", "aa_tidy", "--json"]).await;
    run.assert_code(0);
    assert_eq!(names(&run.json()), ["mm_count", "aa_tidy"]);
}
