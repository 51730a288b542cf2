//! `pgmaint demo` on a machine without the PostgreSQL server binaries: it
//! starts nothing, exits 2 and says the one command that installs them.
//! (The demo itself, on a real cluster, is the README's first command.)

use std::process::Command;

use pgmaint::cluster::install_hint;

#[test]
fn without_server_binaries_the_demo_exits_2_saying_how_to_install_them() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pgmaint"))
        .arg("demo")
        .env("PGMAINT_PG_BIN", empty.path())
        // Nothing that holds initdb: only the directory we just made.
        .env("PATH", empty.path())
        .output()
        .expect("run pgmaint demo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "PGMAINT_PG_BIN is {}, which holds no initdb",
            empty.path().display()
        )),
        "{stderr}"
    );
    let hint = install_hint("postgresql", "postgresql@15");
    assert!(stderr.contains(&hint), "no {hint} in:\n{stderr}");
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "the demo wrote into PGMAINT_PG_BIN"
    );
}
