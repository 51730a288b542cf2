//! sslmode against a real TLS server: a throwaway cluster with `ssl = on`
//! and a certificate signed by a CA generated here with openssl. The server
//! certificate names only `localhost`, so connecting to 127.0.0.1 tells
//! verify-full (checks the name) apart from verify-ca (checks the chain).

use crate::common;

use std::path::Path;
use std::process::Command;

use pgmaint::cluster::Cluster;
use pgmaint::connect::{self, ConnectError};

fn openssl(dir: &Path, args: &[&str]) {
    common::require_tool(
        "openssl",
        "the TLS tests make their certificates with it",
        "openssl",
        "openssl@3",
    );
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a second unrelated CA, and a server certificate for `localhost`
/// signed by the first.
fn make_certificates(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=pgmaint test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName = DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// Copies the server's key pair into the cluster directory, owned by the
/// server's user with the permissions PostgreSQL insists on, and turns TLS on.
async fn enable_tls(cluster: &Cluster, certs: &Path) {
    for file in ["server.crt", "server.key"] {
        let target = cluster.dir.join(file);
        std::fs::copy(certs.join(file), &target).unwrap();
        let owner = std::fs::metadata(&cluster.dir).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::os::unix::fs::chown(&target, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let admin = common::connect(&cluster.url("postgres")).await;
    let dir = cluster.dir.display();
    for statement in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{dir}/server.crt'"),
        format!("ALTER SYSTEM SET ssl_key_file = '{dir}/server.key'"),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.simple_query(&statement).await.unwrap();
    }
    // The reload is asynchronous: wait until new connections see it.
    for _ in 0..100 {
        let fresh = common::connect(&cluster.url("postgres")).await;
        let on: String = fresh.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        if on == "on" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server did not turn ssl on");
}

/// Connects through pgmaint's own connection code and says whether the
/// session is encrypted, as the server sees it.
async fn encrypted(url: &str) -> Result<bool, ConnectError> {
    let target = connect::resolve_with(Some(url), None, &|_| None)?;
    let client = connect::connect(&target).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_against_a_real_tls_server() {
    // A cluster of its own: TLS is a server-wide setting.
    let cluster = common::own_cluster();
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    enable_tls(&cluster, certs.path()).await;

    let port = cluster.port;
    let ca = certs.path().join("ca.crt");
    let other_ca = certs.path().join("other-ca.crt");
    let url = |host: &str, mode: &str, root: Option<&Path>| {
        let root = root
            .map(|r| format!("&sslrootcert={}", r.display()))
            .unwrap_or_default();
        format!("postgres://postgres@{host}:{port}/postgres?sslmode={mode}{root}")
    };

    assert!(!encrypted(&url("127.0.0.1", "disable", None)).await.unwrap());
    assert!(encrypted(&url("127.0.0.1", "prefer", None)).await.unwrap());
    assert!(encrypted(&url("127.0.0.1", "require", None)).await.unwrap());
    assert!(
        encrypted(&url("127.0.0.1", "verify-ca", Some(&ca)))
            .await
            .unwrap(),
        "verify-ca checks the chain, not the host name"
    );
    assert!(
        encrypted(&url("localhost", "verify-full", Some(&ca)))
            .await
            .unwrap()
    );

    let wrong_name = encrypted(&url("127.0.0.1", "verify-full", Some(&ca)))
        .await
        .expect_err("verify-full must refuse a certificate for another name");
    assert!(
        wrong_name.to_string().contains("127.0.0.1")
            && wrong_name.to_string().contains("not valid for"),
        "{wrong_name}"
    );
    for mode in ["verify-ca", "verify-full"] {
        let untrusted = encrypted(&url("localhost", mode, Some(&other_ca)))
            .await
            .expect_err("a certificate from an untrusted CA must be refused");
        assert!(
            untrusted.to_string().contains("UnknownIssuer"),
            "{mode}: {untrusted}"
        );
    }
    let missing_root = encrypted(&url("localhost", "verify-full", None))
        .await
        .expect_err("verify-full needs a root certificate");
    assert!(
        missing_root.to_string().contains("sslrootcert"),
        "{missing_root}"
    );

    // The binary says the same in one line, and exits 2 (nothing was changed).
    let db = common::TestDb::new().await;
    db.config("");
    let output = db
        .command(&["check"])
        .arg("--database-url")
        .arg(url("127.0.0.1", "verify-full", Some(&ca)))
        .output()
        .await
        .unwrap();
    let run: common::Run = output.into();
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("127.0.0.1"), "{}", run.stderr);

    cluster.stop();
}
