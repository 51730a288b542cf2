//! Connecting: precedence, secrets kept out of output, logs and state, and
//! one clear line when the database cannot be reached.

use crate::common;

use common::TestDb;

const PASSWORD: &str = "s3cret-Pa55word";

#[tokio::test]
async fn a_password_never_appears_in_output_logs_or_the_state_schema() {
    let db = TestDb::with_sql("CREATE TABLE t (id int, old bool); INSERT INTO t SELECT i, i % 2 = 0 FROM generate_series(1, 100) i;").await;
    db.config("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"old\"\n");
    // Trust auth ignores the password, so it only travels through pgmaint.
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{}?sslmode=disable",
        common::cluster().port,
        db.name
    );
    let mut seen = String::new();
    for args in [
        &["init"][..],
        &["check"],
        &["plan", "-vv"],
        &["run", "a", "-vv", "--json"],
        &["history", "--json"],
        &["tasks"],
    ] {
        let output = db
            .command(args)
            .arg("--database-url")
            .arg(&url)
            .output()
            .await
            .unwrap();
        let run: common::Run = output.into();
        run.assert_code(0);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    }
    assert!(
        !seen.contains(PASSWORD),
        "the password was printed:\n{seen}"
    );
    let stored: String = db
        .client()
        .await
        .query_one(
            "SELECT string_agg(x, ' ') FROM (SELECT row_to_json(r)::text AS x FROM pgmaint.runs r
                UNION ALL SELECT row_to_json(t)::text FROM pgmaint.task_runs t) s",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.contains(PASSWORD),
        "the password was stored: {stored}"
    );
    assert_eq!(db.count("SELECT count(*) FROM t").await, 50);
}

#[tokio::test]
async fn an_unreachable_database_is_one_line_naming_where_and_why() {
    let db = TestDb::new().await;
    db.config("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"true\"\n");
    // Bound and never listened on, for the whole test: refused, and no
    // other process (another test's server) can take it meanwhile.
    let closed = common::ClosedPort::new();
    let port = closed.port;
    let url = format!(
        "postgres://appuser:{PASSWORD}@127.0.0.1:{port}/appdb?sslmode=disable&connect_timeout=2"
    );
    let output = db
        .command(&["run", "a"])
        .arg("--database-url")
        .arg(&url)
        .output()
        .await
        .unwrap();
    let run: common::Run = output.into();
    run.assert_code(1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    for part in [
        "could not connect to PostgreSQL",
        "host 127.0.0.1",
        &format!("port {port}"),
        "database appdb",
        "user appuser",
        "refused",
    ] {
        assert!(
            lines[0].contains(part),
            "missing {part:?} in {:?}",
            lines[0]
        );
    }
    assert!(!run.stderr.contains(PASSWORD));
}

#[tokio::test]
async fn the_flag_beats_database_url_which_beats_the_config() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE marker (id int)")
        .await
        .unwrap();
    let cluster = common::cluster();
    db.config("[database]\nurl = \"postgres://postgres@127.0.0.1:1/nowhere\"\n[tasks.a]\nkind = \"purge\"\ntable = \"marker\"\nwhere = \"true\"\n");
    let bin = env!("CARGO_BIN_EXE_pgmaint");
    let config = db.dir.path().join("pgmaint.toml");
    // DATABASE_URL beats the config's url.
    let output = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    common::Run::from(output).assert_code(0);
    // The flag beats DATABASE_URL.
    let output = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("--database-url")
        .arg(&db.url)
        .arg("check")
        .env("DATABASE_URL", cluster.url("no_such_database"))
        .output()
        .await
        .unwrap();
    common::Run::from(output).assert_code(0);
    // libpq's variables fill in what no URL gives.
    db.config("[tasks.a]\nkind = \"purge\"\ntable = \"marker\"\nwhere = \"true\"\n");
    let output = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env_remove("DATABASE_URL")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", cluster.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name)
        .env("PGSSLMODE", "disable")
        .output()
        .await
        .unwrap();
    common::Run::from(output).assert_code(0);
}
